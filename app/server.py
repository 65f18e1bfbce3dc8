"""The HTTP server: ``python -m app`` runs uvicorn the one way this service is meant to run.

- No proxy headers: the client address is the socket peer unless the app's own
  ``TRUSTED_PROXIES`` says otherwise (uvicorn would trust ``X-Forwarded-For`` from 127.0.0.1).
- No uvicorn access log: the app writes its own line per request, with tokens masked.
- A bounded request head: at most ``MAX_REQUEST_HEADERS`` fields and
  ``MAX_REQUEST_HEAD_BYTES`` bytes of request line and headers, else ``431`` and the
  connection closes (uvicorn's httptools protocol buffers any amount).
- A graceful stop: on ``SIGTERM`` ``/readyz`` fails first (``SHUTDOWN_DELAY``), then requests
  in flight get ``SHUTDOWN_TIMEOUT`` seconds (:mod:`app.health.probes`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import uvicorn
from litestar.plugins import CLIPluginProtocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.config import get_settings
from app.logs import configure_logging

if TYPE_CHECKING:
    import click

_END_OF_HEAD = b"\r\n\r\n"
_TOO_LARGE_BODY = b"Request header fields too large"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_TOO_LARGE_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _TOO_LARGE_BODY
)


class _TooManyHeaders(Exception):
    """Raised from the parser callback; the parser turns it into a parse error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on each request's head (``431`` past it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self._max_head_bytes = settings.max_request_head_bytes
        self._max_headers = settings.max_request_headers
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._tail = b""  # the last bytes seen, for a head end split across reads
        self._refused = False

    def data_received(self, data: bytes) -> None:
        """Count the bytes of the head being read before the parser buffers them."""
        if self._in_head:
            seen = self._tail + data
            end = seen.find(_END_OF_HEAD)
            self._head_bytes += len(data) if end < 0 else end + len(_END_OF_HEAD) - len(self._tail)
            self._tail = seen[-(len(_END_OF_HEAD) - 1) :]
            if self._head_bytes > self._max_head_bytes:
                self._refuse()
                return
        super().data_received(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count header fields; one too many ends the request."""
        self._header_count += 1
        if self._header_count > self._max_headers:
            self._refused = True
            raise _TooManyHeaders
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is read: its bytes no longer count."""
        self._in_head, self._head_bytes, self._header_count, self._tail = False, 0, 0, b""
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The next bytes start a new request's head."""
        self._in_head = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """Answer ``431`` when the parse error was ours (too many fields), else uvicorn's ``400``."""
        if self._refused:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        self._refused = True
        if not self.transport.is_closing():
            self.transport.write(_TOO_LARGE)
            self.transport.close()


def main() -> None:
    """Serve ``app.main:app`` with uvicorn on the configured host, port and workers."""
    configure_logging("INFO")  # so that a warning while reading the settings is a JSON line too
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        http=BoundedHttpToolsProtocol,
        proxy_headers=False,
        access_log=False,
        log_config=None,  # uvicorn's lines take the app's format (app/logs.py)
        server_header=False,
        log_level=settings.log_level.lower(),
        # After SIGTERM (and SHUTDOWN_DELAY, see app/health/probes.py): how long requests in
        # flight may take before they are cancelled.
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )


class ServerCLIPlugin(CLIPluginProtocol):
    """Makes ``litestar run`` trust no proxy header either (registered in ``create_app``)."""

    def on_cli_init(self, cli: click.Group) -> None:
        """Tell the uvicorn that ``litestar run`` starts to trust no forwarding proxy.

        ``litestar run`` starts uvicorn with its defaults, which take ``X-Forwarded-For`` from
        127.0.0.1; uvicorn reads ``FORWARDED_ALLOW_IPS`` when it starts, so an empty list
        set here (unless the operator set one) leaves the client address to the app.

        Args:
            cli: Litestar's root command group (unused).
        """
        os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
