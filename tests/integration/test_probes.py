"""``/livez`` and ``/readyz``: in process, and through a real server's SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.config import Settings
from tests.conftest import ON_POSTGRES
from tests.integration.test_server_command import readme_run_command, serve, server_env  # noqa: F401

READY = {"status": "ready", "database": "ok", "cache": "ok", "migrations": "ok", "shutting_down": False}


async def test_livez_answers_without_a_database(make_client, tmp_path):
    async with make_client(database_url=f"sqlite+aiosqlite:///{tmp_path}/missing/db.sqlite") as client:
        response = await client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_ready(client):
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == READY


async def test_healthchecker_is_unchanged(client):
    response = await client.get("/api/healthchecker")
    assert response.json() == {"status": "ok", "database": "ok", "cache": "ok"}


async def test_readyz_database_down(make_client, tmp_path):
    if ON_POSTGRES:
        down = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
    else:
        down = f"sqlite+aiosqlite:///{tmp_path}/missing-dir/db.sqlite"
    async with make_client(database_url=down, health_timeout=1.0) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "unavailable"
    assert response.json()["status"] == "unavailable"


async def test_readyz_cache_down(make_client):
    async with make_client(redis_url="redis://127.0.0.1:1/0", health_timeout=0.5) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["cache"] == "unavailable"


async def _set_revision(url: str, revision: str | None) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
        if revision is not None:
            await conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:r)"), {"r": revision})
    await engine.dispose()


@pytest.mark.parametrize(
    ("revision", "status", "state"),
    [(None, 503, "pending"), ("0001", 503, "pending"), ("f00dfeedbeef", 200, "ahead")],
)
async def test_readyz_follows_the_schema_revision(
    make_client, settings: Settings, tmp_path, revision, status, state
):
    if ON_POSTGRES:
        pytest.skip("the PostgreSQL test database is shared by the run; SQLite copies are per test")
    from app.health.probes import code_revisions

    heads, known = code_revisions("alembic")
    older = sorted(known - heads)
    if revision == "0001":
        revision = older[0]  # a real revision behind the head
    await _set_revision(settings.database_url, revision)
    async with make_client() as client:
        response = await client.get("/readyz")
    assert response.status_code == status, response.text
    assert response.json()["migrations"] == state


def test_sigterm_turns_readyz_503_then_drains(server_env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    port = int(server_env["PORT"])
    server_env["SHUTDOWN_DELAY"] = "3"
    with serve(readme_run_command(), server_env, port, tmp_path) as server:
        process = server.process
        with httpx.Client(base_url=server.base_url, timeout=5) as http:
            assert http.get("/readyz").status_code == 200
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            # Not ready, but still serving (the load balancer is catching up).
            answer = http.get("/readyz")
            assert answer.status_code == 503
            assert answer.json()["shutting_down"] is True
            assert http.get("/livez").status_code == 200
            assert http.get("/api/healthchecker").status_code == 200
            process.wait(timeout=30)
        stopped = time.monotonic() - sent
    assert stopped >= 2.5, "the server stopped before the delay"
    log = server.log()
    assert "Shutting down" in log or "shutting down" in log.lower()
