"""The OpenAPI document as generated clients need it: short names, exact types, every answer.

Litestar builds the document from the handlers. Two things it cannot be told per handler are
settled here, once, for every route (so routes added later follow the same rules):

* operation ids are the handler's name (or its ``operation_id=``), not path and name glued;
* :func:`tidy_document` rewrites what generators misread: a single-branch ``oneOf`` becomes
  its branch, ``X | None`` becomes ``type: [X, "null"]`` with its constraints beside it, query,
  path and header parameters are never nullable, a ``204`` has no body, every error answers
  the one ``ErrorBody`` schema, every header has a schema, the headers the error handlers
  send (``WWW-Authenticate`` on ``401``, ``Retry-After`` on ``429`` and ``503``) are declared,
  and every operation with a body declares the ``415`` of :func:`app.http.require_declared_body`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from litestar.openapi.spec import OpenAPIHeader, OpenAPIMediaType, OpenAPIResponse, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.handlers import HTTPRouteHandler
    from litestar.openapi.spec import OpenAPI, Operation
    from litestar.types import Method
    from litestar.types.internal_types import PathParameterDefinition

#: The operations of an OpenAPI path item.
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: The error schema every error response points to (:class:`app.errors.ErrorBody`).
ERROR_BODY = Reference(ref="#/components/schemas/ErrorBody")
JSON = "application/json"

#: Litestar's description of the ``400`` it adds to every handler with parameters or a body.
_STOCK_400 = "Bad request syntax or unsupported method"
_INVALID_INPUT = "Invalid input: each rejected field is listed in `extra` (message, key, source)"
_UNAVAILABLE = "The database is briefly unreachable: try again after `Retry-After` seconds"
_UNAUTHORIZED = "Missing, invalid or expired access token"
_WRONG_MEDIA_TYPE = "The body is not in the media type this operation takes"

_RETRY_AFTER = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.INTEGER, minimum=1), description="Seconds to wait before trying again."
)
_WWW_AUTHENTICATE = OpenAPIHeader(
    schema=Schema(type=OpenAPIType.STRING, examples=["Bearer"]),
    description="`Bearer`: send an access token from login.",
)
#: Headers the error handlers add to an error, by status (see :mod:`app.errors`).
ERROR_HEADERS: dict[str, dict[str, OpenAPIHeader | Reference]] = {
    "401": {"WWW-Authenticate": _WWW_AUTHENTICATE},
    "429": {"Retry-After": _RETRY_AFTER},
    "503": {"Retry-After": _RETRY_AFTER},
}


def operation_id(
    route_handler: HTTPRouteHandler,
    _http_method: Method,
    _path_components: list[str | PathParameterDefinition],
) -> str:
    """The operation id of a handler without one of its own: the handler function's name.

    Used as the OpenAPI config's ``operation_id_creator``; a handler whose function name is
    not what a client should call it sets ``operation_id=`` in its decorator instead.

    Args:
        route_handler: The handler.
        _http_method: Its method (unused: one handler serves one method here).
        _path_components: Its path (unused: the name is enough and stays stable).

    Returns:
        The id, e.g. ``list_contacts``.
    """
    return route_handler.handler_name


def tidy_document(document: OpenAPI) -> OpenAPI:
    """Rewrite ``document`` in place as described in this module's docstring (idempotent).

    Args:
        document: The application's OpenAPI document.

    Returns:
        The same document.
    """
    components = document.components
    for schema in (components.schemas or {}).values():
        _tidy_schema(schema)
    for item in (document.paths or {}).values():
        for method in METHODS:
            if (operation := getattr(item, method, None)) is not None:
                _tidy_operation(operation)
    return document


def tidy_document_hook(app: Litestar) -> None:
    """A start-up hook applying :func:`tidy_document` before the first request renders it.

    Args:
        app: The application.
    """
    tidy_document(app.openapi_schema)
    _close_strict_bodies(app)


def _close_strict_bodies(app: Litestar) -> None:
    """Bodies that refuse unknown fields say so: ``additionalProperties: false``.

    Litestar does not carry msgspec's ``forbid_unknown_fields`` into the schema, so the
    document allowed extra properties the server answers with ``400`` (the schema fuzzing
    sent them as valid data).
    """
    schemas = app.openapi_schema.components.schemas or {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            data = handler.parsed_fn_signature.parameters.get("data")
            struct = data.annotation if data is not None else None
            config = getattr(struct, "__struct_config__", None)
            schema = schemas.get(getattr(struct, "__name__", ""))
            if config is not None and config.forbid_unknown_fields and isinstance(schema, Schema):
                schema.additional_properties = False


def _tidy_operation(operation: Operation) -> None:
    for parameter in operation.parameters or []:
        if isinstance(parameter, Reference) or not isinstance(parameter.schema, Schema):
            continue
        _tidy_schema(parameter.schema)
        # A query, path or header value is text or absent, never JSON null.
        if isinstance(parameter.schema.type, list):
            kinds = [kind for kind in parameter.schema.type if kind != OpenAPIType.NULL]
            parameter.schema.type = kinds[0] if len(kinds) == 1 else kinds
    body = operation.request_body
    if body is not None and not isinstance(body, Reference):
        for media in (body.content or {}).values():
            if isinstance(media.schema, Schema):
                _tidy_schema(media.schema)
    responses = operation.responses = operation.responses or {}
    if operation.security != [] and "401" not in responses:
        responses["401"] = _error(_UNAUTHORIZED)
    # Every body's media type is checked app-wide (app.http): another one is a 415.
    if body is not None and "415" not in responses:
        responses["415"] = _error(_WRONG_MEDIA_TYPE)
    # Any route may meet a database outage; the error handler answers it with 503.
    if "503" not in responses:
        responses["503"] = _error(_UNAVAILABLE)
    for status, response in responses.items():
        if isinstance(response, Reference):
            continue
        if status == "204":
            response.content = None
            continue
        for media in (response.content or {}).values():
            if isinstance(media.schema, Schema):
                _tidy_schema(media.schema)
        for header in (response.headers or {}).values():
            # Litestar gives a documentation-only header no schema, which OpenAPI requires.
            if isinstance(header, OpenAPIHeader) and header.schema is None and header.content is None:
                header.schema = Schema(type=OpenAPIType.STRING)
                header.required = None
        if status[0] in "45":
            _tidy_error(status, response)


def _error(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(description=description, content={JSON: OpenAPIMediaType(schema=ERROR_BODY)})


def _tidy_error(status: str, response: OpenAPIResponse) -> None:
    media = (response.content or {}).get(JSON)
    if media is None:
        return
    schema = media.schema
    if isinstance(schema, Schema) and {"status_code", "detail"} <= set(schema.properties or {}):
        # Litestar's own inline copy of the error shape, with an untyped ``extra``.
        media.schema = ERROR_BODY
        media.examples = None
        if response.description == _STOCK_400:
            response.description = _INVALID_INPUT
    if media.schema == ERROR_BODY and status in ERROR_HEADERS:
        response.headers = {**ERROR_HEADERS[status], **(response.headers or {})}


def _tidy_schema(schema: Schema) -> None:
    """Collapse ``oneOf`` wrappers in ``schema`` and every schema below it."""
    for field in dataclasses.fields(schema):
        value = getattr(schema, field.name)
        for sub in _schemas_in(value):
            _tidy_schema(sub)
    branches = schema.one_of
    if not branches:
        return
    if len(branches) == 1 and isinstance(branches[0], Schema):
        _merge(schema, branches[0])
        schema.one_of = None
        return
    non_null = [b for b in branches if not (isinstance(b, Schema) and b.type == OpenAPIType.NULL)]
    if len(branches) == 2 and len(non_null) == 1:
        branch = non_null[0]
        # A nullable $ref or enum stays a oneOf: its type cannot carry the null.
        if (
            isinstance(branch, Schema)
            and isinstance(branch.type, OpenAPIType)
            and branch.enum is None
            and branch.const is None
            and not (branch.one_of or branch.any_of or branch.all_of)
        ):
            _merge(schema, branch)
            schema.type = [branch.type, OpenAPIType.NULL]
            schema.one_of = None


def _merge(schema: Schema, branch: Schema) -> None:
    for field in dataclasses.fields(branch):
        value = getattr(branch, field.name)
        if value is not None and getattr(schema, field.name) is None:
            setattr(schema, field.name, value)


def _schemas_in(value: Any) -> list[Schema]:
    if isinstance(value, Schema):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, Schema)]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, Schema)]
    return []
