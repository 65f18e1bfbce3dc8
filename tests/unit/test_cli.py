"""``litestar users create-admin`` / ``promote`` against the test database (CliRunner).

The tests are synchronous on purpose: each command runs its own event loop (``asyncio.run``),
as it does when a person types it.
"""

import asyncio
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result
from litestar.cli._utils import LitestarEnv
from litestar.cli.main import litestar_group
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app import cache
from app.config import Settings
from app.main import create_app
from app.security.passwords import verify_password_sync
from app.users.cli import UsersCLIPlugin
from app.users.models import User
from tests.conftest import PASSWORD_HASH, TEST_REDIS_URL

NEW_PASSWORD = "a long admin password"


def run(
    settings: Settings, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> Result:
    app = create_app(settings)
    obj = LitestarEnv(app_path="app.main:app", app=app, cwd=Path.cwd())
    return CliRunner().invoke(litestar_group, ["users", *args], obj=obj, input=input, env=env)


async def _query(settings: Settings, email: str) -> User | None:
    engine = create_async_engine(settings.database_url)
    try:
        async with AsyncSession(engine) as session:
            return await session.scalar(select(User).where(User.email == email))
    finally:
        await engine.dispose()


def db_user(settings: Settings, email: str) -> User | None:
    return asyncio.run(_query(settings, email))


async def _insert(settings: Settings, email: str, role: str) -> uuid.UUID:
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            user_id = uuid.uuid4()
            await conn.execute(
                User.__table__.insert().values(
                    id=user_id,
                    username=email.split("@")[0],
                    email=email,
                    password_hash=PASSWORD_HASH,
                    role=role,
                    confirmed=True,
                    avatar_url="https://www.gravatar.com/avatar/x",
                    password_version=0,
                )
            )
            return user_id
    finally:
        await engine.dispose()


def insert_user(settings: Settings, email: str, role: str = "user") -> uuid.UUID:
    return asyncio.run(_insert(settings, email, role))


# --------------------------------------------------------------------------- wiring


def test_the_group_comes_from_the_app_plugin(settings: Settings) -> None:
    app = create_app(settings)
    assert any(isinstance(plugin, UsersCLIPlugin) for plugin in app.plugins.cli)
    result = run(settings, "--help")
    assert result.exit_code == 0, result.output
    assert "create-admin" in result.output
    assert "promote" in result.output


# --------------------------------------------------------------------------- create-admin


def test_create_admin_with_prompts(settings: Settings) -> None:
    answers = f" Boss@Example.COM \nthe_boss\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n"
    result = run(settings, "create-admin", input=answers)
    assert result.exit_code == 0, result.output
    assert "Created admin boss@example.com" in result.output
    assert NEW_PASSWORD not in result.output  # hidden input, never echoed
    user = db_user(settings, "boss@example.com")
    assert user is not None
    assert (user.username, user.role, user.confirmed) == ("the_boss", "admin", True)
    assert user.avatar_url.startswith("https://www.gravatar.com/avatar/")
    assert verify_password_sync(NEW_PASSWORD, user.password_hash)


def test_create_admin_confirmation_must_match(settings: Settings) -> None:
    answers = f"boss@example.com\nboss\n{NEW_PASSWORD}\nsomething else\n{NEW_PASSWORD}\n{NEW_PASSWORD}\n"
    result = run(settings, "create-admin", input=answers)
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    assert db_user(settings, "boss@example.com") is not None


def test_create_admin_for_automation(settings: Settings) -> None:
    result = run(
        settings,
        "create-admin",
        "--email",
        "ops@example.com",
        "--username",
        "ops",
        env={"ADMIN_PASSWORD": NEW_PASSWORD},
    )
    assert result.exit_code == 0, result.output
    assert "Password" not in result.output  # nothing was prompted
    user = db_user(settings, "ops@example.com")
    assert user is not None
    assert user.role == "admin"
    assert verify_password_sync(NEW_PASSWORD, user.password_hash)


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (("--email", "not-an-email", "--username", "ops"), NEW_PASSWORD, "not an email address"),
        # The API's rules (app.input), not looser ones of the CLI's own (issue 12).
        (("--email", "a@@b.c", "--username", "ops"), NEW_PASSWORD, "not an email address"),
        (("--email", "ops@example.com", "--username", "a@b"), NEW_PASSWORD, "letters, digits"),
        (("--email", "ops@example.com", "--username", "x" * 51), NEW_PASSWORD, "3 to 50 characters"),
        (("--email", "ops@example.com", "--username", "ab"), NEW_PASSWORD, "3 to 50 characters"),
        (("--email", "ops@example.com", "--username", "o\u212aay"), NEW_PASSWORD, "letters, digits"),
        (("--email", "ops@example.com", "--username", "ops"), "short", "at least 8 characters"),
        (("--email", "ops@example.com", "--username", "ops"), "x" * 129, "at most 128 characters"),
        (("--email", "ops@example.com", "--username", "ops"), "password123", "too common"),
    ],
)
def test_create_admin_refuses_bad_input(
    settings: Settings, args: tuple[str, ...], password: str, message: str
) -> None:
    result = run(settings, "create-admin", *args, env={"ADMIN_PASSWORD": password})
    assert result.exit_code == 2
    assert message in result.output
    assert db_user(settings, "ops@example.com") is None


@pytest.mark.parametrize(
    ("email", "username", "taken"),
    [("TAKEN@example.com", "fresh", "email"), ("fresh@example.com", "TAKEN", "username")],
)
def test_create_admin_refuses_a_taken_email_or_username(
    settings: Settings, email: str, username: str, taken: str
) -> None:
    insert_user(settings, "taken@example.com")
    result = run(
        settings,
        "create-admin",
        "--email",
        email,
        "--username",
        username,
        env={"ADMIN_PASSWORD": NEW_PASSWORD},
    )
    assert result.exit_code == 1
    assert f"The {taken} is already taken" in result.output
    assert db_user(settings, "fresh@example.com") is None
    taken_user = db_user(settings, "taken@example.com")
    assert taken_user is not None
    assert taken_user.role == "user"


# --------------------------------------------------------------------------- promote


def test_promote(settings: Settings) -> None:
    insert_user(settings, "someone@example.com")
    result = run(settings, "promote", "SomeOne@Example.com")
    assert result.exit_code == 0, result.output
    assert "Promoted someone@example.com to admin" in result.output
    user = db_user(settings, "someone@example.com")
    assert user is not None
    assert user.role == "admin"

    again = run(settings, "promote", "someone@example.com")
    assert again.exit_code == 0
    assert "already an admin" in again.output


def test_promote_unknown_email(settings: Settings) -> None:
    result = run(settings, "promote", "nobody@example.com")
    assert result.exit_code == 1
    assert "No user with email nobody@example.com" in result.output


def test_promote_needs_an_email(settings: Settings) -> None:
    assert run(settings, "promote").exit_code == 2
    assert run(settings, "promote", "nope").exit_code == 2
    # The API's email rule: this address the old CLI check let through, the API never did.
    assert run(settings, "promote", "a@@b.c").exit_code == 2


# --------------------------------------------------------------------------- the cached user


async def _cache_op(settings: Settings, op: str, key: str) -> Any:
    root = cache.make_root_store(settings)
    async with root:
        store = root.with_namespace(cache.USER_CACHE)
        if op == "set":
            await store.set(key, b"stale snapshot", expires_in=300)
            return None
        return await store.get(key)


@pytest.mark.skipif(not TEST_REDIS_URL, reason="a CLI process reaches a server's cache only through Redis")
def test_promote_drops_the_cached_user(settings: Settings) -> None:
    user_id = insert_user(settings, "cached@example.com")
    asyncio.run(_cache_op(settings, "set", str(user_id)))
    assert asyncio.run(_cache_op(settings, "get", str(user_id))) == b"stale snapshot"
    result = run(settings, "promote", "cached@example.com")
    assert result.exit_code == 0, result.output
    assert asyncio.run(_cache_op(settings, "get", str(user_id))) is None


def test_an_unreachable_cache_does_not_fail_the_command(settings: Settings) -> None:
    insert_user(settings, "offline@example.com")
    offline = msgspec.structs.replace(settings, redis_url="redis://127.0.0.1:1/0")
    result = run(offline, "promote", "offline@example.com")
    assert result.exit_code == 0, result.output
    user = db_user(settings, "offline@example.com")
    assert user is not None
    assert user.role == "admin"
