"""The outbox through the API and the CLI: a mail is a row written with its change, delivered
by the runner in the app or by ``litestar jobs worker`` (a real process, stopped by SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result
from litestar import Litestar
from litestar.cli._utils import LitestarEnv
from litestar.cli.main import litestar_group
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.config import Settings
from app.db import make_db_config
from app.jobs.models import DEAD
from app.jobs.outbox import add_mail
from app.main import create_app
from app.security.tokens import sign_claims
from app.users.models import User
from app.users.service import UserService
from tests.conftest import PASSWORD, SECRET, SmtpServer
from tests.outbox import outbox_rows, wait_for_rows

ROOT = Path(__file__).parents[2]


def _account(tag: str) -> dict[str, str]:
    return {"username": tag, "email": f"{tag}@example.com", "password": PASSWORD}


async def _count_users(settings: Settings) -> int:
    config = make_db_config(settings)
    try:
        async with config.get_session() as session:
            return int(await session.scalar(select(func.count()).select_from(User)) or 0)
    finally:
        await config.get_engine().dispose()


# --------------------------------------------------------------------------- atomic with the change


async def test_registration_writes_its_mail_and_the_runner_delivers_it_once(
    make_client: Callable[..., AsyncTestClient[Litestar]], smtp_server: SmtpServer, settings: Settings
) -> None:
    async with make_client(**smtp_server.settings) as client:
        started = time.monotonic()
        response = await client.post("/api/auth/register", json=_account("ada"))
        assert response.status_code == 201, response.text
        (mail,) = await smtp_server.sink.wait_for(1)
        waited = time.monotonic() - started
        (row,) = await wait_for_rows(settings, lambda rows: [r.status for r in rows] == ["sent"])
        await asyncio.sleep(0.5)

    assert waited < 3.0  # woken by the commit, not by a poll
    assert len(smtp_server.messages) == 1
    assert (row.kind, row.recipient, row.attempts) == ("confirm_email", "ada@example.com", 1)
    assert mail["To"] == "ada@example.com"
    assert mail["Message-ID"] == f"<{row.id}@contacts.local>"
    # The row keeps the link's unsigned claims, never a usable token; the mail has the token.
    assert "token" not in row.params
    token = sign_claims(SECRET, row.params["claims"])
    assert f"/api/auth/confirmed_email/{token}" in smtp_server.sink.text(mail)
    assert token.rsplit(".", 1)[1] not in str(row.params)


async def test_a_failing_change_writes_no_mail(
    make_client: Callable[..., AsyncTestClient[Litestar]],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with make_client(jobs_in_process=False) as client:
        assert (await client.post("/api/auth/register", json=_account("ada"))).status_code == 201
        taken = await client.post("/api/auth/register", json={**_account("bob"), "email": "ada@example.com"})
        assert taken.status_code == 409

        # The change fails after the mail was added to its transaction: both are rolled back.
        async def failing_save(self: UserService, *_ids: object) -> None:
            await self.repository.session.flush()
            msg = "the commit failed"
            raise RuntimeError(msg)

        monkeypatch.setattr(UserService, "save", failing_save)
        failed = await client.post("/api/auth/register", json=_account("carol"))
        assert failed.status_code == 500

    rows = await outbox_rows(settings)
    assert [(r.kind, r.recipient) for r in rows] == [("confirm_email", "ada@example.com")]
    assert await _count_users(settings) == 1


async def test_api_replicas_with_jobs_in_process_false_deliver_nothing(
    make_client: Callable[..., AsyncTestClient[Litestar]], smtp_server: SmtpServer, settings: Settings
) -> None:
    async with make_client(**{**smtp_server.settings, "jobs_in_process": False}) as client:
        assert (await client.post("/api/auth/register", json=_account("ada"))).status_code == 201
        reset = await client.post("/api/auth/update_password", json={"email": "ada@example.com"})
        assert reset.status_code == 202
        unknown = await client.post("/api/auth/update_password", json={"email": "nobody@example.com"})
        assert unknown.status_code == 202
        rows = await wait_for_rows(settings, lambda rows: len(rows) == 3)
        await asyncio.sleep(1.5)

    # The reset requests are rows too, written before the answer (the same one for an unknown
    # address): they wait for a job runner, whatever happens to this process.
    assert sorted((r.kind, r.recipient, r.status) for r in rows) == [
        ("account_request", "ada@example.com", "pending"),
        ("account_request", "nobody@example.com", "pending"),
        ("confirm_email", "ada@example.com", "pending"),
    ]
    assert smtp_server.messages == []

    # A runner that comes later resolves them: a reset mail for the account, nothing for the rest.
    async with make_client(**smtp_server.settings):
        delivered = await smtp_server.sink.wait_for(2)
        rows = await wait_for_rows(settings, lambda rows: all(r.status == "sent" for r in rows))
    assert [m["To"] for m in delivered] == ["ada@example.com", "ada@example.com"]
    assert sorted((r.kind, r.recipient) for r in rows) == [
        # Done requests keep no address (nor parameters): only the mails they made name one.
        ("account_request", ""),
        ("account_request", ""),
        ("confirm_email", "ada@example.com"),
        ("reset_password", "ada@example.com"),
    ]
    assert [r.params for r in rows if r.kind == "account_request"] == [{}, {}]
    await asyncio.sleep(0.5)
    assert len(smtp_server.messages) == 2


# --------------------------------------------------------------------------- CLI


def _cli(settings: Settings, *args: str) -> Result:
    app = create_app(settings)
    obj = LitestarEnv(app_path="app.main:app", app=app, cwd=Path.cwd())
    return CliRunner().invoke(litestar_group, ["jobs", *args], obj=obj)


async def _queue_dead_and_pending(settings: Settings) -> None:
    config = make_db_config(settings)
    try:
        async with config.get_session() as session:
            add_mail(session, "password_changed", "a@example.com", username="a").status = DEAD
            add_mail(session, "password_changed", "b@example.com", username="b")
            add_mail(session, "password_changed", "c@example.com", username="c")
            await session.commit()
    finally:
        await config.get_engine().dispose()


def test_jobs_status_and_retry_dead(settings: Settings) -> None:
    assert "pending: 0" in _cli(settings, "status").output
    asyncio.run(_queue_dead_and_pending(settings))

    status = _cli(settings, "status")
    assert status.exit_code == 0, status.output
    lines = status.output.splitlines()
    assert "pending: 2" in lines
    assert "dead: 1" in lines
    assert any(line.startswith("oldest pending: ") and line.endswith("s") for line in lines)

    retried = _cli(settings, "retry-dead")
    assert retried.exit_code == 0, retried.output
    assert "1 dead mail(s) pending again" in retried.output
    assert "dead: 0" in _cli(settings, "status").output.splitlines()
    assert "pending: 3" in _cli(settings, "status").output.splitlines()


# --------------------------------------------------------------------------- the worker process


class SlowSink:
    """An SMTP server that takes ``delay`` seconds to accept each mail, and says when one arrives."""

    def __init__(self, delay: float) -> None:
        from aiosmtpd.controller import Controller

        self.delay = delay
        self.receiving = threading.Event()
        self.messages: list[Any] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.receiving.set()
        await asyncio.sleep(self.delay)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted"


@pytest.fixture
def slow_sink() -> Iterator[Callable[[float], SlowSink]]:
    started: list[SlowSink] = []

    def start(delay: float) -> SlowSink:
        sink = SlowSink(delay)
        sink.controller.start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.controller.stop()


def _worker_env(settings: Settings, port: int, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "COV_", "COVERAGE"))}
    env.update(
        {
            "DATABASE_URL": settings.database_url,
            "SECRET_KEY": SECRET,
            "SECRET_KEY_FILE": str(tmp_path / ".secret_key"),
            "MEDIA_DIR": str(tmp_path / "media"),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port),
            "SMTP_TLS": "none",
            "AUTO_MIGRATE": "false",
            **extra,
        }
    )
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    else:
        env.pop("REDIS_URL", None)
    return env


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "litestar", "--app", "app.main:app", "jobs", "worker"]
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603


def _stop(process: subprocess.Popen[bytes]) -> float:
    """SIGTERM the process; the seconds it took to exit."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    return time.monotonic() - started


def test_sigterm_lets_the_delivery_in_flight_finish(
    settings: Settings, slow_sink: Callable[[float], SlowSink], tmp_path: Path
) -> None:
    sink = slow_sink(2.0)
    asyncio.run(_queue_one(settings))
    log = tmp_path / "worker.log"
    process = _start_worker(_worker_env(settings, sink.port, tmp_path), log)
    try:
        assert sink.receiving.wait(timeout=60), log.read_text()
    finally:
        took = _stop(process)

    assert process.returncode == 0, log.read_text()
    assert took < 10, log.read_text()
    assert len(sink.messages) == 1  # the mail being sent when SIGTERM came went out
    rows = asyncio.run(outbox_rows(settings))
    assert [r.status for r in rows] == ["sent"], log.read_text()  # and is recorded: not sent twice


def test_sigterm_cuts_off_a_stuck_delivery_and_leaves_it_pending(
    settings: Settings, slow_sink: Callable[[float], SlowSink], tmp_path: Path
) -> None:
    sink = slow_sink(30.0)
    asyncio.run(_queue_one(settings))
    log = tmp_path / "worker.log"
    process = _start_worker(_worker_env(settings, sink.port, tmp_path, JOBS_SHUTDOWN_SECONDS="1"), log)
    try:
        assert sink.receiving.wait(timeout=60), log.read_text()
    finally:
        took = _stop(process)

    assert process.returncode == 0, log.read_text()
    assert took < 6, log.read_text()  # bounded by JOBS_SHUTDOWN_SECONDS, not by the SMTP server
    assert "cut off" in log.read_text()
    rows = asyncio.run(outbox_rows(settings))
    assert [r.status for r in rows] == ["pending"]  # the next runner sends it


async def _queue_one(settings: Settings) -> None:
    config = make_db_config(msgspec.structs.replace(settings))
    try:
        async with config.get_session() as session:
            add_mail(session, "password_changed", "ada@example.com", username="ada")
            await session.commit()
    finally:
        await config.get_engine().dispose()
