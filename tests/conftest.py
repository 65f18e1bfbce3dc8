"""Fixtures shared by the whole suite.

The same tests run on the embedded defaults (a SQLite file per test, in-memory store) and,
when ``TEST_DATABASE_URL`` / ``TEST_REDIS_URL`` are set, on PostgreSQL + Redis: a fresh
database is created for the run, migrated once, and truncated before every test; the Redis
database named in the URL is flushed before every test.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings, load_settings
from app.db import make_db_config, upgrade_database
from app.main import create_app
from app.security.passwords import hash_password_sync
from app.security.tokens import Purpose, create_token, token_hash
from app.users.models import User, UserSession

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
SECRET = "test-secret-key-" + "x" * 40
PASSWORD = "correct horse battery staple"
#: One bcrypt hash made at import (cost 4) so factories don't hash per user.
PASSWORD_HASH = hash_password_sync(PASSWORD, 4)

ON_POSTGRES = bool(TEST_DATABASE_URL)


def pytest_report_header() -> list[str]:
    return [
        f"backend: database={'postgresql' if ON_POSTGRES else 'sqlite'} store={'redis' if TEST_REDIS_URL else 'memory'}"
    ]


@pytest.fixture(autouse=True)
def _forget_database_config_keys() -> None:
    """Start each test with advanced-alchemy's registry of config keys empty.

    Every ``DatabaseConfig`` adds its keys to a process-wide set and picks the next free
    ``key_<n>`` by recursion, one level per config made before: past ~1,000 apps in one
    pytest process that is a ``RecursionError``. A server makes one config, so only tests
    need this; apps never share a request scope, so a repeated key is harmless.
    """
    from advanced_alchemy.config.common import GenericSQLAlchemyConfig

    for name in (
        "_SESSION_SCOPE_KEY_REGISTRY",
        "_ENGINE_APP_STATE_KEY_REGISTRY",
        "_SESSIONMAKER_APP_STATE_KEY_REGISTRY",
    ):
        getattr(GenericSQLAlchemyConfig, name).clear()


# --------------------------------------------------------------------------- database


@pytest.fixture(scope="session")
def database_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database for the run: a template SQLite file, or a fresh PostgreSQL database."""
    if not TEST_DATABASE_URL:
        path = tmp_path_factory.mktemp("db") / "template.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade_database(make_db_config(_base_settings(database_url=url)))
        yield url
        return
    base = make_url(TEST_DATABASE_URL)
    name = f"contacts_test_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin_sql(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    upgrade_database(make_db_config(_base_settings(database_url=url)))
    yield url
    asyncio.run(_admin_sql(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin_sql(url: str, sql: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


@pytest.fixture
async def database_url(database_template: str, tmp_path: Path) -> str:
    """A clean, migrated database for one test."""
    if database_template.startswith("sqlite"):
        path = tmp_path / "test.db"
        shutil.copyfile(database_template.removeprefix("sqlite+aiosqlite:///"), path)
        return f"sqlite+aiosqlite:///{path}"
    engine = create_async_engine(database_template)
    async with engine.begin() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public' AND tablename <> 'alembic_version'"
                )
            )
        ).scalars()
        names = ", ".join(f'"{t}"' for t in tables)
        if names:
            await conn.execute(text(f"TRUNCATE {names} CASCADE"))
    await engine.dispose()
    return database_template


@pytest.fixture
async def redis_url() -> str | None:
    """The test Redis (flushed), or ``None`` for the in-memory store."""
    if not TEST_REDIS_URL:
        return None
    from redis.asyncio import Redis

    client = Redis.from_url(TEST_REDIS_URL)
    await client.flushdb()
    await client.aclose()
    return TEST_REDIS_URL


# --------------------------------------------------------------------------- settings and app


def with_runner(overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with the job runner on when they name an SMTP server (unless they say otherwise)."""
    return {"jobs_in_process": "smtp_host" in overrides, **overrides}


def _base_settings(**overrides: Any) -> Settings:
    env = {
        "APP_ENV": "test",
        "SECRET_KEY": SECRET,
        "BCRYPT_ROUNDS": "4",
        "AUTO_MIGRATE": "false",
        "RATE_LIMIT_ENABLED": "false",
        "PUBLIC_BASE_URL": "http://testserver.local",
        # Apps of a test share its database: only those given an SMTP server run a job runner
        # (see with_runner), else a helper app would "send" the test's mails to its log.
        "JOBS_IN_PROCESS": "false",
    }
    settings = load_settings(env, env_file=None)
    return msgspec.structs.replace(settings, **overrides)


@pytest.fixture
def settings(database_url: str, redis_url: str | None, tmp_path: Path) -> Settings:
    """Settings of the backend under test, with a per-test media directory."""
    return _base_settings(database_url=database_url, redis_url=redis_url, media_dir=str(tmp_path / "media"))


@pytest.fixture
def make_client(settings: Settings) -> Callable[..., Any]:
    """Factory: ``async with make_client(**setting_overrides) as client`` runs an app with its lifespan."""

    def factory(**overrides: Any) -> AsyncTestClient[Litestar]:
        app = create_app(msgspec.structs.replace(settings, **with_runner(overrides)))
        return AsyncTestClient(app, raise_server_exceptions=False, base_url="http://testserver.local")

    return factory


@pytest.fixture
async def client(
    make_client: Callable[..., AsyncTestClient[Litestar]],
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A client of an app on the backend under test (lifespan run)."""
    async with make_client() as c:
        yield c


@pytest.fixture
def app(client: AsyncTestClient[Litestar]) -> Litestar:
    """The app behind :func:`client`."""
    return client.app


# --------------------------------------------------------------------------- users


@dataclass
class TestUser:
    """A user made by :func:`user_factory`, with a ready Authorization header."""

    __test__ = False  # not a test class, whatever its name

    id: uuid.UUID
    email: str
    username: str
    password: str
    role: str
    session_id: uuid.UUID
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def in_app_loop(client: AsyncTestClient[Litestar]) -> Callable[..., Awaitable[Any]]:
    """``await in_app_loop(fn, *args)`` runs the coroutine function ``fn`` on the app's event loop.

    The test client serves the app from a portal thread with its own loop, and the app's
    pooled connections (asyncpg, Redis) only work on the loop that opened them: a test that
    reads or writes through ``app.state.db_config`` or ``app.stores`` goes through this.
    """

    async def run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await asyncio.to_thread(client.blocking_portal.call, fn, *args)

    return run


@pytest.fixture
def user_factory(
    app: Litestar, in_app_loop: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[TestUser]]:
    """Factory: insert a confirmed user with one live session and return it with a bearer header."""
    counter = 0

    async def factory(
        *, email: str | None = None, username: str | None = None, role: str = "user", confirmed: bool = True
    ) -> TestUser:
        nonlocal counter
        counter += 1
        suffix = uuid.uuid4().hex[:6]
        email = email or f"user{counter}-{suffix}@example.com"
        username = username or f"user{counter}_{suffix}"
        user, user_session = await in_app_loop(_insert_user, app, username, email, role, confirmed)
        token, _ = create_token(
            SECRET, Purpose.ACCESS, str(user.id), timedelta(minutes=15), sid=str(user_session.id)
        )
        return TestUser(
            id=user.id,
            email=email.lower(),
            username=username,
            password=PASSWORD,
            role=role,
            session_id=user_session.id,
            headers={"Authorization": f"Bearer {token}"},
        )

    return factory


async def _insert_user(
    app: Litestar, username: str, email: str, role: str, confirmed: bool
) -> tuple[User, UserSession]:
    async with app.state.db_config.get_session() as session:
        user = User(
            username=username,
            email=email.lower(),
            password_hash=PASSWORD_HASH,
            role=role,
            confirmed=confirmed,
            avatar_url="https://www.gravatar.com/avatar/x",
        )
        session.add(user)
        await session.flush()
        user_session = UserSession(
            user_id=user.id,
            refresh_token_hash=token_hash(uuid.uuid4().hex),
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
        session.add(user_session)
        await session.commit()
    return user, user_session


@pytest.fixture
async def user(user_factory: Callable[..., Awaitable[TestUser]]) -> TestUser:
    """A confirmed ``user``."""
    return await user_factory()


@pytest.fixture
async def admin(user_factory: Callable[..., Awaitable[TestUser]]) -> TestUser:
    """A confirmed ``admin``."""
    return await user_factory(role="admin")


# --------------------------------------------------------------------------- query counting


class QueryCounter:
    """Counts the SQL statements the app runs while active."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def log(self, record: Any) -> None:
        """asyncpg's query logger: one statement of the direct pool ran."""
        self.statements.append(record.query)

    @property
    def count(self) -> int:
        return len(self.statements)

    def reset(self) -> None:
        self.statements.clear()


@pytest.fixture
def queries(app: Litestar) -> Iterator[QueryCounter]:
    """Record every statement the app runs (``queries.count``, ``queries.statements``).

    Statements of the direct pool are counted by asyncpg itself on PostgreSQL; the engine's
    (ORM sessions, and the direct pool's Core path on SQLite) by SQLAlchemy's event.
    """
    counter = QueryCounter()
    engine = app.state.db_config.get_engine().sync_engine

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counter.statements.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    app.state.direct_pool.add_query_logger(counter.log)
    yield counter
    app.state.direct_pool.remove_query_logger(counter.log)
    event.remove(engine, "before_cursor_execute", before)


# --------------------------------------------------------------------------- mail


class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every mail it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        message = BytesParser(policy=email_policy.default).parsebytes(envelope.content)
        self.messages.append(message)  # type: ignore[arg-type]
        return "250 Message accepted"

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[EmailMessage]:
        """Wait until ``count`` mails arrived (the job runner delivers them after the answer).

        The runner wakes on the commit and delivers within a second or so; the generous limit
        only matters on a loaded machine, a passing test returns as soon as the mail is in.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.messages) < count:
            if asyncio.get_running_loop().time() > deadline:
                msg = f"expected {count} mail(s), got {len(self.messages)}"
                raise AssertionError(msg)
            await asyncio.sleep(0.01)
        return self.messages

    def to(self, address: str) -> list[EmailMessage]:
        """The mails sent to ``address``."""
        return [m for m in self.messages if m["To"] == address]

    @staticmethod
    def text(message: EmailMessage) -> str:
        """The plain-text part of ``message``."""
        part = message.get_body(("plain",))
        assert part is not None
        return part.get_content()

    @staticmethod
    def html(message: EmailMessage) -> str:
        """The HTML part of ``message``."""
        part = message.get_body(("html",))
        assert part is not None
        return part.get_content()

    @classmethod
    def links(cls, message: EmailMessage) -> list[str]:
        """Every http(s) link in the plain-text part, in order."""
        return re.findall(r"https?://[^\s<>\"']+", cls.text(message))


@dataclass
class SmtpServer:
    """The running sink: where it listens and what it received."""

    host: str
    port: int
    sink: SmtpSink

    @property
    def messages(self) -> list[EmailMessage]:
        return self.sink.messages

    @property
    def settings(self) -> dict[str, Any]:
        """Setting overrides that send the app's mail here (for ``make_client``)."""
        return {
            "smtp_host": self.host,
            "smtp_port": self.port,
            "smtp_tls": "none",
            "mail_retry_seconds": 0.01,
            "jobs_in_process": True,
        }


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """An aiosmtpd server on a free local port, collecting the mails sent to it."""
    from aiosmtpd.controller import Controller

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(host="127.0.0.1", port=port, sink=sink)
    finally:
        controller.stop()
