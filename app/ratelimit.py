"""Rate limits, with Litestar's :class:`RateLimitConfig` on the ``rate_limit`` store.

Two limits, each its own middleware with its own counter namespace:

* ``me``: ``GET /api/users/me`` per client (``RATE_LIMIT_ME_PER_MINUTE``);
* ``auth``: the credential and mail endpoints that invite brute force or mail bombing
  (``POST`` login, register, request_email, update_password), tighter
  (``RATE_LIMIT_AUTH_PER_MINUTE``).

A client is its socket peer address, unless that peer is one of ``TRUSTED_PROXIES``: then
the nearest untrusted address in ``X-Forwarded-For`` names it (a client cannot spoof its
way past the limit by sending its own header, since only the proxies' entries are trusted).
A ``429`` carries ``Retry-After`` with the seconds left in the window.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitConfig, RateLimitMiddleware

from app import cache

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from litestar.connection import Request
    from litestar.middleware.base import DefineMiddleware
    from litestar.stores.base import Store
    from litestar.types import Receive, Scope, Send

    from app.config import Settings

#: Paths under the ``me`` limit (any method).
ME_PATHS = re.compile(r"^/api/users/me/?$")
#: Paths under the ``auth`` limit (``POST`` only).
AUTH_PATHS = re.compile(r"^/api/auth/(login|register|request_email|update_password)/?$")


class _RetryAfterRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's middleware, adding ``Retry-After`` to its ``429``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except TooManyRequestsException as exc:
            headers = dict(exc.headers or {})
            reset = headers.get(self.config.rate_limit_reset_header_key)
            if reset is not None and "Retry-After" not in headers:
                headers["Retry-After"] = str(max(1, int(reset)))
                exc.headers = headers
            raise

    async def retrieve_cached_history(self, key: str, store: Store) -> CacheObject:
        """The client's request history; an empty one when the store is down (fail open).

        A Redis outage degrades the service (no rate limit for a while) instead of turning
        every limited route into a ``500``.
        """
        try:
            return await super().retrieve_cached_history(key, store)
        except Exception as exc:
            logger.warning("rate limit store unavailable, not limiting (%s)", type(exc).__name__)
            return CacheObject(history=[], reset=int(time.time()) + DURATION_VALUES[self.unit])

    async def set_cached_history(self, key: str, cache_object: CacheObject, store: Store) -> None:
        """Record this request; skipped (logged) when the store is down."""
        try:
            await super().set_cached_history(key, cache_object, store)
        except Exception as exc:
            logger.warning("rate limit store unavailable, request not counted (%s)", type(exc).__name__)


class ClientIdentifier:
    """Names the client of a request for the rate limit counters."""

    def __init__(self, bucket: str, trusted_proxies: Iterable[str]) -> None:
        """Prepare the trusted proxy matcher.

        Args:
            bucket: Prefix keeping this limit's counters apart from the other limit's
                (Litestar keys counters by middleware class and identifier only).
            trusted_proxies: IP addresses or networks (CIDR) of trusted proxies; any other
                entry (e.g. a socket name) is matched literally.
        """
        self.bucket = bucket
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.literals: set[str] = set()
        for entry in trusted_proxies:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.literals.add(entry)

    def is_trusted(self, host: str) -> bool:
        """Whether ``host`` is one of the trusted proxies."""
        if host in self.literals:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def client_of(self, request: Request[Any, Any, Any]) -> str:
        """The client address: the peer, or behind trusted proxies the nearest untrusted hop.

        Args:
            request: The incoming request.

        Returns:
            An address (or the peer's name when it has no address).
        """
        peer = request.client.host if request.client else "unknown"
        if not self.is_trusted(peer):
            return peer
        hops = [
            hop.strip()
            for header in request.headers.getall("x-forwarded-for", [])
            for hop in header.split(",")
            if hop.strip()
        ]
        # Each proxy appends the address it received from; walk back past our own proxies.
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def __call__(self, request: Request[Any, Any, Any]) -> str:
        """The counter identifier: ``<bucket>:<client>``."""
        return f"{self.bucket}:{self.client_of(request)}"


def _path(request: Request[Any, Any, Any]) -> str:
    return request.scope["path"]


# Async on purpose: Litestar runs a sync check in a worker thread, on every request.
async def _is_me(request: Request[Any, Any, Any]) -> bool:
    return bool(ME_PATHS.match(_path(request)))


async def _is_auth(request: Request[Any, Any, Any]) -> bool:
    return request.method == "POST" and bool(AUTH_PATHS.match(_path(request)))


def _config(
    bucket: str,
    per_minute: int,
    applies: Callable[[Request[Any, Any, Any]], Awaitable[bool]],
    settings: Settings,
) -> RateLimitConfig:
    return RateLimitConfig(
        rate_limit=("minute", per_minute),
        identifier_for_request=ClientIdentifier(bucket, settings.trusted_proxies),
        check_throttle_handler=applies,
        middleware_class=_RetryAfterRateLimitMiddleware,
        store=cache.RATE_LIMIT,
    )


def rate_limit_middleware(settings: Settings) -> list[DefineMiddleware]:
    """The rate limit middleware for the app (none when ``RATE_LIMIT_ENABLED=false``).

    Args:
        settings: The application settings.

    Returns:
        Middleware to add to the application's middleware list.
    """
    if not settings.rate_limit_enabled:
        return []
    return [
        _config("me", settings.rate_limit_me_per_minute, _is_me, settings).middleware,
        _config("auth", settings.rate_limit_auth_per_minute, _is_auth, settings).middleware,
    ]
