"""Issue 19, item 11: a change made with the ``litestar users`` commands shows on a running
server's very next request, in every configuration (API.md: "visible on the very next request").

The server is the README's command in its own process, the CLI another process, as an operator
runs them: SQLite or PostgreSQL (the test's backend), each with the in-memory store and, when
the run has one, Redis.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from app.users.models import User
from tests.conftest import PASSWORD, PASSWORD_HASH, TEST_REDIS_URL
from tests.integration.test_server_command import ROOT, readme_run_command, serve, server_env

__all__ = ["server_env"]  # the fixture, imported for this module's tests


async def _insert_user(database_url: str, email: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                User.__table__.insert().values(
                    id=uuid.uuid4(),
                    username=email.split("@")[0],
                    email=email,
                    password_hash=PASSWORD_HASH,
                    role="user",
                    confirmed=True,
                    avatar_url="https://www.gravatar.com/avatar/x",
                    password_version=0,
                )
            )
    finally:
        await engine.dispose()


def _cli(env: dict[str, str], *args: str) -> str:
    """Run ``litestar --app app.main:app users ...`` (the documented command) and return its output."""
    done = subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "litestar", "--app", "app.main:app", "users", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_a_promotion_from_the_cli_shows_on_the_next_request(
    store: str, server_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    if store == "redis" and not TEST_REDIS_URL:
        pytest.skip("this run has no Redis (TEST_REDIS_URL)")
    if store == "memory":
        server_env.pop("REDIS_URL", None)
    email = f"promoted-{uuid.uuid4().hex[:8]}@example.com"
    asyncio.run(_insert_user(database_url, email))
    port = int(server_env["PORT"])
    with (
        serve(readme_run_command(), server_env, port, tmp_path) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        login = http.post("/api/auth/login", data={"username": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for _ in range(3):  # the snapshot is cached now, in whatever store the server has
            me = http.get("/api/users/me", headers=headers)
            assert me.status_code == 200, me.text
            assert me.json()["role"] == "user"
        assert http.get("/api/users", headers=headers).status_code == 403

        assert "Promoted" in _cli(server_env, "promote", email)

        # The very next requests, without waiting: the server knows.
        me = http.get("/api/users/me", headers=headers)
        assert me.json()["role"] == "admin", me.text
        assert http.get("/api/users", headers=headers).status_code == 200
