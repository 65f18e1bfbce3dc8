"""Logging set-up and the request log: one structured line per request, with a request id."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

access_logger = logging.getLogger("app.access")
_REQUEST_ID_KEY = "request_id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_encode = msgspec.json.Encoder().encode
# Request ids need to be unique, not unpredictable: a random per-process prefix and a counter
# cost a fraction of a uuid4 (which reads the OS's random source on every request).
_ID_PREFIX = secrets.token_hex(8)
_next_id = itertools.count(1).__next__


def configure_logging(level: str) -> None:
    """Send application logs to stderr, one line each.

    Args:
        level: The level name for the ``app`` loggers.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    app_logger = logging.getLogger("app")
    app_logger.handlers[:] = [handler]
    app_logger.setLevel(level)
    app_logger.propagate = False
    # Under a bare `uvicorn app.main:app` or `litestar run`, uvicorn logs its own access line
    # with the full path: mask the tokens in it as in ours.
    uvicorn_access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, MaskTokensFilter) for f in uvicorn_access.filters):
        uvicorn_access.addFilter(MaskTokensFilter())


class MaskTokensFilter(logging.Filter):
    """Masks path tokens (and drops the query string) in uvicorn's access-log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's arguments in place; never drops a record.

        Args:
            record: A record of ``uvicorn.access`` (arguments: client, method, path, version, status).

        Returns:
            ``True``.
        """
        if isinstance(record.args, tuple):
            record.args = tuple(
                mask_tokens(arg.split("?", 1)[0]) if isinstance(arg, str) and arg.startswith("/") else arg
                for arg in record.args
            )
        return True


def request_id_of(scope: Scope) -> str:
    """The id given to this request by :class:`RequestLogMiddleware` (``"-"`` outside it)."""
    return scope.get("state", {}).get(_REQUEST_ID_KEY, "-")


class RequestLogMiddleware:
    """Pure ASGI middleware: assigns a request id, echoes it, and logs one JSON line per request.

    Only the method, path (never the query string, which may carry tokens), status, duration
    and id are logged. An ``X-Request-ID`` sent by a proxy is kept when it looks sane.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``, the next ASGI application in the stack."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or f"{_ID_PREFIX}{_next_id():016x}"
        scope.setdefault("state", {})[_REQUEST_ID_KEY] = request_id
        started = time.perf_counter()
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    _encode(
                        {
                            "method": scope["method"],
                            "path": mask_tokens(scope["path"]),
                            "status": status,
                            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                            "request_id": request_id,
                        }
                    ).decode()
                )


_TOKEN_IN_PATH = re.compile(r"/(confirmed_email|confirm_update_password)/[^/]+")


def mask_tokens(path: str) -> str:
    """Mask the tokens that some routes carry in their path (for logs and error messages)."""
    return _TOKEN_IN_PATH.sub(r"/\1/***", path)


def _incoming_request_id(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _VALID_REQUEST_ID.match(candidate) else None
    return None
