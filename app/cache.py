"""The key/value store: Redis when ``REDIS_URL`` is set, in-process memory otherwise.

One root store is created at start-up on the running event loop and closed at shutdown;
each use gets its own namespace under it, registered by name in the app's store registry.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from redis.asyncio import ConnectionPool, Redis

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.stores.base import NamespacedStore, Store

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


async def open_stores(app: Litestar) -> None:
    """Start-up hook: create the root store on the running loop and register the namespaces.

    Args:
        app: The application whose store registry receives the stores.
    """
    root = make_root_store(app.state.settings)
    app.state[_ROOT_KEY] = root
    for name in NAMESPACES:
        app.stores.register(name, root.with_namespace(name), allow_override=True)


async def close_stores(app: Litestar) -> None:
    """Shutdown hook: close the root store's connections.

    Args:
        app: The application whose root store is closed.
    """
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
