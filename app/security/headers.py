"""Security headers on every response, set in this one place.

A ``before_send`` hook rather than a middleware: Litestar runs middleware only for matched
routes, while the hook sees every response the application sends, 404s and 405s included.

- ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` (the confirmation
  and reset pages carry a token in their URL: it must never leave in a ``Referer``) and
  ``X-Frame-Options: DENY`` everywhere.
- A Content-Security-Policy by kind of response: the strict :data:`PAGE_CSP` on the HTML
  pages (templates: no script at all), :data:`API_UI_CSP` on the API reference under the
  OpenAPI path (the vendored Scalar bundle; same origin only), and :data:`NOTHING_CSP` on
  everything else (JSON, files), which no browser should render as a document.
- ``Cache-Control: no-store`` on every ``/api/`` answer (contacts, users, exports, tokens:
  personal data or credentials, errors included) unless the route chose its own.
- ``Strict-Transport-Security`` when the request came over HTTPS: straight to the server
  (the ASGI scheme is ``https``), or through one of ``TRUSTED_PROXIES`` that says so in
  ``X-Forwarded-Proto``. Nobody else's ``X-Forwarded-Proto`` counts.

A header the route already set is kept, so a route can deliberately differ; none does today.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.ratelimit import ClientIdentifier

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from litestar.types import Message, Scope

#: The HTML pages (confirmation, password reset): no script, same-origin styles and images,
#: forms post to the service only.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
#: The API reference: Scalar runs from the service's own origin and calls only it. It inserts
#: its styles at run time (``<style>`` elements and ``style`` attributes), hence the inline styles.
API_UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: Any other response (JSON, files): nothing may load, nothing may frame it.
NOTHING_CSP = "default-src 'none'; frame-ancestors 'none'"

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
_CSP = b"content-security-policy"
_CACHE_CONTROL = (b"cache-control", b"no-store")
_NO_STORE_PREFIX = "/api/"
#: Two years, and the service's own subdomains too (ASVS 5.0 V3.4.1: at least a year).
HSTS = "max-age=63072000; includeSubDomains"
_HSTS_NAME = b"strict-transport-security"
_FORWARDED_PROTO = b"x-forwarded-proto"


def make_security_headers(
    api_ui_path: str, trusted_proxies: Iterable[str] = ()
) -> Callable[[Message, Scope], Awaitable[None]]:
    """Build the ``before_send`` hook that adds the security headers.

    Args:
        api_ui_path: The OpenAPI path (``/schema``); HTML below it is the API reference.
        trusted_proxies: ``TRUSTED_PROXIES``: the peers whose ``X-Forwarded-Proto`` is believed.

    Returns:
        The hook, to pass in ``Litestar(before_send=[...])``.
    """
    api_ui_prefix = api_ui_path.rstrip("/")
    pages_csp = PAGE_CSP.encode()
    api_ui_csp = API_UI_CSP.encode()
    nothing_csp = NOTHING_CSP.encode()
    hsts = (_HSTS_NAME, HSTS.encode())
    proxies = ClientIdentifier("hsts", trusted_proxies)
    any_proxy = bool(proxies.networks or proxies.literals)

    def over_https(scope: Scope) -> bool:
        if scope.get("scheme") == "https":
            return True
        client = scope.get("client")
        if not any_proxy or not client or not proxies.is_trusted(client[0]):
            return False
        proto = b""
        for name, value in scope["headers"]:
            if name == _FORWARDED_PROTO:
                proto = value
        # The last entry is the one our own proxy wrote (earlier ones came from further out).
        return proto.rsplit(b",", 1)[-1].strip().lower() == b"https"

    async def security_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = list(message.get("headers") or [])
        present = {bytes(name).lower(): bytes(value) for name, value in headers}
        extra = [(name, value) for name, value in _ALWAYS if name not in present]
        if _CSP not in present:
            path = scope["path"]
            if present.get(b"content-type", b"").startswith(b"text/html"):
                in_api_ui = path == api_ui_prefix or path.startswith(api_ui_prefix + "/")
                extra.append((_CSP, api_ui_csp if in_api_ui else pages_csp))
            else:
                extra.append((_CSP, nothing_csp))
        if scope["path"].startswith(_NO_STORE_PREFIX) and _CACHE_CONTROL[0] not in present:
            extra.append(_CACHE_CONTROL)
        if _HSTS_NAME not in present and over_https(scope):
            extra.append(hsts)
        message["headers"] = headers + extra

    return security_headers
