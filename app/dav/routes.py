"""The CardDAV routes of the application: the ``/dav`` mount and the RFC 6764 well-known redirect.

Both are ASGI handlers: WebDAV's methods (``PROPFIND``, ``REPORT``...) are not HTTP methods
Litestar routes, and clients ask the well-known path with ``PROPFIND`` too. They are left out
of the JWT middleware (``exclude_from_auth``: ``/dav/`` checks HTTP Basic credentials itself)
and out of the OpenAPI document, which describes the JSON API only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.handlers import asgi

from app.dav.handler import PREFIX, CardDav, well_known

if TYPE_CHECKING:
    from litestar.types import Receive, Scope, Send

#: Handler ``opt`` of the DAV routes: no bearer token (see :mod:`app.security.auth`).
DAV_OPT = {"exclude_from_auth": True}

_server = CardDav()


@asgi(PREFIX, is_mount=True, copy_scope=True, opt=DAV_OPT)
async def dav_mount(scope: Scope, receive: Receive, send: Send) -> None:
    """Every request under ``/dav``, answered by :class:`~app.dav.handler.CardDav`."""
    await _server(scope, receive, send)


@asgi("/.well-known/carddav", opt=DAV_OPT)
async def well_known_carddav(scope: Scope, receive: Receive, send: Send) -> None:
    """``/.well-known/carddav`` → ``301 /dav/`` (RFC 6764, section 5), whatever the method."""
    await well_known(scope, receive, send)


#: The routes :func:`app.main.create_app` registers.
DAV_ROUTES = [dav_mount, well_known_carddav]
