"""The engine's pool rules on PostgreSQL: only idle connections are pinged, dead ones replaced."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app import db
from app.config import Settings
from app.db import make_db_config
from tests.conftest import ON_POSTGRES

pytestmark = pytest.mark.skipif(not ON_POSTGRES, reason="these rules apply to PostgreSQL only")


async def test_only_connections_idle_in_the_pool_are_pinged(settings: Settings, monkeypatch) -> None:
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

    pings: list[int] = []
    real_ping = AsyncAdapt_asyncpg_connection.ping

    def ping(self: Any) -> None:
        pings.append(1)
        real_ping(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", ping)
    engine = make_db_config(settings).get_engine()
    try:
        for _ in range(3):  # back-to-back use: no ping (pool_pre_ping would ping every time)
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert pings == []
        monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert pings == [1]
    finally:
        await engine.dispose()


async def test_a_dead_idle_connection_is_replaced_not_served(settings: Settings, monkeypatch) -> None:
    engine = make_db_config(settings).get_engine()
    killer = create_async_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        # Kill the pooled connection's backend behind the pool's back, as a restart would.
        async with killer.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
    finally:
        await engine.dispose()
        await killer.dispose()


def test_a_new_sqlite_file_is_in_wal_mode_before_any_connection_opens(tmp_path) -> None:
    import sqlite3

    from app.config import load_settings

    path = tmp_path / "fresh.db"
    env = {"APP_ENV": "development", "DATABASE_URL": f"sqlite+aiosqlite:///{path}", "SECRET_KEY": "k" * 40}
    make_db_config(load_settings(env, env_file=None))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert path.stat().st_mode & 0o777 == 0o600
