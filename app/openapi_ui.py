"""The interactive API reference (Scalar) served entirely from this service.

Litestar's stock :class:`~litestar.openapi.plugins.ScalarRenderPlugin` loads its script,
stylesheet and favicon from a CDN and passes options through an inline ``<script>``. Neither
works offline nor under a strict Content-Security-Policy, so the page here is rendered with
only same-origin resources: the Scalar standalone bundle vendored under ``app/static/scalar``
(see the README there for its version and licence) and options handed over in the
``data-configuration`` attribute that Scalar reads itself. ``contrast.css`` there sets Scalar's
colour variables to values with WCAG AA contrast (checked by the browser accessibility audit).
The CSP is set in one place, :mod:`app.security.headers`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
from dataclasses import replace
from functools import cache
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from anyio import to_thread
from litestar import Request, get
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, OAuthFlows
from litestar.response import Response
from litestar.static_files import create_static_files_router

from app.compression import accepts_gzip
from app.errors import file_not_found_handler

if TYPE_CHECKING:
    from litestar import Litestar, Router
    from litestar.security.base import AbstractSecurityConfig

#: Where the files of ``app/static`` are served.
STATIC_PATH = "/static"
STATIC_DIR = Path(__file__).parent / "static"
#: Version of the vendored ``@scalar/api-reference`` bundle (``app/static/scalar/README.md``).
SCALAR_VERSION = "1.76.0"

#: The Scalar bundle, also served precompressed at a content-addressed URL (:func:`scalar_bundle`).
SCALAR_BUNDLE = STATIC_DIR / "scalar" / "standalone.js"
#: Where content-addressed assets are served: their URL changes with their bytes, so they
#: can be cached for a year (``immutable``: not even revalidated).
ASSETS_PATH = "/assets"
IMMUTABLE = "public, max-age=31536000, immutable"

#: Scalar configuration. Everything that would reach another host is switched off: the
#: default fonts (fonts.scalar.com), telemetry, the AI agent, the developer tools and the
#: "Open API Client" link (which hands the schema's URL to client.scalar.com). "Test Request"
#: stays: it calls this service from the page.
SCALAR_OPTIONS: dict[str, Any] = {
    "withDefaultFonts": False,
    "telemetry": False,
    "agent": {"disabled": True},
    "showDeveloperTools": "never",
    "hideClientButton": True,
    "persistAuth": False,
}


class LocalScalarRenderPlugin(ScalarRenderPlugin):
    """Scalar with same-origin assets only, and no inline script or style."""

    def __init__(self, *, path: str = "/scalar", options: dict[str, Any] | None = None) -> None:
        """Serve Scalar at ``path`` (under the OpenAPI path) with ``options``.

        Args:
            path: Path of the page below the OpenAPI path (the first render plugin is also
                served at the OpenAPI path itself).
            options: Scalar configuration; defaults to :data:`SCALAR_OPTIONS`.
        """
        super().__init__(
            js_url=scalar_bundle_url(),
            css_url=f"{STATIC_PATH}/scalar/page.css?v={SCALAR_VERSION}",
            path=path,
            options=SCALAR_OPTIONS if options is None else options,
            favicon=f'<link rel="icon" type="image/svg+xml" href="{STATIC_PATH}/favicon.svg">',
            style="",
        )

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        """Render the page that boots Scalar on the service's OpenAPI document.

        Args:
            request: The request for the page.
            openapi_schema: The OpenAPI document as a dictionary.

        Returns:
            The HTML page.
        """
        title = escape(str(openapi_schema["info"]["title"]))
        spec_url = escape(self.get_openapi_json_route(request))
        # The script element below has no body and no src, so browsers don't run it (and
        # CSP has nothing to block); Scalar finds it by id and reads both attributes.
        configuration = escape(msgspec.json.encode(self.options or {}).decode())
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{self.favicon}
<link rel="stylesheet" href="{self.css_url}">
<link rel="stylesheet" href="{STATIC_PATH}/scalar/contrast.css?v={SCALAR_VERSION}">
</head>
<body>
<noscript><p class="noscript">The API reference needs JavaScript. The raw schema is at
<a href="{spec_url}">{spec_url}</a>.</p></noscript>
<script id="api-reference" data-url="{spec_url}" data-configuration="{configuration}"></script>
<script src="{self.js_url}"></script>
</body>
</html>
""".encode()


@cache
def scalar_digest() -> str:
    """The first 16 hex digits of the bundle's SHA-256 (read once per process, ~20 ms)."""
    return hashlib.sha256(SCALAR_BUNDLE.read_bytes()).hexdigest()[:16]


def scalar_bundle_url() -> str:
    """The content-addressed URL of the Scalar bundle."""
    return f"{ASSETS_PATH}/scalar/{scalar_digest()}/standalone.js"


class _Precompressed:
    """A file's bytes and their gzip form, made once on first use (off the event loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity = b""
        self.gzip = b""
        self._lock: asyncio.Lock | None = None

    async def load(self) -> _Precompressed:
        if self.gzip:
            return self
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self.gzip:
                identity = await to_thread.run_sync(self.path.read_bytes)
                # ~1 s of one core for 4.8 MB -> 1.4 MB, once per process.
                self.gzip = await to_thread.run_sync(lambda: gzip.compress(identity, 6, mtime=0))
                self.identity = identity
        return self


_SCALAR = _Precompressed(SCALAR_BUNDLE)


@get(
    f"{ASSETS_PATH}/scalar/{{digest:str}}/standalone.js",
    include_in_schema=False,
    exclude_from_auth=True,
    name="scalar-bundle",
)
async def scalar_bundle(request: Request, digest: str) -> Response[bytes]:
    """The Scalar bundle, gzip-compressed once in advance, cacheable for good.

    Args:
        request: The request (its ``Accept-Encoding``).
        digest: The content digest in the URL; only the current bundle's is served.

    Returns:
        The bundle, gzip-encoded when the client accepts it.

    Raises:
        NotFoundException: The digest is not the bundle's (an old page, a guess).
    """
    if digest != scalar_digest():
        raise NotFoundException
    bundle = await _SCALAR.load()
    headers = {"Cache-Control": IMMUTABLE, "Vary": "Accept-Encoding", "ETag": f'"{digest}"'}
    if accepts_gzip(request.scope):
        headers["Content-Encoding"] = "gzip"
        return Response(bundle.gzip, media_type="text/javascript; charset=utf-8", headers=headers)
    return Response(bundle.identity, media_type="text/javascript; charset=utf-8", headers=headers)


def static_files_router() -> Router:
    """The router serving ``app/static`` (the Scalar bundle, the pages' stylesheet).

    Returns:
        A router to register with the application; public, and left out of the schema.
    """
    return create_static_files_router(
        path=STATIC_PATH,
        directories=[STATIC_DIR],
        name="static",
        # A day: the Scalar URL carries its version; the small stylesheet may lag a deploy by a day.
        cache_control=CacheControlHeader(max_age=86400, public=True),
        include_in_schema=False,
        opt={"exclude_from_auth": True},
        exception_handlers={NotFoundException: file_not_found_handler},
    )


def oauth2_components(auth: AbstractSecurityConfig[Any, Any]) -> Components:
    """The auth backend's security schemes with only the fields OpenAPI defines for them.

    Litestar describes its OAuth2 password bearer scheme with the ``name``/``in`` of an API key
    and the ``scheme``/``bearerFormat`` of an HTTP scheme as well. Scalar then takes it for an
    API key and offers no password login; without them it shows the password flow's form.
    Passed as the OpenAPI config's components, these replace the backend's (same names).
    OpenAPI 3.1 requires ``scopes`` on every flow: the service has none, so it is ``{}``.

    Args:
        auth: The application's security backend.

    Returns:
        Components holding the cleaned security schemes.
    """
    schemes = auth.openapi_components.security_schemes or {}
    return Components(
        security_schemes={
            name: replace(
                scheme,
                name=None,
                security_scheme_in=None,
                scheme=None,
                bearer_format=None,
                flows=_with_scopes(scheme.flows),
            )
            if getattr(scheme, "type", None) == "oauth2"
            else scheme
            for name, scheme in schemes.items()
        }
    )


def _with_scopes(flows: OAuthFlows | None) -> OAuthFlows | None:
    if flows is None:
        return None
    return replace(
        flows,
        **{
            name: replace(flow, scopes=flow.scopes or {})
            for name in ("implicit", "password", "client_credentials", "authorization_code")
            if (flow := getattr(flows, name)) is not None
        },
    )


#: The operations of an OpenAPI path item.
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


#: The handler ``opt`` key that lets a route through without a token (Litestar's default).
PUBLIC_OPT = "exclude_from_auth"


def public_operations(app: Litestar) -> set[tuple[str, str]]:
    """The ``(method, path)`` of the operations reachable without a token, as the document names them.

    A route is public when its handler (or a layer above it) says ``exclude_from_auth``.

    Args:
        app: The application.

    Returns:
        Lower-case methods and document paths (``{token}``, not ``{token:str}``).
    """
    public: set[tuple[str, str]] = set()
    for route in app.routes:
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)
        for handler in getattr(route, "route_handlers", ()):
            if handler.opt.get(PUBLIC_OPT):
                public |= {(method.lower(), path) for method in handler.http_methods}
    return public


def mark_public_operations(app: Litestar) -> None:
    """Start-up hook giving ``security: []`` to the operations the auth backend lets through.

    Litestar puts the backend's requirement on the whole document, so without this the API
    reference marks login, registration and the health check "Auth Required" and sends a token
    to them as to everything else. It runs before the first request renders the schema.

    Args:
        app: The application.
    """
    paths = app.openapi_schema.paths or {}
    for method, path in public_operations(app):
        item = paths.get(path)
        if method in _METHODS and (operation := getattr(item, method, None)) is not None:
            operation.security = []
