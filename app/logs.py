"""Logging: one format for every logger, and the request log (one line per request, with an id).

Every logger of the process — the app's, uvicorn's (server and access), SQLAlchemy's,
asyncpg's, the mail sender's — propagates to one handler on the root logger, set up here and
nowhere else. With ``LOG_FORMAT=json`` (the default) each record is one JSON object on one
line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``request_id`` inside a
request (and ``trace_id``, ``span_id`` while a trace span is current), the access line's own
fields, and ``exception`` for a traceback. ``LOG_FORMAT=console`` writes the same as readable
text. Tokens are masked in every line (:func:`mask_secrets`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import itertools
import logging
import re
import secrets
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable

    from litestar.types import ASGIApp, Message, Receive, Scope, Send

LogFormat = Literal["json", "console"]

access_logger = logging.getLogger("app.access")
_root = logging.getLogger()
#: The JSON handler :func:`stderr_handler` made last (``None`` for the console format).
_json_handler: logging.Handler | None = None
_REQUEST_ID_KEY = "request_id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_encode = msgspec.json.Encoder().encode
# Request ids need to be unique, not unpredictable: a random per-process prefix and a counter
# cost a fraction of a uuid4 (which reads the OS's random source on every request).
_ID_PREFIX = secrets.token_hex(8)
_next_id = itertools.count(1).__next__

#: The id of the request being served (``None`` outside a request), for every log line.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
#: The current span's trace and span ids (hex), set by :mod:`app.tracing` while tracing is on;
#: ``None`` costs nothing when it is off (and needs no OpenTelemetry package).
trace_ids: Callable[[], tuple[str, str] | None] | None = None
#: ``extra=`` of a record that must keep its tokens: the development mail log, whose purpose is
#: to show the confirmation and reset links.
UNMASKED = {"unmasked": True}
#: Loggers that follow ``LOG_LEVEL``; every other library logs warnings and worse only.
_LEVELLED = ("app", "uvicorn", "uvicorn.error", "uvicorn.access", "py.warnings")


def configure_logging(level: str, fmt: LogFormat = "json") -> None:
    """Send every logger's records to stderr, one line each, in ``fmt``.

    Idempotent: each call replaces the handler set up by the previous one (the test suite
    builds many apps in one process), and leaves other handlers (pytest's) in place.

    Args:
        level: The level name for the app's and uvicorn's loggers.
        fmt: ``json`` (one object per line) or ``console`` (readable text).
    """
    handler = stderr_handler(fmt)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _StderrHandler)] + [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in _LEVELLED:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.propagate and not logger.handlers:
            continue  # uvicorn's access log switched off (`python -m app`): uvicorn asks hasHandlers()
        # uvicorn's own config gives its loggers handlers (under a bare `uvicorn` or `litestar
        # run`): drop them so that its lines take this format too.
        logger.handlers.clear()
        logger.propagate = True
    # A Litestar app built with its default logging config gives the ``litestar`` logger a
    # handler of its own, in its own format: lines of every logger take this one.
    litestar_logger = logging.getLogger("litestar")
    litestar_logger.handlers.clear()
    litestar_logger.propagate = True
    logging.captureWarnings(True)
    # Under a bare `uvicorn app.main:app` or `litestar run`, uvicorn logs its own access line
    # with the full path: drop its query string and mask its tokens as in ours.
    uvicorn_access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, MaskTokensFilter) for f in uvicorn_access.filters):
        uvicorn_access.addFilter(MaskTokensFilter())


def uvicorn_log_config(level: str, fmt: LogFormat = "json") -> dict[str, Any]:
    """The same set-up as :func:`configure_logging`, as the ``dictConfig`` uvicorn applies.

    uvicorn applies it in each worker process before it imports the app, so that a worker
    failing to start says why in the same format.

    Args:
        level: The level name for uvicorn's loggers.
        fmt: ``json`` or ``console``.

    Returns:
        A :func:`logging.config.dictConfig` dictionary.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"()": stderr_handler, "fmt": fmt}},
        "root": {"handlers": ["stderr"], "level": max(logging.WARNING, logging.getLevelName(level))},
        "loggers": {name: {"level": level, "propagate": True} for name in _LEVELLED},
    }


def stderr_handler(fmt: LogFormat = "json") -> logging.Handler:
    """The one handler of the process: standard error, in ``fmt``.

    Args:
        fmt: ``json`` or ``console``.

    Returns:
        The handler.
    """
    global _json_handler
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    _json_handler = handler if fmt == "json" else None
    return handler


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:  # type: ignore[override]
        """The current standard error."""
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


_second_text: tuple[int, str] = (-1, "")


def _utc_time(created: float) -> str:
    """``created`` as ISO 8601 UTC with milliseconds; the text up to the second is reused within it."""
    global _second_text
    second = int(created)
    cached = _second_text
    if cached[0] != second:
        cached = _second_text = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    # Rounded to the microsecond first, as datetime does (x.042 is stored as x.04199...).
    millis = min(round((created - second) * 1_000_000) // 1000, 999)
    return f"{cached[1]}.{millis:03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields every format shows: the standard ones, the request id and any extras."""
    message = record.getMessage()
    if not getattr(record, "unmasked", False):
        message = mask_secrets(message)
    fields: dict[str, Any] = {
        "time": _utc_time(record.created),
        "level": record.levelname,
        "logger": record.name,
        "message": message,
    }
    request_id = getattr(record, "request_id", None) or current_request_id.get()
    if request_id is not None:
        fields["request_id"] = request_id
    if trace_ids is not None and (ids := trace_ids()) is not None:
        fields["trace_id"], fields["span_id"] = ids
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        fields.update(extra)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in the message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record``.

        Args:
            record: The record.

        Returns:
            The JSON text.
        """
        fields = _fields(record)
        if record.exc_info:
            fields["exception"] = mask_secrets(self.formatException(record.exc_info))
        if record.stack_info:
            fields["stack"] = mask_secrets(self.formatStack(record.stack_info))
        return _encode(fields).decode()


class ConsoleFormatter(logging.Formatter):
    """Readable lines for development: ``time LEVEL logger [request id] message key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record``.

        Args:
            record: The record.

        Returns:
            The text (a traceback, when there is one, on the lines after it).
        """
        fields = _fields(record)
        head = f"{fields.pop('time')} {fields.pop('level'):<7} {fields.pop('logger')}"
        request_id = fields.pop("request_id", None)
        message = fields.pop("message")
        line = f"{head} [{request_id}] {message}" if request_id else f"{head} {message}"
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + mask_secrets(self.formatException(record.exc_info))
        return line


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

    def __init__(
        self, app: ASGIApp, observe: Callable[[str, str | None, int, float], None] | None = None
    ) -> None:
        """Wrap ``app``, the next ASGI application in the stack.

        Args:
            app: The application.
            observe: Called with each request's method, route template (``None`` when no
                route matched), status and seconds (the metrics, when they are on).
        """
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or f"{_ID_PREFIX}{_next_id():016x}"
        scope.setdefault("state", {})[_REQUEST_ID_KEY] = request_id
        context = current_request_id.set(request_id)
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
            duration = time.perf_counter() - started
            if self.observe is not None:
                self.observe(scope["method"], scope.get("path_template"), status, duration)
            if access_logger.isEnabledFor(logging.INFO):
                if _alone_on_stderr():
                    ids = trace_ids() if trace_ids is not None else None
                    _access_lines.add(
                        (time.time(), scope["method"], scope["path"], status, duration, request_id, ids)
                    )
                else:
                    access_logger.handle(
                        AccessRecord(scope["method"], mask_tokens(scope["path"]), status, duration)
                    )
            current_request_id.reset(context)


def _alone_on_stderr() -> bool:
    """Whether the access line would reach only our JSON handler, unfiltered (production).

    Then the line is written by :class:`_AccessLines`, not through ``logging``; anything else
    listening (pytest's capture, an added handler or filter, the console format) sees records.
    """
    handlers = _root.handlers
    return (
        len(handlers) == 1
        and handlers[0] is _json_handler
        and not _json_handler.filters
        and not _root.filters
        and not access_logger.handlers
        and not access_logger.filters
        and access_logger.propagate
        and _json_handler.level <= logging.INFO
    )


#: What :class:`_AccessLines` keeps of a request: time, method, path (unmasked), status,
#: seconds, request id, and the trace and span ids (or ``None``).
AccessEntry = tuple[float, str, str, int, float, str, tuple[str, str] | None]


def _access_json(
    created: float,
    method: str,
    path: str,
    status: int,
    duration: float,
    request_id: str,
    ids: tuple[str, str] | None,
) -> bytes:
    """The access line exactly as :class:`JsonFormatter` renders an :class:`AccessRecord`."""
    path = mask_secrets(mask_tokens(path))
    fields: dict[str, Any] = {
        "time": _utc_time(created),
        "level": "INFO",
        "logger": "app.access",
        "message": f"{method} {path} {status}",
        "request_id": request_id,
    }
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    fields.update(method=method, path=path, status=status, duration_ms=round(duration * 1000, 2))
    return _encode(fields)


#: Longest time an access line waits to be written with others (one write for all of them).
ACCESS_FLUSH_SECONDS = 0.05
#: Queued lines that trigger a write at once.
ACCESS_FLUSH_LINES = 256


class _AccessLines:
    """Access lines rendered and written together, at most :data:`ACCESS_FLUSH_SECONDS` late.

    A request only queues its fields: lines rendered in one loop and written in one call cost a
    fraction of a line rendered and written per request. Shutdown and interpreter exit write
    what is queued (:func:`flush_access_lines`).
    """

    def __init__(self) -> None:
        self.entries: list[AccessEntry] = []

    def add(self, entry: AccessEntry) -> None:
        """Queue ``entry``; the first one queued schedules the write."""
        entries = self.entries
        if not entries:
            try:
                asyncio.get_running_loop().call_later(ACCESS_FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no loop (a synchronous caller): write at once
                entries.append(entry)
                self.flush()
                return
        entries.append(entry)
        if len(entries) >= ACCESS_FLUSH_LINES:
            self.flush()  # the scheduled call then finds nothing, or the next lines

    def flush(self) -> None:
        """Render and write every queued line."""
        entries, self.entries = self.entries, []
        if entries:
            data = b"\n".join([_access_json(*entry) for entry in entries]) + b"\n"
            stream = sys.stderr
            binary = getattr(stream, "buffer", None)
            if binary is None:
                stream.write(data.decode())
                stream.flush()
            else:
                stream.flush()  # text written before stays before
                binary.write(data)
                binary.flush()


_access_lines = _AccessLines()
atexit.register(_access_lines.flush)


async def flush_access_lines(_app: Any = None) -> None:
    """Shutdown hook: write the access lines still queued."""
    _access_lines.flush()


class AccessRecord(logging.LogRecord):
    """The access line's record, made in a fraction of a generic record's time.

    It still goes through the logger's filters and handlers like any record. A generic
    ``LogRecord`` looks up the caller's frame, thread and process on every request, most of its
    cost: none of them is shown, so they are fixed values here.

    Args:
        method: The request's method.
        path: Its path, tokens masked.
        status: The status sent.
        duration: Seconds from the request's start to its end.
    """

    #: The attributes every record has (formatters read them from the instance's dict).
    FIXED: ClassVar[dict[str, Any]] = {
        "name": access_logger.name,
        "levelno": logging.INFO,
        "levelname": "INFO",
        "msg": "%s %s %d",
        "pathname": __file__,
        "filename": "logs.py",
        "module": "logs",
        "lineno": 0,
        "funcName": "access",
        "exc_info": None,
        "exc_text": None,
        "stack_info": None,
        "thread": None,
        "threadName": None,
        "process": None,
        "processName": None,
        "taskName": None,
    }

    def __init__(self, method: str, path: str, status: int, duration: float) -> None:
        self.__dict__.update(self.FIXED)
        self.created = created = time.time()
        self.msecs = (created - int(created)) * 1000
        self.relativeCreated = (created - logging._startTime) * 1000
        self.args = (method, path, status)
        self.fields = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(duration * 1000, 2),
        }


_TOKEN_IN_PATH = re.compile(r"/(confirmed_email|confirm_update_password|confirm_email_change)/[^/]+")


def mask_tokens(path: str) -> str:
    """Mask the tokens that some routes carry in their path (for logs and error messages)."""
    return _TOKEN_IN_PATH.sub(r"/\1/***", path) if "/confirm" in path else path


#: A path token inside free text: it ends at a space, a quote or a query string too.
_TOKEN_IN_TEXT = re.compile(r"/(confirmed_email|confirm_update_password|confirm_email_change)/[^/\s\"'?#<>]+")
#: Anything shaped like a JWT (header and payload are base64url JSON objects: ``eyJ``).
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def mask_secrets(text: str) -> str:
    """Mask path tokens and anything shaped like a JWT in a log line.

    Args:
        text: A rendered message or traceback.

    Returns:
        The text with each token replaced by ``***``.
    """
    if "/confirm" in text:
        text = _TOKEN_IN_TEXT.sub(r"/\1/***", text)
    if "eyJ" in text:
        text = _JWT.sub("***", text)
    return text


def _incoming_request_id(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _VALID_REQUEST_ID.match(candidate) else None
    return None
