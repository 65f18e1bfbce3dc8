"""The key/value store: Redis when ``REDIS_URL`` is set, in-process memory otherwise.

One root store is created at start-up on the running event loop and closed at shutdown;
each use gets its own namespace under it, registered by name in the app's store registry.
With Redis, the user snapshots also live briefly in each process (:class:`NearCache`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from redis.asyncio import ConnectionPool, Redis

if TYPE_CHECKING:
    from datetime import timedelta

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


class NearCache(Store):
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
        self.shared = shared
        self.redis = redis
        self.local_ttl = local_ttl
        self.max_entries = max_entries
        self.subscribed = False
        self._stopping = False
        self._local: dict[str, tuple[bytes, float]] = {}
        self._generation = 0  # bumped by every invalidation this process hears of

    def _forget(self, key: str) -> None:
        self._generation += 1
        if key == "*":
            self._local.clear()
        else:
            self._local.pop(key, None)

    def _keep(self, key: str, value: bytes, generation: int) -> None:
        if not self.subscribed or self.local_ttl <= 0 or generation != self._generation:
            return
        if len(self._local) >= self.max_entries:
            del self._local[next(iter(self._local))]  # dicts keep insertion order: the oldest
        self._local[key] = (value, time.monotonic() + self.local_ttl)

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        """The value of ``key``: the local copy while it is fresh, else the shared store's."""
        if self.subscribed:
            entry = self._local.get(key)
            if entry is not None and entry[1] > time.monotonic():
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


def user_cache(root: NamespacedStore, settings: Settings) -> Store:
    """The ``user_cache`` store under ``root``: a :class:`NearCache` on Redis, else plain memory.

    Args:
        root: The root store (:func:`make_root_store`).
        settings: The application settings (``USER_CACHE_LOCAL_TTL``).

    Returns:
        The store.
    """
    shared = root.with_namespace(USER_CACHE)
    if isinstance(root, RedisStore):
        return NearCache(shared, root._redis, settings.user_cache_local_ttl)
    return shared


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
        if isinstance(store, NearCache) and store.local_ttl > 0:
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
