"""The key/value store: Redis when ``REDIS_URL`` is set, in-process memory otherwise.

One root store is created at start-up on the running event loop and closed at shutdown;
each use gets its own namespace under it, registered by name in the app's store registry.
With Redis, the user snapshots also live briefly in each process (:class:`NearCache`).

Dropping a user's snapshot reaches every process that may hold one, the ``litestar users``
commands included, whatever the configuration: over Redis pub/sub (:class:`NearCache`), or,
with the in-memory store, through the database's own channel (:class:`WatchedStore`) —
PostgreSQL ``LISTEN``/``NOTIFY``, or a small append-only file next to the SQLite database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import asyncpg
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from redis.asyncio import ConnectionPool, Redis
from sqlalchemy.engine import make_url

from app.db import sqlite_path

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar import Litestar
    from litestar.stores.base import NamespacedStore

    from app.config import Settings

logger = logging.getLogger(__name__)

#: Store holding msgspec-encoded snapshots of authenticated users.
USER_CACHE = "user_cache"
#: Store used by Litestar's rate limit middleware.
RATE_LIMIT = "rate_limit"
#: Store for short-lived token bookkeeping.
TOKENS = "tokens"
#: Every namespace the service uses.
NAMESPACES = (USER_CACHE, RATE_LIMIT, TOKENS)

_ROOT_KEY = "contacts_root_store"
_LISTENER_KEY = "contacts_user_cache_listener"
#: Redis channel on which a process names the user snapshot it dropped (``*``: all of them).
INVALIDATIONS = "contacts:user_cache:dropped"
#: Seconds between attempts to subscribe again after the subscription broke.
RESUBSCRIBE_AFTER = 1.0
#: PostgreSQL channel on which a process names the user snapshot it dropped (``*``: all).
USER_CHANGES_CHANNEL = "contacts_user_changes"
#: Suffix of the file next to a SQLite database in which processes name the snapshots they dropped.
USER_CHANGES_SUFFIX = ".user-changes"
#: A changes file past this size is started afresh (its readers then drop every snapshot once).
USER_CHANGES_MAX_BYTES = 64 * 1024
#: Seconds between checks that the ``LISTEN`` connection is still alive.
LISTEN_PING_EVERY = 5.0


def make_root_store(settings: Settings) -> NamespacedStore:
    """Create the root store for the configured backend.

    Redis timeouts are short on purpose: when Redis is gone, callers fall back to the
    database quickly instead of stalling the request.

    Args:
        settings: The application settings.

    Returns:
        A :class:`RedisStore` or a :class:`MemoryStore` acting as the root namespace.
    """
    if settings.redis_url:
        pool = ConnectionPool.from_url(
            settings.redis_url,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            health_check_interval=30,
            max_connections=64,
        )
        return RedisStore(Redis(connection_pool=pool), namespace="contacts", handle_client_shutdown=True)
    return _MemoryRoot()


class _MemoryRoot(MemoryStore):
    """A memory store that hands out one independent memory store per namespace."""

    def with_namespace(self, namespace: str) -> MemoryStore:  # type: ignore[override]
        """Return a fresh in-memory store for ``namespace``."""
        return MemoryStore()


class _LocalCopies:
    """Values kept in this process, bounded, and a generation bumped by every change heard of.

    A read that started before a change (an older generation) must not be kept: it may
    predate the change.

    Args:
        max_entries: Values kept at most (oldest dropped first).
    """

    def __init__(self, max_entries: int) -> None:
        """Start empty."""
        self.max_entries = max_entries
        self._local: dict[str, tuple[bytes, float | None]] = {}
        self._generation = 0

    def _forget(self, key: str) -> None:
        """Drop ``key`` (``*``: everything) and start a new generation."""
        self._generation += 1
        if key == "*":
            self._local.clear()
        else:
            self._local.pop(key, None)

    def _put(self, key: str, value: bytes, expires: float | None) -> None:
        """Keep ``value`` until ``expires`` (monotonic seconds; ``None``: no expiry)."""
        if key not in self._local and len(self._local) >= self.max_entries:
            del self._local[next(iter(self._local))]  # dicts keep insertion order: the oldest
        self._local[key] = (value, expires)


class NearCache(_LocalCopies, Store):
    """A shared store (Redis) with a short-lived copy of what this process read from it.

    An authenticated request reads the user's snapshot; from Redis that is a round trip,
    the largest cost left in a cached request. Entries read or written here are also kept in
    process for ``local_ttl`` seconds. :meth:`delete` publishes the key on
    :data:`INVALIDATIONS` and every process subscribed to it drops its copy at once, so a
    logout, a role change or a new password takes effect everywhere as with Redis alone.

    Copies are only used while this process's subscription is up (:meth:`listen`): without it,
    a change made elsewhere could go unnoticed, so reads go to Redis. An invalidation that
    arrives while a read from Redis is in flight keeps that read out of the local copy.

    Args:
        shared: The shared store (a Redis namespace).
        redis: The Redis client used to publish and subscribe.
        local_ttl: Seconds a local copy lives (``0``: no local copies).
        max_entries: Local copies kept at most (oldest dropped first).
    """

    def __init__(self, shared: Store, redis: Redis, local_ttl: float, max_entries: int = 10_000) -> None:
        """Front ``shared``; publish and subscribe through ``redis``."""
        super().__init__(max_entries)
        self.shared = shared
        self.redis = redis
        self.local_ttl = local_ttl
        self.subscribed = False
        self._stopping = False

    def _keep(self, key: str, value: bytes, generation: int) -> None:
        if self.subscribed and self.local_ttl > 0 and generation == self._generation:
            self._put(key, value, time.monotonic() + self.local_ttl)

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        """The value of ``key``: the local copy while it is fresh, else the shared store's."""
        if self.subscribed:
            entry = self._local.get(key)
            if entry is not None and entry[1] is not None and entry[1] > time.monotonic():
                return entry[0]
        generation = self._generation
        value = await self.shared.get(key, renew_for)
        if value is not None:
            self._keep(key, value, generation)
        return value

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        """Store ``value`` in the shared store, and a local copy."""
        generation = self._generation
        await self.shared.set(key, value, expires_in)
        self._keep(key, value.encode() if isinstance(value, str) else value, generation)

    async def delete(self, key: str) -> None:
        """Drop ``key`` here, in the shared store, then in every other process."""
        self._forget(key)
        await self.shared.delete(key)
        await self.redis.publish(INVALIDATIONS, key)

    async def delete_all(self) -> None:
        """Drop every entry here, in the shared store, then in every other process."""
        self._forget("*")
        await self.shared.delete_all()
        await self.redis.publish(INVALIDATIONS, "*")

    async def exists(self, key: str) -> bool:
        """Whether the shared store has ``key``."""
        return await self.shared.exists(key)

    async def expires_in(self, key: str) -> int | None:
        """Seconds until ``key`` expires in the shared store."""
        return await self.shared.expires_in(key)

    async def listen(self) -> None:
        """Apply other processes' invalidations until cancelled, subscribing again after a failure.

        Local copies are only served while subscribed; each (re)subscription starts from an
        empty local map, since messages may have been missed in between.
        """
        while not self._stopping:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(INVALIDATIONS)
                    self._forget("*")
                    self.subscribed = True
                    while not self._stopping:
                        # A bounded wait, so the client's periodic health check (a PING) runs:
                        # a silently dead connection is noticed, not waited on forever.
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message["type"] == "message":
                            self._forget(message["data"].decode())
            except Exception as exc:
                logger.warning(
                    "user cache: invalidation channel lost (%s); local copies off", type(exc).__name__
                )
            finally:
                self.subscribed = False
                self._forget("*")
            if not self._stopping:
                await asyncio.sleep(RESUBSCRIBE_AFTER)

    async def stop(self, listener: asyncio.Task[None]) -> None:
        """End ``listener`` (the task running :meth:`listen`).

        Cancelling alone is not enough: a cancellation that lands as the client's read
        timeout expires is turned into that timeout (Python 3.11), and the loop would go on.
        """
        self._stopping = True
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


class ChangeFeed(Protocol):
    """How processes sharing one database tell each other which user snapshots they dropped."""

    #: Whether changes made elsewhere are being heard; while not, nothing may be served from memory.
    live: bool

    def poll(self, forget: Callable[[str], None]) -> None:
        """Apply the changes announced since the last call (a feed that pushes does nothing)."""

    async def announce(self, key: str) -> None:
        """Tell every process that ``key`` (``*``: everything) was dropped."""

    async def listen(self, forget: Callable[[str], None]) -> None:
        """Apply changes as they come, until :meth:`stop` (a feed that is polled returns at once)."""

    def stop(self) -> None:
        """Make :meth:`listen` return."""


class ChangesFile:
    """A change feed in an append-only file next to the SQLite database (one key a line).

    A reader remembers how far it has read: an unchanged file costs one ``stat`` per lookup
    (microseconds, no query). A writer appends its key with ``O_APPEND``, which the kernel
    keeps whole across processes. Past :data:`USER_CHANGES_MAX_BYTES` the writer puts an empty
    file in its place; a reader that finds another file (or a shorter one) drops everything,
    which covers whatever the old file said. The file is created ``0600``.

    Args:
        path: The file.
    """

    live = True

    def __init__(self, path: Path) -> None:
        """Read ``path`` (created if missing) from its current end: what it said before is not news."""
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        with contextlib.suppress(OSError):  # no such directory: SQLite itself will say so
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            found = path.stat()
            self._inode, self._offset = found.st_ino, found.st_size

    def poll(self, forget: Callable[[str], None]) -> None:
        """Forget the keys appended since the last call."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            if self._inode is not None:
                self._inode, self._offset = None, 0
                forget("*")
            return
        if found.st_ino == self._inode and found.st_size == self._offset:
            return
        if found.st_ino != self._inode or found.st_size < self._offset:
            # Started afresh (or first seen): what it said is covered by dropping everything.
            self._inode, self._offset = found.st_ino, found.st_size
            forget("*")
            return
        with open(self.path, "rb") as file:
            if os.fstat(file.fileno()).st_ino != self._inode:
                return  # replaced just now: the next call sees the new file
            file.seek(self._offset)
            data = file.read()
        end = data.rfind(b"\n")
        if end < 0:
            return  # a line being written: read it whole next time
        self._offset += end + 1
        for line in data[:end].split(b"\n"):
            if line:
                forget(line.decode("utf-8", "replace"))

    async def announce(self, key: str) -> None:
        """Append ``key``; start the file afresh when it has grown past its bound."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, key.encode() + b"\n")
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > USER_CHANGES_MAX_BYTES:
            fresh = self.path.with_name(f"{self.path.name}.{os.getpid()}.new")
            os.close(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            fresh.replace(self.path)

    async def listen(self, forget: Callable[[str], None]) -> None:
        """Nothing to wait for: readers poll."""

    def stop(self) -> None:
        """Nothing to stop."""


class PostgresNotifications:
    """A change feed over PostgreSQL ``LISTEN``/``NOTIFY`` on :data:`USER_CHANGES_CHANNEL`.

    :meth:`listen` holds one connection of its own that ``LISTEN`` s; it is only :attr:`live`
    while that connection is up (checked every :data:`LISTEN_PING_EVERY` seconds, and at once
    when the server closes it). Each (re)connection starts by dropping everything, since
    notifications may have been missed in between. :meth:`announce` notifies over that
    connection, or over a short one of its own (the CLI, or while the listener is down).

    Args:
        database_url: The SQLAlchemy URL of the PostgreSQL database.
    """

    def __init__(self, database_url: str) -> None:
        """Keep the asyncpg form of ``database_url``."""
        self.dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.live = False
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the shared connection
        self._stopping = False

    def poll(self, forget: Callable[[str], None]) -> None:
        """Nothing to do: notifications arrive on their own."""

    async def announce(self, key: str) -> None:
        """``NOTIFY`` every listener that ``key`` was dropped."""
        connection = self._connection
        if connection is not None and self.live:
            async with self._lock:
                await connection.execute("SELECT pg_notify($1, $2)", USER_CHANGES_CHANNEL, key, timeout=5)
            return
        connection = await asyncpg.connect(self.dsn, timeout=5)
        try:
            await connection.execute("SELECT pg_notify($1, $2)", USER_CHANGES_CHANNEL, key, timeout=5)
        finally:
            await connection.close(timeout=5)

    async def listen(self, forget: Callable[[str], None]) -> None:
        """Apply notifications until :meth:`stop`, connecting again after a failure."""
        while not self._stopping:
            try:
                await self._listen_once(forget)
            except Exception as exc:
                logger.warning(
                    "user cache: change notifications lost (%s); reading the database", type(exc).__name__
                )
            finally:
                self.live = False
                self._connection = None
                forget("*")
            if not self._stopping:
                await asyncio.sleep(RESUBSCRIBE_AFTER)

    async def _listen_once(self, forget: Callable[[str], None]) -> None:
        """Listen on one connection until it is lost."""
        lost = asyncio.Event()

        def on_lost(_connection: object) -> None:
            self.live = False  # at once: a change could go unheard from now on
            forget("*")
            lost.set()

        connection = await asyncpg.connect(self.dsn, timeout=5)
        try:
            connection.add_termination_listener(on_lost)
            await connection.add_listener(
                USER_CHANGES_CHANNEL, lambda _c, _pid, _channel, payload: forget(payload)
            )
            self._connection = connection
            forget("*")  # whatever was announced before LISTEN took effect went unheard
            self.live = True
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), LISTEN_PING_EVERY)
                    break
                # A silently dead connection hears nothing: ask it something now and then.
                async with self._lock:
                    await connection.fetchval("SELECT 1", timeout=2)
        finally:
            connection.terminate()

    def stop(self) -> None:
        """Make :meth:`listen` return (its task is cancelled as well)."""
        self._stopping = True


class WatchedStore(_LocalCopies, Store):
    """The in-memory user cache of one process, kept true by a :class:`ChangeFeed`.

    Deleting a key here drops it in this process and announces it to every other process on
    the same database, the ``litestar users`` commands included, which apply it before their
    next lookup. While the feed is not :attr:`~ChangeFeed.live` nothing is served from or kept
    in memory (every lookup reads the database). A snapshot read from the database while a
    change was heard is not kept: it may predate the change.

    Args:
        feed: The change feed of the database.
        max_entries: Snapshots kept at most (oldest dropped first).
    """

    def __init__(self, feed: ChangeFeed, max_entries: int = 10_000) -> None:
        """Keep snapshots in memory, watched by ``feed``."""
        super().__init__(max_entries)
        self.feed = feed
        self._misses: dict[str, int] = {}  # key -> generation when it was looked up and missed

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        """The snapshot of ``key``, unless it changed or expired (or changes cannot be heard)."""
        self.feed.poll(self._forget)
        entry = self._local.get(key) if self.feed.live else None
        now = time.monotonic()
        if entry is not None and (entry[1] is None or entry[1] > now):
            if renew_for:
                self._local[key] = (entry[0], now + _seconds(renew_for))
            return entry[0]
        self._local.pop(key, None)
        if len(self._misses) >= self.max_entries:
            self._misses.clear()
        self._misses[key] = self._generation
        return None

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        """Keep ``value``, unless a change was heard since ``key`` was looked up."""
        self.feed.poll(self._forget)
        looked_up = self._misses.pop(key, self._generation)
        if not self.feed.live or looked_up != self._generation:
            return
        expires = time.monotonic() + _seconds(expires_in) if expires_in else None
        self._put(key, value.encode() if isinstance(value, str) else value, expires)

    async def delete(self, key: str) -> None:
        """Drop ``key`` here, then in every process on the database."""
        self._forget(key)
        await self.feed.announce(key)

    async def delete_all(self) -> None:
        """Drop every entry here, then in every process on the database."""
        self._forget("*")
        await self.feed.announce("*")

    async def exists(self, key: str) -> bool:
        """Whether ``key`` has a live snapshot here."""
        return await self.get(key) is not None

    async def expires_in(self, key: str) -> int | None:
        """Seconds until ``key`` expires here (``None``: missing or no expiry)."""
        entry = self._local.get(key)
        if entry is None or entry[1] is None:
            return None
        return max(0, int(entry[1] - time.monotonic()))

    async def listen(self) -> None:
        """Apply the feed's changes until cancelled (a polled feed returns at once)."""
        await self.feed.listen(self._forget)

    async def stop(self, listener: asyncio.Task[None]) -> None:
        """End ``listener`` (the task running :meth:`listen`)."""
        self.feed.stop()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


def _seconds(duration: int | timedelta) -> float:
    return duration.total_seconds() if isinstance(duration, timedelta) else float(duration)


def change_feed(settings: Settings) -> ChangeFeed | None:
    """The change feed of the configured database (``None`` for an in-memory SQLite database).

    Args:
        settings: The application settings.

    Returns:
        LISTEN/NOTIFY on PostgreSQL, a file next to a SQLite database file.
    """
    if not settings.is_sqlite:
        return PostgresNotifications(settings.database_url)
    path = sqlite_path(settings.database_url)
    if path is None:
        return None  # one connection's private database: no other process can change it
    return ChangesFile(path.with_name(path.name + USER_CHANGES_SUFFIX))


def user_cache(root: NamespacedStore, settings: Settings) -> Store:
    """The ``user_cache`` store under ``root``: a :class:`NearCache` on Redis, else a :class:`WatchedStore`.

    Args:
        root: The root store (:func:`make_root_store`).
        settings: The application settings (``USER_CACHE_LOCAL_TTL``, ``DATABASE_URL``).

    Returns:
        The store.
    """
    shared = root.with_namespace(USER_CACHE)
    if isinstance(root, RedisStore):
        return NearCache(shared, root._redis, settings.user_cache_local_ttl)
    feed = change_feed(settings)
    return shared if feed is None else WatchedStore(feed)


async def open_stores(app: Litestar) -> None:
    """Start-up hook: create the root store on the running loop and register the namespaces.

    With Redis, the user cache's invalidation listener starts here too.

    Args:
        app: The application whose store registry receives the stores.
    """
    settings: Settings = app.state.settings
    root = make_root_store(settings)
    app.state[_ROOT_KEY] = root
    for name in NAMESPACES:
        store = user_cache(root, settings) if name == USER_CACHE else root.with_namespace(name)
        app.stores.register(name, store, allow_override=True)
        if (isinstance(store, NearCache) and store.local_ttl > 0) or isinstance(store, WatchedStore):
            app.state[_LISTENER_KEY] = asyncio.get_running_loop().create_task(store.listen())


async def close_stores(app: Litestar) -> None:
    """Shutdown hook: close the root store's connections.

    Args:
        app: The application whose root store is closed.
    """
    listener = app.state.get(_LISTENER_KEY)
    if listener is not None:
        await app.stores.get(USER_CACHE).stop(listener)  # type: ignore[attr-defined]
    root = app.state.get(_ROOT_KEY)
    if isinstance(root, RedisStore):
        await root._shutdown()  # the public __aexit__ does the same; no context manager here


async def ping(store: Store, timeout: float = 1.0) -> bool:
    """Whether the store answers within ``timeout`` seconds.

    Args:
        store: Any store registered by :func:`open_stores`.
        timeout: Seconds to wait.

    Returns:
        ``True`` when the store works.
    """
    try:
        async with asyncio.timeout(timeout):
            await store.exists("__ping__")
    except Exception:
        return False
    return True
