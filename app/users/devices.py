"""What a session shows about its device, and when it was last used.

A session keeps the client's ``User-Agent`` (cut short, control characters dropped) and its
*network*, never the full address: ``203.0.113.0/24`` for IPv4 and ``2001:db8:1234::/48`` for
IPv6 — enough to recognise "home" or "the office", too coarse to locate a person.

``last_used_at`` is written at login and refresh, and on an access token's use at most once a
minute per session and process: :class:`SessionActivity` remembers in memory when this process
last wrote each session, and :func:`record_session_use` (the app's ``after_response`` hook)
writes after the answer is sent, so a request on a warm cache still costs no statement before
its answer.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from app.ratelimit import ClientIdentifier
from app.users.deps import user_service_on
from app.users.models import USER_AGENT_MAX
from app.users.schemas import CurrentUser

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar import Request

logger = logging.getLogger(__name__)

#: Seconds between two writes of one session's ``last_used_at`` by one process.
TOUCH_EVERY = 60.0


def truncate_ip(address: str | None) -> str | None:
    """The network of ``address``: IPv4 ``/24``, IPv6 ``/48``, in CIDR notation.

    Args:
        address: A client address (or a name such as ``testclient``, or ``None``).

    Returns:
        ``"203.0.113.0/24"``, ``"2001:db8:1234::/48"``; ``None`` when it is not an address.
    """
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def clean_user_agent(value: str | None) -> str | None:
    """A ``User-Agent`` fit to store and show: control characters dropped, at most :data:`USER_AGENT_MAX` long.

    Args:
        value: The header's value.

    Returns:
        The cleaned value, or ``None`` when nothing is left.
    """
    if not value:
        return None
    kept = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C").strip()
    return kept[:USER_AGENT_MAX] or None


@functools.cache
def _clients(trusted_proxies: Iterable[str]) -> ClientIdentifier:
    return ClientIdentifier("session", trusted_proxies)


def request_device(request: Request[Any, Any, Any]) -> tuple[str | None, str | None]:
    """The ``(user_agent, ip)`` a session records for ``request``.

    The address is the client's as the rate limits see it (behind ``TRUSTED_PROXIES``, the
    nearest untrusted hop), truncated by :func:`truncate_ip`.
    """
    clients = _clients(tuple(request.app.state.settings.trusted_proxies))
    return clean_user_agent(request.headers.get("user-agent")), truncate_ip(clients.client_of(request))


class SessionActivity:
    """When this process last wrote each session's ``last_used_at`` (monotonic seconds), bounded.

    Args:
        every: Seconds between two writes of one session.
        max_entries: Sessions remembered at most (the oldest are forgotten first; a forgotten
            one is written again on its next use, which is harmless).
    """

    def __init__(self, every: float = TOUCH_EVERY, max_entries: int = 100_000) -> None:
        """Start with nothing written."""
        self.every = every
        self.max_entries = max_entries
        self._written: dict[str, float] = {}

    def claim(self, session_id: str, now: float | None = None) -> bool:
        """Whether ``session_id`` is due a write; if so it counts as written ``now``.

        Args:
            session_id: The session (a token's ``sid``).
            now: ``time.monotonic()``, when the caller has it.

        Returns:
            ``True`` at most once per :attr:`every` seconds for one session.
        """
        now = time.monotonic() if now is None else now
        last = self._written.get(session_id)
        if last is not None and now - last < self.every:
            return False
        self._written.pop(session_id, None)  # re-inserted last: the dict's order is write order
        if len(self._written) >= self.max_entries:
            del self._written[next(iter(self._written))]
        self._written[session_id] = now
        return True


async def record_session_use(request: Request[Any, Any, Any]) -> None:
    """``after_response`` hook: write the session's ``last_used_at`` when it is due.

    Runs after the answer was sent, for requests authenticated by an access token. A failure
    is logged and forgotten: the time of last use is a hint, not worth an error.
    """
    user = request.scope.get("user")
    token = request.scope.get("auth")
    if not isinstance(user, CurrentUser) or token is None:
        return
    sid = getattr(token, "extras", {}).get("sid")
    activity: SessionActivity | None = getattr(request.app.state, "session_activity", None)
    if not sid or activity is None or not activity.claim(sid):
        return
    try:
        async with request.app.state.db_config.get_session() as session:
            await user_service_on(session, request.app).record_use(
                UUID(sid), datetime.now(UTC), activity.every
            )
    except Exception as exc:
        logger.warning("could not record a session's use (%s)", type(exc).__name__)
