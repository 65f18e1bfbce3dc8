"""Request-side HTTP rules shared by every route: which body media types a route accepts.

A route's body media type is declared where the route is — its ``data`` parameter
(``JSONBody[...]``, ``Body(media_type=...)``; JSON when not said), or, for a handler that reads
its body itself, ``opt={BODY_MEDIA_TYPES: (...)}``. :func:`require_declared_body` enforces it
for every route, once, as the application's ``before_request`` hook: anything else is a
``415`` before the body is parsed (so ``text/plain`` JSON is never stored, and a wrong type
is named as such rather than surfacing as a parse error). Being a ``before_request`` hook,
it runs after authentication and guards: a stranger still gets ``401``, a user ``403``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import BodyKwarg
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

if TYPE_CHECKING:
    from litestar import Request
    from litestar.handlers import HTTPRouteHandler

#: ``opt`` key of a handler that reads its body itself: the media types it takes.
BODY_MEDIA_TYPES = "body_media_types"

JSON = RequestEncodingType.JSON.value
URL_ENCODED = RequestEncodingType.URL_ENCODED.value
MULTI_PART = RequestEncodingType.MULTI_PART.value
#: JSON is UTF-8 (RFC 8259); a body declared in another charset is not JSON we can read.
_JSON_CHARSETS = frozenset({"utf-8", "utf8"})


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
