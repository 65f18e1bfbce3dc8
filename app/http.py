"""HTTP helpers shared by the controllers, and the rule of which body media types a route accepts.

A route's body media type is declared where the route is — its ``data`` parameter
(``JSONBody[...]``, ``Body(media_type=...)``; JSON when not said), or, for a handler that reads
its body itself, ``opt={BODY_MEDIA_TYPES: (...)}``. :func:`require_declared_body` enforces it
for every route, once, as the application's ``before_request`` hook: anything else is a
``415`` before the body is parsed (so ``text/plain`` JSON is never stored, and a wrong type
is named as such rather than surfacing as a parse error). Being a ``before_request`` hook,
it runs after authentication and guards: a stranger still gets ``401``, a user ``403``.

A handler that takes JSON or a form reads it with :func:`read_body`; one that answers a
browser too asks :func:`wants_html`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from litestar import MediaType
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import BodyKwarg
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

from app.errors import AppError

if TYPE_CHECKING:
    from litestar import Request
    from litestar.handlers import HTTPRouteHandler

T = TypeVar("T")

#: ``opt`` key of a handler that reads its body itself: the media types it takes.
BODY_MEDIA_TYPES = "body_media_types"

JSON = RequestEncodingType.JSON.value
URL_ENCODED = RequestEncodingType.URL_ENCODED.value
MULTI_PART = RequestEncodingType.MULTI_PART.value
#: JSON is UTF-8 (RFC 8259); a body declared in another charset is not JSON we can read.
_JSON_CHARSETS = frozenset({"utf-8", "utf8"})
#: Room for the multipart framing (boundaries, part headers) around an uploaded file.
MULTIPART_OVERHEAD = 16 * 1024


class InvalidBody(AppError):
    """A body read by :func:`read_body` that does not fit its type: ``400``, naming the field."""

    detail = "The body is not valid JSON"


def wants_html(request: Request[Any, Any, Any]) -> bool:
    """Whether the client prefers an HTML page to JSON (a browser following a mailed link)."""
    return (
        request.accept.best_match([MediaType.JSON, MediaType.HTML], default=MediaType.JSON) == MediaType.HTML
    )


def is_form(request: Request[Any, Any, Any]) -> bool:
    """Whether the body is an HTML form (``application/x-www-form-urlencoded``)."""
    return request.content_type[0] == URL_ENCODED


async def read_body(request: Request[Any, Any, Any], body_type: type[T]) -> T:
    """The body of a route taking JSON or a form (``opt={BODY_MEDIA_TYPES: (JSON, URL_ENCODED)}``).

    Litestar parses a body by the one media type its handler declares; a route taking either
    reads it here. The media type hook (:func:`require_declared_body`) let no other type through.

    Args:
        request: The request.
        body_type: The msgspec type of the body.

    Returns:
        The body.

    Raises:
        InvalidBody: Malformed JSON, or a value that does not fit ``body_type``.
    """
    try:
        if request.content_type[0] == JSON:
            return msgspec.json.decode(await request.body(), type=body_type)
        form = await request.form()
        return msgspec.convert({key: form.get(key) for key in form}, body_type)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$.")
        raise InvalidBody(message, field=where.rstrip("`") or "body") from None
    except msgspec.DecodeError:
        raise InvalidBody from None


def accepted_media_types(handler: HTTPRouteHandler) -> tuple[str, ...]:
    """The body media types ``handler`` declares; empty when it takes no body.

    Args:
        handler: A route handler.

    Returns:
        The media types, lower-case, without parameters.
    """
    declared = handler.opt.get(BODY_MEDIA_TYPES)
    if declared:
        return tuple(declared)
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return ()
    kwarg = data.kwarg_definition
    declared_type = kwarg.media_type if isinstance(kwarg, BodyKwarg) else JSON
    media_type = str(getattr(declared_type, "value", declared_type)).lower()  # an enum member or a str
    # Exactly that type: Litestar parses the body by the declared type, not the sent one (a
    # multipart login form was read as an empty urlencoded one).
    return (media_type,)


async def require_declared_body(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook of the application: ``415`` unless the body has a declared media type.

    Args:
        request: The request about to be handled.

    Raises:
        HTTPException: ``415``, naming the expected media types.
    """
    expected = accepted_media_types(request.route_handler)
    if not expected:
        return
    media_type, options = request.content_type
    charset = options.get("charset", "utf-8").lower()
    if media_type in expected and (media_type != JSON or charset in _JSON_CHARSETS):
        return
    got = f"{media_type}; charset={charset}" if media_type == JSON else media_type or "none"
    raise HTTPException(
        status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        detail=f"The body must be {' or '.join(expected)} (got {got})",
    )
