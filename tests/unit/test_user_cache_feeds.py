"""The in-memory user cache and its change feeds (issue 19, item 11): what one process drops,
every other process on the same database drops before its next lookup."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app import cache
from app.cache import ChangesFile, PostgresNotifications, WatchedStore
from tests.conftest import TEST_DATABASE_URL


def _two_processes(tmp_path: Path) -> tuple[WatchedStore, WatchedStore]:
    path = tmp_path / "contacts.db.user-changes"
    return WatchedStore(ChangesFile(path)), WatchedStore(ChangesFile(path))


async def test_a_key_dropped_in_one_process_is_dropped_in_the_other(tmp_path: Path) -> None:
    one, two = _two_processes(tmp_path)
    for store in (one, two):
        await store.set("alice", b"a1", expires_in=300)
        await store.set("bob", b"b1", expires_in=300)
    await one.delete("alice")
    assert await two.get("alice") is None
    assert await two.get("bob") == b"b1", "only the named key goes"
    assert await one.get("bob") == b"b1", "its own announcement drops nothing else"
    assert (tmp_path / "contacts.db.user-changes").stat().st_mode & 0o777 == 0o600


async def test_a_changes_file_started_afresh_drops_everything_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "USER_CHANGES_MAX_BYTES", 100)
    one, two = _two_processes(tmp_path)
    await two.set("bob", b"b1", expires_in=300)
    for n in range(5):  # past 100 bytes: the writer puts an empty file in place
        await one.delete(f"user-{n:032d}")
    assert (tmp_path / "contacts.db.user-changes").stat().st_size < 100
    assert await two.get("bob") is None
    await two.set("bob", b"b2", expires_in=300)
    assert await two.get("bob") == b"b2"
    await one.delete("bob")  # and the new file is followed like the old one
    assert await two.get("bob") is None


async def test_a_snapshot_read_while_a_change_was_heard_is_not_kept(tmp_path: Path) -> None:
    one, two = _two_processes(tmp_path)
    assert await two.get("alice") is None  # a miss: the server goes to the database...
    await one.delete("alice")  # ...the CLI changes alice meanwhile...
    await two.set("alice", b"before the change", expires_in=300)  # ...and the old row comes back
    assert await two.get("alice") is None, "the old row must not be served for the TTL"
    await two.set("alice", b"after", expires_in=300)
    assert await two.get("alice") == b"after"


async def test_entries_expire(tmp_path: Path) -> None:
    one, _ = _two_processes(tmp_path)
    await one.set("alice", b"a1", expires_in=1)
    assert await one.expires_in("alice") in (0, 1)
    one._local["alice"] = (b"a1", time.monotonic() - 1)
    assert await one.get("alice") is None


class _DeafFeed:
    """A feed that cannot hear changes (its connection is down)."""

    live = False

    def poll(self, forget: Callable[[str], None]) -> None:
        pass

    async def announce(self, key: str) -> None:
        pass

    async def listen(self, forget: Callable[[str], None]) -> None:
        pass

    def stop(self) -> None:
        pass


async def test_nothing_is_served_from_memory_while_changes_cannot_be_heard() -> None:
    store = WatchedStore(_DeafFeed())
    await store.set("alice", b"a1", expires_in=300)
    assert await store.get("alice") is None


# --------------------------------------------------------------------------- PostgreSQL


@contextlib.asynccontextmanager
async def _listening(database_url: str) -> AsyncIterator[WatchedStore]:
    store = WatchedStore(PostgresNotifications(database_url))
    task = asyncio.create_task(store.listen())
    try:
        await _until(lambda: store.feed.live)
        yield store
    finally:
        await store.stop(task)


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="LISTEN/NOTIFY needs PostgreSQL")
async def test_postgres_notifications_reach_the_other_processes(database_url: str) -> None:
    cli = WatchedStore(PostgresNotifications(database_url))  # announces over a connection of its own
    async with _listening(database_url) as server:
        await server.set("alice", b"a1", expires_in=300)
        await server.set("bob", b"b1", expires_in=300)
        await cli.delete("alice")
        await _until(lambda: "alice" not in server._local)
        assert await server.get("bob") == b"b1"


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="LISTEN/NOTIFY needs PostgreSQL")
async def test_a_lost_listen_connection_stops_serving_from_memory_until_it_is_back(
    database_url: str,
) -> None:
    async with _listening(database_url) as server:
        await server.set("alice", b"a1", expires_in=300)
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid() AND datname = current_database()"
                    )
                )
        finally:
            await engine.dispose()
        await _until(lambda: not server.feed.live)
        assert await server.get("alice") is None
        await _until(lambda: server.feed.live)  # connected again, starting empty
        assert await server.get("alice") is None
        await server.set("alice", b"a2", expires_in=300)
        assert await server.get("alice") == b"a2"
