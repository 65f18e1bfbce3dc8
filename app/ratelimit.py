"""Rate limits, with Litestar's :class:`RateLimitConfig` on the ``rate_limit`` store.

A route is limited by declaring it on its handler: ``@post(..., opt=limited(AUTH))``. Each
:class:`Limit` is its own middleware with its own counters; it counts only the requests of
the handlers that name it, so adding a route never means editing a path list here.

* :data:`ME`: ``GET /api/users/me`` per client (``RATE_LIMIT_ME_PER_MINUTE``);
* :data:`AUTH`: every route that checks or hashes a password or sends account mail, per
  client, one counter for all of them (``RATE_LIMIT_AUTH_PER_MINUTE``);
* :data:`AUTH_PER_USER`: the same number per authenticated user, so spreading the guesses at
  one account's current password over many addresses does not help;
* :data:`IMPORT`: contact imports per user (``RATE_LIMIT_IMPORT_PER_MINUTE``);
* :data:`BASIC`: HTTP Basic credentials checked against the database (``/dav/``), per client,
  at the login rate. It is no middleware: the code that checks them counts the attempt
  (:func:`count_attempt`), so a request answered from a verified credential is not counted.

A client is its socket peer address, unless that peer is one of ``TRUSTED_PROXIES``: then
the nearest untrusted address in ``X-Forwarded-For`` names it (a client cannot spoof its
way past the limit by sending its own header, since only the proxies' entries are trusted).
A ``429`` carries ``Retry-After`` with the seconds left in the window.

On Redis a request is counted by one Lua script (``INCR``, and ``PEXPIRE`` when the window
opens): one round trip, atomic across every replica, so a burst spread over replicas passes
exactly the limit. Litestar's own read-then-write of a request history stays for the
in-memory store, where one process and its lock see every request anyway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.status_codes import HTTP_429_TOO_MANY_REQUESTS
from litestar.stores.redis import RedisStore

from app import cache
from app.errors import AppError

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar import Litestar
    from litestar.connection import Request
    from litestar.middleware.base import DefineMiddleware
    from litestar.types import ASGIApp, Receive, Scope, Send
    from redis.commands.core import AsyncScript

    from app.config import Settings

#: Counts one request in a fixed window, atomically: returns the count (this request included)
#: and the milliseconds left in the window, which opens with the first request (``PTTL`` < 0).
COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
"""

#: The handler ``opt`` key naming the limits of a route.
RATE_LIMIT_OPT = "rate_limit"


@dataclass(frozen=True)
class Limit:
    """One rate limit: a counter per client or per user, at a per-minute rate from the settings."""

    #: Counter namespace; also what handlers name in their ``opt``.
    name: str
    #: The :class:`~app.config.Settings` field holding the requests allowed per minute.
    setting: str
    #: ``client`` (address) or ``user`` (the authenticated user; needs a protected route).
    per: Literal["client", "user"]


#: ``GET /api/users/me``, per client.
ME = Limit("me", "rate_limit_me_per_minute", "client")
#: Routes that check or hash a password or send account mail, per client (one shared counter).
AUTH = Limit("auth", "rate_limit_auth_per_minute", "client")
#: The authenticated routes among those, per user as well.
AUTH_PER_USER = Limit("auth-user", "rate_limit_auth_per_minute", "user")
#: Contact imports, per user.
IMPORT = Limit("import", "rate_limit_import_per_minute", "user")
#: Every limit the service knows, in the order their middleware runs.
LIMITS = (ME, AUTH, AUTH_PER_USER, IMPORT)
#: HTTP Basic credentials checked against the database, per client (counted by :func:`count_attempt`).
BASIC = Limit("basic", "rate_limit_auth_per_minute", "client")


def limited(*limits: Limit) -> dict[str, Any]:
    """The handler ``opt`` that puts a route under ``limits``.

    Args:
        *limits: The limits counting this route's requests.

    Returns:
        ``{"rate_limit": frozenset of limit names}``, for ``opt=`` of a route decorator.
    """
    return {RATE_LIMIT_OPT: frozenset(limit.name for limit in limits)}


@dataclass
class _LimitConfig(RateLimitConfig):
    """Litestar's config, knowing which :class:`Limit` it counts."""

    #: The limit's name, as handlers name it in their ``opt``.
    name: str = ""


class _RetryAfterRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's middleware for one :class:`Limit`: atomic counting on Redis, ``Retry-After`` on ``429``.

    With Redis down, requests pass uncounted (logged): an outage degrades the service instead
    of turning every limited route into a ``500``.
    """

    def __init__(self, app: ASGIApp, config: _LimitConfig) -> None:
        """Keep the limit's name next to Litestar's own state."""
        super().__init__(app, config)
        self.name = config.name
        self._script: AsyncScript | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request if its handler names this limit; pass any other straight on."""
        # A dict lookup before Litestar builds a Request: most routes are not limited.
        if self.name not in scope["route_handler"].opt.get(RATE_LIMIT_OPT, ()):
            await self.app(scope, receive, send)
            return
        try:
            store = self.config.get_store_from_app(scope["litestar_app"])
            if isinstance(store, RedisStore):
                await self._call_counted_in_redis(store, scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
        except TooManyRequestsException as exc:
            headers = dict(exc.headers or {})
            reset = headers.get(self.config.rate_limit_reset_header_key)
            if reset is not None and "Retry-After" not in headers:
                headers["Retry-After"] = str(max(1, int(reset)))
                exc.headers = headers
            raise

    async def _call_counted_in_redis(
        self, store: RedisStore, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Count the request with :data:`COUNT_SCRIPT`; refuse it past the limit, else pass it on."""
        request: Request[Any, Any, Any] = scope["litestar_app"].request_class(scope)
        if not await self.should_check_request(request=request):
            await self.app(scope, receive, send)
            return
        # A key of its own: a JSON history left by an older version would not INCR.
        key = store._make_key(f"{self.cache_key_from_request(request)}::count")
        window_ms = DURATION_VALUES[self.unit] * 1000
        if self._script is None or self._script.registered_client is not store._redis:
            self._script = store._redis.register_script(COUNT_SCRIPT)
        try:
            count, left_ms = await self._script(keys=[key], args=[window_ms])
        except Exception as exc:
            # Fail open, as for the memory path: an outage degrades, it does not answer 500.
            logger.warning("rate limit store unavailable, not limiting (%s)", type(exc).__name__)
            await self.app(scope, receive, send)
            return
        # Litestar's headers are computed from a history: one entry per counted request.
        counted = CacheObject(
            history=[0] * min(int(count), self.max_requests),
            reset=int(time.time()) + math.ceil(int(left_ms) / 1000),
        )
        headers = (
            self.create_response_headers(cache_object=counted) if self.config.set_rate_limit_headers else None
        )
        if count > self.max_requests:
            raise TooManyRequestsException(headers=headers)
        if headers is not None:
            send = self.create_send_wrapper(send=send, cache_object=counted)
        await self.app(scope, receive, send)


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


class UserIdentifier:
    """Names the authenticated user of a request for a per-user counter."""

    def __init__(self, bucket: str, clients: ClientIdentifier) -> None:
        """Prefix counters with ``bucket``; count by client where no user is known."""
        self.bucket = bucket
        self.clients = clients

    def __call__(self, request: Request[Any, Any, Any]) -> str:
        """The counter identifier: ``<bucket>:user:<id>`` (``<bucket>:<client>`` without a user)."""
        user_id = getattr(request.scope.get("user"), "id", None)
        if user_id is None:
            return self.clients(request)
        return f"{self.bucket}:user:{user_id}"


def _config(limit: Limit, settings: Settings) -> _LimitConfig:
    clients = ClientIdentifier(limit.name, settings.trusted_proxies)
    return _LimitConfig(
        rate_limit=("minute", getattr(settings, limit.setting)),
        identifier_for_request=UserIdentifier(limit.name, clients) if limit.per == "user" else clients,
        middleware_class=_RetryAfterRateLimitMiddleware,
        store=cache.RATE_LIMIT,
        name=limit.name,
    )


def rate_limit_middleware(settings: Settings) -> list[DefineMiddleware]:
    """The rate limit middleware for the app (none when ``RATE_LIMIT_ENABLED=false``).

    Runs inside the authentication middleware, so per-user limits see the user, and a request
    refused for its token is not counted.

    Args:
        settings: The application settings.

    Returns:
        Middleware to add to the application's middleware list, one per :data:`LIMITS` entry.
    """
    if not settings.rate_limit_enabled:
        return []
    return [_config(limit, settings).middleware for limit in LIMITS]


class TooManyAttempts(AppError):
    """Past a limit counted by :func:`count_attempt`: ``429`` with ``Retry-After``."""

    status_code = HTTP_429_TOO_MANY_REQUESTS
    detail = "Too many attempts from this client; see Retry-After"


#: ``app.state`` key of the lock that makes an in-memory counter update (a read, then a write) whole.
_MEMORY_LOCK = "rate_limit_attempts_lock"


async def count_attempt(app: Litestar, limit: Limit, scope: Scope) -> None:
    """Count one attempt of the client of ``scope`` against ``limit``; refuse it past the limit.

    For checks that are not a whole route (a route is limited by its middleware): the same
    fixed one-minute window, client identification and store as the middleware, and the same
    atomic script on Redis. A store outage lets the attempt through (logged), as there.

    Args:
        app: The application (its settings and ``rate_limit`` store).
        limit: A per-client :class:`Limit`.
        scope: The request's ASGI scope (its peer and ``X-Forwarded-For``).

    Raises:
        TooManyAttempts: The client made more than the limit's attempts in this window.
    """
    settings: Settings = app.state.settings
    if not settings.rate_limit_enabled:
        return
    allowed = getattr(settings, limit.setting)
    client = ClientIdentifier(limit.name, settings.trusted_proxies)(app.request_class(scope))
    store = app.stores.get(cache.RATE_LIMIT)
    key = f"attempts::{client}"
    window = DURATION_VALUES["minute"]
    try:
        if isinstance(store, RedisStore):
            script = store._redis.register_script(COUNT_SCRIPT)
            count, left_ms = await script(keys=[store._make_key(key)], args=[window * 1000])
            left = math.ceil(int(left_ms) / 1000)
        else:
            lock = app.state.get(_MEMORY_LOCK)
            if lock is None:
                lock = app.state[_MEMORY_LOCK] = asyncio.Lock()  # the app's loop is this one
            async with lock:
                raw = await store.get(key)
                count = int(raw or 0) + 1
                left = (await store.expires_in(key) or window) if raw is not None else window
                await store.set(key, str(count), expires_in=max(1, left))
    except Exception as exc:
        logger.warning("rate limit store unavailable, not limiting (%s)", type(exc).__name__)
        return
    if int(count) > allowed:
        raise TooManyAttempts(headers={"Retry-After": str(max(1, left))})
