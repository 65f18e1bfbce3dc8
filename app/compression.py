"""gzip for the responses that gain from it, and never for those that must not be compressed.

Compressed: a whole (not streamed) response of at least :data:`MINIMUM_SIZE` bytes whose type
is text (JSON, HTML, YAML, CSV, vCard...), to a client that accepts gzip. Left alone:

- ``/api/auth/*``: token responses put a secret next to text an attacker may choose
  (BREACH); none of them is large anyway.
- responses already encoded (the precompressed API UI bundle, see :mod:`app.openapi_ui`),
  streamed ones (files, exports) and images;
- responses with an ``ETag``: the tag names the stored representation, which ``If-Match``
  compares byte for byte (a single contact is small anyway).

Not Litestar's ``CompressionConfig``: its middleware builds a gzip stream (~50 µs) for every
response of a gzip-accepting client, small ones included, and compresses any content type
and any stream (the 4.8 MB API UI bundle at each download). This one costs a header scan
below the threshold and compresses each body in one call.
"""

from __future__ import annotations

import gzip
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

#: Smallest body worth compressing, in bytes (below a packet or two, gzip saves nothing).
MINIMUM_SIZE = 1024
#: zlib level: 6 is the usual balance (9 is several times slower for ~2 % less).
LEVEL = 6
#: Paths never compressed (see the module docstring).
EXCLUDED_PREFIXES = ("/api/auth/",)
#: Content types worth compressing (``text/*`` always is).
COMPRESSIBLE = (
    b"application/json",
    b"application/problem+json",
    b"application/vnd.oai.openapi",
    b"application/yaml",
    b"application/x-yaml",
    b"application/javascript",
    b"image/svg+xml",
)


def accepts_gzip(scope: Scope) -> bool:
    """Whether the request's ``Accept-Encoding`` allows gzip (``gzip;q=0`` does not).

    Args:
        scope: The request's scope.

    Returns:
        ``True`` when a gzip body may be sent.
    """
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            for item in value.lower().split(b","):
                coding, *params = item.split(b";")
                if coding.strip() in (b"gzip", b"*"):
                    return _quality(params) > 0
    return False


def _quality(params: list[bytes]) -> float:
    for param in params:
        key, _, value = param.strip().partition(b"=")
        if key == b"q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def _compressible(headers: list[tuple[bytes, bytes]]) -> bool:
    content_type = b""
    for name, value in headers:
        if name in (b"content-encoding", b"etag"):
            return False
        if name == b"content-type":
            content_type = value.lower()
    return content_type.startswith(b"text/") or content_type.startswith(COMPRESSIBLE)


class GzipMiddleware:
    """Pure ASGI wrapper compressing whole text responses of at least :data:`MINIMUM_SIZE` bytes.

    Args:
        app: The application to wrap.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if (
            scope["type"] != "http"
            or scope["method"] == "HEAD"
            or scope["path"].startswith(EXCLUDED_PREFIXES)
            or not accepts_gzip(scope)
        ):
            await self.app(scope, receive, send)
            return
        start: Message | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message  # held until the first body shows whether it is whole
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            held, start = start, None
            body = message.get("body", b"")
            headers = list(held.get("headers", []))
            if not message.get("more_body") and len(body) >= MINIMUM_SIZE and _compressible(headers):
                body = gzip.compress(body, LEVEL, mtime=0)
                headers = [(n, v) for n, v in headers if n not in (b"content-length", b"vary")] + [
                    (b"content-encoding", b"gzip"),
                    (b"content-length", str(len(body)).encode()),
                    (b"vary", _vary(held.get("headers", []))),
                ]
                held = {**held, "headers": headers}
                message = {**message, "body": body}
            await send(held)
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _vary(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The response's ``Vary`` with ``Accept-Encoding`` added."""
    present = [v for n, v in headers if n == b"vary"]
    return b", ".join([*present, b"Accept-Encoding"])
