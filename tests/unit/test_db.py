"""The database wiring's hot-path rules: transaction-free reads, pinging only idle connections."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar, get, post
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app import db
from app.config import Settings
from app.db import make_db_config
from tests.conftest import ON_POSTGRES

pytestmark = pytest.mark.skipif(not ON_POSTGRES, reason="these rules apply to PostgreSQL only")


def _app(settings: Settings) -> Litestar:
    """A tiny app on the real config whose routes tell whether their session is in a transaction."""
    from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin

    config = make_db_config(settings)

    async def in_transaction(db_session: AsyncSession) -> dict[str, Any]:
        await db_session.execute(text("SELECT 1"))
        assert db_session.get_bind() is not None  # the async <-> sync bind translation holds
        connection = await db_session.connection()
        raw = await connection.get_raw_connection()
        return {"transaction": raw.driver_connection.is_in_transaction()}

    @get("/read", sync_to_thread=False)
    async def read(db_session: AsyncSession) -> dict[str, Any]:
        return await in_transaction(db_session)

    @get("/read-tx", opt={db.TRANSACTION_OPT: True})
    async def read_tx(db_session: AsyncSession) -> dict[str, Any]:
        return await in_transaction(db_session)

    @post("/write")
    async def write(db_session: AsyncSession) -> dict[str, Any]:
        return await in_transaction(db_session)

    return Litestar([read, read_tx, write], plugins=[SQLAlchemyPlugin(config=config)])


async def test_reads_run_without_a_transaction_writes_and_opted_routes_keep_one(settings: Settings) -> None:
    app = _app(settings)
    async with AsyncTestClient(app) as client:
        assert (await client.get("/read")).json() == {"transaction": False}
        assert (await client.get("/read-tx")).json() == {"transaction": True}
        assert (await client.post("/write")).json() == {"transaction": True}
        # The autocommit setting does not leak into the pool: a write after a read is transactional.
        assert (await client.get("/read")).json() == {"transaction": False}
        assert (await client.post("/write")).json() == {"transaction": True}


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
