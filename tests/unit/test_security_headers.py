from litestar import Litestar, MediaType, get
from litestar.testing import AsyncTestClient

from app.security.headers import API_UI_CSP, NOTHING_CSP, PAGE_CSP, make_security_headers


@get("/page", media_type=MediaType.HTML, sync_to_thread=False)
def page() -> str:
    return "<p>hi</p>"


@get("/schema/ui", media_type=MediaType.HTML, sync_to_thread=False)
def api_ui() -> str:
    return "<p>ui</p>"


@get("/schemata", media_type=MediaType.HTML, sync_to_thread=False)
def not_api_ui() -> str:
    return "<p>not below /schema</p>"


@get("/data", sync_to_thread=False)
def data() -> dict[str, int]:
    return {"a": 1}


@get(
    "/own",
    media_type=MediaType.HTML,
    response_headers={"Content-Security-Policy": "default-src 'self'"},
    sync_to_thread=False,
)
def own_policy() -> str:
    return "<p>own</p>"


@get("/api/auth/thing", sync_to_thread=False)
def auth_thing() -> dict[str, str]:
    return {"token": "t"}


@get("/api/auth/cached", response_headers={"Cache-Control": "max-age=60"}, sync_to_thread=False)
def auth_cached() -> dict[str, str]:
    return {"ok": "yes"}


def _client() -> AsyncTestClient[Litestar]:
    app = Litestar(
        route_handlers=[page, api_ui, not_api_ui, data, own_policy, auth_thing, auth_cached],
        before_send=[make_security_headers("/schema/")],
    )
    return AsyncTestClient(app)


def _assert_common(response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


async def test_html_page_gets_the_strict_policy():
    async with _client() as client:
        response = await client.get("/page")
    _assert_common(response)
    csp = response.headers["content-security-policy"]
    assert csp == PAGE_CSP
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["style-src"] == "'self'"
    assert directives["form-action"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "script-src" not in directives  # falls back to 'none'


async def test_api_ui_policy_only_below_the_openapi_path():
    async with _client() as client:
        ui = await client.get("/schema/ui")
        other = await client.get("/schemata")
    assert ui.headers["content-security-policy"] == API_UI_CSP
    assert "https:" not in API_UI_CSP
    assert "http:" not in API_UI_CSP
    assert "'unsafe-eval'" not in API_UI_CSP
    assert "script-src 'self';" in API_UI_CSP
    assert other.headers["content-security-policy"] == PAGE_CSP


async def test_json_and_errors_get_the_nothing_policy():
    async with _client() as client:
        ok = await client.get("/data")
        missing = await client.get("/no/such/path")
        wrong_method = await client.post("/data")
    for response in (ok, missing, wrong_method):
        _assert_common(response)
        assert response.headers["content-security-policy"] == NOTHING_CSP
    assert missing.status_code == 404
    assert wrong_method.status_code == 405


async def test_a_route_policy_is_kept_not_doubled():
    async with _client() as client:
        response = await client.get("/own")
    assert response.headers.get_list("content-security-policy") == ["default-src 'self'"]
    _assert_common(response)


async def test_auth_responses_are_not_stored_unless_the_route_says_otherwise():
    async with _client() as client:
        tokens = await client.get("/api/auth/thing")
        cached = await client.get("/api/auth/cached")
        elsewhere = await client.get("/data")
    assert tokens.headers["cache-control"] == "no-store"
    assert cached.headers.get_list("cache-control") == ["max-age=60"]
    assert "cache-control" not in elsewhere.headers
