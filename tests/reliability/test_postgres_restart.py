"""Fault: the PostgreSQL server restarts under a running service (a private cluster)."""

from __future__ import annotations

import asyncio
import time

import pytest
from anyio import to_thread

from app.config import load_settings
from app.db import make_db_config, upgrade_database
from tests.conftest import ON_POSTGRES, SECRET
from tests.reliability.services import PrivatePostgres

pytestmark = pytest.mark.skipif(
    not ON_POSTGRES, reason="a PostgreSQL fault: runs on the PostgreSQL + Redis run"
)


@pytest.fixture(scope="module")
def migrated_private_postgres(private_postgres: PrivatePostgres) -> PrivatePostgres:
    """The private cluster with the schema applied."""
    env = {"APP_ENV": "test", "SECRET_KEY": SECRET, "DATABASE_URL": private_postgres.url}
    upgrade_database(make_db_config(load_settings(env, env_file=None)))
    return private_postgres


@pytest.fixture
def database_url(migrated_private_postgres: PrivatePostgres) -> str:
    """Override: this module's app talks to the private cluster, which it may restart."""
    return migrated_private_postgres.url


async def _health(client) -> tuple[int, dict]:
    response = await client.get("/api/healthchecker")
    return response.status_code, response.json()


async def _until_healthy(client, timeout: float = 20.0) -> float:
    started = time.monotonic()
    while True:
        status, _ = await _health(client)
        if status == 200:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            pytest.fail(f"service still unhealthy {timeout}s after PostgreSQL came back")
        await asyncio.sleep(0.2)


async def test_postgres_restart_health_503_meanwhile_then_recovers_without_restart(
    serve_with, private_postgres: PrivatePostgres
):
    async with serve_with(health_timeout=1.0) as client:
        # Fill the pool with connections that the restart will kill.
        for _ in range(3):
            assert await _health(client) == (200, {"status": "ok", "database": "ok", "cache": "ok"})

        await to_thread.run_sync(private_postgres.stop)
        started = time.monotonic()
        status, body = await _health(client)
        assert status == 503
        assert body["database"] == "unavailable"
        assert body["status"] == "unavailable"
        assert time.monotonic() - started < 5, "health must answer promptly while the database is down"

        await to_thread.run_sync(private_postgres.start)
        await _until_healthy(client)
        # The app's own pool (stale connections pre-pinged away) serves reads and writes again.
        status, body = await _health(client)
        assert (status, body["database"]) == (200, "ok")
