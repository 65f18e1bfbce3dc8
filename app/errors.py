"""Central mapping of exceptions to HTTP answers, in Litestar's error shape."""

from __future__ import annotations

import logging
import re
import socket
from typing import TYPE_CHECKING, Annotated, Any

import asyncpg
import msgspec
from advanced_alchemy.exceptions import DuplicateKeyError, IntegrityError, NotFoundError
from litestar import MediaType, Response
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from sqlalchemy import exc as sa_exc

from app.input import explain
from app.logs import mask_tokens, request_id_of

if TYPE_CHECKING:
    from litestar import Request
    from litestar.types import ExceptionHandlersMap

logger = logging.getLogger("app.errors")


class ValidationError(msgspec.Struct, kw_only=True):
    """One rejected input of a ``400``: what is wrong, with which field, and where it was sent."""

    message: str
    key: str | msgspec.UnsetType = msgspec.UNSET
    source: Annotated[
        str | msgspec.UnsetType,
        msgspec.Meta(description="Where the field was sent: `body`, `query`, `path`, `header` or `cookie`."),
    ] = msgspec.UNSET


class ErrorContext(msgspec.Struct, kw_only=True):
    """What a server-side error tells the client: the id to quote when reporting it."""

    request_id: str | msgspec.UnsetType = msgspec.UNSET


class ErrorBody(msgspec.Struct):
    """Litestar's error shape, as documented in the OpenAPI schema.

    ``extra`` lists the rejected inputs of a ``400``; a ``500`` or ``503`` puts the request id
    there (``{"request_id": ...}``, more keys may come); other errors leave it out.
    """

    status_code: int
    detail: str
    extra: list[ValidationError] | ErrorContext | None = None


class AppError(Exception):
    """An error of the application's own rules, carrying the answer it gets.

    Each domain error subclasses it and declares its ``status_code`` and ``detail``; one
    handler (:func:`app_error_handler`) answers every one of them in :class:`ErrorBody`'s
    shape. A ``field`` names the rejected input (a ``400`` lists it in ``extra``). A route that
    serves a browser may answer some of them with an HTML page instead (:data:`ERROR_PAGE`).

    Args:
        detail: What went wrong, for the client (the class's ``detail`` when omitted).
        field: The input at fault, if one is (the class's ``field`` when omitted).
        source: Where that input was sent (``body``, ``query``, ``path``...).
        headers: Headers the answer carries (e.g. ``Retry-After``).
    """

    status_code: int = HTTP_400_BAD_REQUEST
    detail: str = "Bad request"
    field: str | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        field: str | None = None,
        source: str = "body",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Keep what the answer will say."""
        if detail is not None:
            self.detail = detail
        if field is not None:
            self.field = field
        self.source = source
        self.headers = headers or {}
        super().__init__(self.detail)


#: ``opt`` key of a route that answers some errors with an HTML page (a browser's form or link):
#: a callable ``(request, error) -> Response | None``; ``None`` leaves the error to the JSON answer.
ERROR_PAGE = "error_page"


def app_error_handler(request: Request, exc: AppError) -> Response:
    """Answer an :class:`AppError`: the route's HTML page for it if it has one, else its status, detail and field.

    ``extra`` lists the field of a ``400`` only, as :class:`ErrorBody` documents.
    """
    handler = request.scope.get("route_handler")
    page = handler.opt.get(ERROR_PAGE) if handler is not None else None
    if page is not None and (answer := page(request, exc)) is not None:
        return answer
    extra = (
        [{"message": exc.detail, "key": exc.field, "source": exc.source}]
        if exc.field and exc.status_code == HTTP_400_BAD_REQUEST
        else None
    )
    headers = dict(exc.headers)
    if exc.status_code == HTTP_401_UNAUTHORIZED:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return Response(
        _body(exc.status_code, exc.detail, extra),
        status_code=exc.status_code,
        headers=headers,
        media_type=MediaType.JSON,
    )


def error_response(description: str) -> ResponseSpec:
    """An OpenAPI response entry for an error answered in :class:`ErrorBody`'s shape.

    Args:
        description: When this error happens.

    Returns:
        The spec for a route's ``responses`` map.
    """
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


def _body(status_code: int, detail: str, extra: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status_code": status_code, "detail": detail}
    if extra is not None:
        body["extra"] = extra
    return body


_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_]*): (.+)$", re.DOTALL)


def _readable(item: Any, aliases: dict[str, str]) -> Any:
    """One ``extra`` entry of a ``400``, naming the field as the client sent it.

    Litestar files errors raised after decoding (``app.input.field_error``: ``"email: ..."``)
    under the body parameter (``data``), and a renamed query parameter under its Python name
    (``export_format`` for ``format``); both are put back. A failed pattern is said in words
    (:func:`app.input.explain`).
    """
    if not isinstance(item, dict) or not isinstance(item.get("message"), str):
        return item
    item = {**item, "message": explain(item["message"])}
    if item.get("key") == "data" and (named := _FIELD_PREFIX.match(item["message"])):
        item["key"], item["message"] = named.group(1), named.group(2)
    elif item.get("key") in aliases:
        item["key"] = aliases[item["key"]]
    return item


def _aliases(request: Request) -> dict[str, str]:
    """The handler's parameters sent under another name: ``{python_name: sent_name}``."""
    handler = request.scope.get("route_handler")
    if handler is None or not hasattr(handler, "parsed_fn_signature"):
        return {}
    aliases = {}
    for name, parameter in handler.parsed_fn_signature.parameters.items():
        kwarg = parameter.kwarg_definition
        sent = next(
            (
                value
                for attr in ("name", "query", "header", "cookie")
                if (value := getattr(kwarg, attr, None))
            ),
            None,
        )
        if sent and sent != name:
            aliases[name] = sent
    return aliases


def http_exception_handler(request: Request, exc: HTTPException) -> Response:
    """Answer an :class:`HTTPException` in the standard shape, adding the headers the contract wants.

    Args:
        request: The failing request.
        exc: The exception raised by a handler, guard or middleware.

    Returns:
        The error response.
    """
    headers = dict(exc.headers or {})
    if exc.status_code == HTTP_401_UNAUTHORIZED:
        headers.setdefault("WWW-Authenticate", "Bearer")
    if exc.status_code == HTTP_429_TOO_MANY_REQUESTS:
        headers.setdefault("Retry-After", "60")
    extra = exc.extra if exc.extra not in (None, {}, []) else None
    if isinstance(extra, list):
        aliases = _aliases(request)
        extra = [_readable(item, aliases) for item in extra]
    # Litestar's validation detail names the path, which may carry a confirmation/reset token.
    return Response(
        _body(exc.status_code, mask_tokens(exc.detail), extra),
        status_code=exc.status_code,
        headers=headers,
        media_type=MediaType.JSON,
    )


def not_found_handler(_request: Request, _exc: NotFoundError) -> Response:
    """Map a repository ``NotFoundError`` to ``404`` (without the query's details)."""
    return Response(_body(HTTP_404_NOT_FOUND, "Not found"), status_code=HTTP_404_NOT_FOUND)


def file_not_found_handler(_request: Request, _exc: HTTPException) -> Response:
    """A plain ``404`` for the file routes (``/static``, ``/media``), as for an unknown route.

    Litestar's static files handler names the path it looked for, which for a directory is
    the server's absolute file-system path: no client needs to see that.
    """
    return Response(_body(HTTP_404_NOT_FOUND, "Not Found"), status_code=HTTP_404_NOT_FOUND)


def conflict_handler(_request: Request, exc: IntegrityError) -> Response:
    """Map a uniqueness or integrity violation to ``409`` (without the database's message)."""
    detail = "Already exists" if isinstance(exc, DuplicateKeyError) else "Conflicts with existing data"
    return Response(_body(HTTP_409_CONFLICT, detail), status_code=HTTP_409_CONFLICT)


def too_deep_handler(_request: Request, _exc: RecursionError) -> Response:
    """A JSON body nested too deeply for the decoder is bad input (``400``), not a server error."""
    return Response(
        _body(HTTP_400_BAD_REQUEST, "The JSON body is nested too deeply"), status_code=HTTP_400_BAD_REQUEST
    )


#: Errors that mean "the database cannot be reached or is going away", not a bug.
_UNREACHABLE = (
    ConnectionError,  # refused, reset, aborted
    TimeoutError,  # a connect or a read that timed out
    socket.gaierror,  # the database's host name does not resolve
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # a connection closed under a query
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,  # starting up or shutting down
    sa_exc.OperationalError,  # SQLite cannot open its file or is locked; a lost connection
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection came free
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the database is out of reach.

    Args:
        exc: The exception a request ended with.

    Returns:
        ``True`` for connection failures, which deserve a ``503`` rather than a ``500``.
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, _UNREACHABLE):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def internal_error_handler(request: Request, exc: Exception) -> Response:
    """Answer ``503`` when the database is out of reach; otherwise log and answer ``500``.

    A ``500`` is a bug: it is logged with the request id and its traceback, and the client
    gets the id, nothing internal. An outage is not a bug: the client is told to retry.
    """
    request_id = request_id_of(request.scope)
    if database_unavailable(exc):
        logger.warning(
            "database unavailable (%s) on %s %s (request_id=%s)",
            type(exc).__name__,
            request.method,
            mask_tokens(request.url.path),
            request_id,
        )
        return Response(
            _body(
                HTTP_503_SERVICE_UNAVAILABLE,
                "The service is briefly unavailable: try again",
                {"request_id": request_id},
            ),
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    logger.error(
        "unhandled %s on %s %s (request_id=%s)",
        type(exc).__name__,
        request.method,
        mask_tokens(request.url.path),  # a confirmation or reset token must not reach the log
        request_id,
        exc_info=exc,
    )
    return Response(
        _body(HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error", {"request_id": request_id}),
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
    )


#: The handlers registered on the application.
EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTPException: http_exception_handler,
    AppError: app_error_handler,
    NotFoundError: not_found_handler,
    IntegrityError: conflict_handler,
    RecursionError: too_deep_handler,
    Exception: internal_error_handler,
}
