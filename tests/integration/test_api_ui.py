"""The API reference page (/schema) and the static files it is served with."""

import hashlib
import json
import re
from html import unescape

from app.openapi_ui import SCALAR_OPTIONS, SCALAR_VERSION, STATIC_DIR, scalar_bundle_url
from app.security.headers import API_UI_CSP, NOTHING_CSP


async def test_schema_page_loads_only_same_origin_assets(client):
    response = await client.get("/schema")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == API_UI_CSP
    html = response.text
    # Every src/href is a path on this service: no CDN, no other host.
    urls = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert urls
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert scalar_bundle_url() in urls
    assert f"/static/scalar/contrast.css?v={SCALAR_VERSION}" in urls  # Scalar's colours at 4.5:1
    # No inline script (CSP would block it) and no inline style element.
    for body in re.findall(r"<script[^>]*>(.*?)</script>", html, flags=re.S):
        assert body.strip() == ""
    assert "<style" not in html


async def test_schema_page_hands_scalar_its_configuration(client):
    html = (await client.get("/schema")).text
    tag = re.search(r'<script id="api-reference"([^>]*)>', html)
    assert tag
    assert 'data-url="/schema/openapi.json"' in tag.group(1)
    configuration = re.search(r'data-configuration="([^"]*)"', tag.group(1))
    assert configuration
    options = json.loads(unescape(configuration.group(1)))
    assert options == SCALAR_OPTIONS
    assert options["withDefaultFonts"] is False  # fonts.scalar.com otherwise
    assert options["telemetry"] is False


async def test_scalar_ui_also_served_at_its_own_path(client):
    response = await client.get("/schema/scalar")
    assert response.status_code == 200
    assert scalar_bundle_url() in response.text


async def test_static_bundle_is_served_public_and_cacheable(client):
    response = await client.get(f"/static/scalar/standalone.js?v={SCALAR_VERSION}")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert "max-age=86400" in response.headers["cache-control"]
    assert response.headers["content-security-policy"] == NOTHING_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (STATIC_DIR / "scalar" / "standalone.js").read_bytes()
    # The README names the vendored file's version and checksum; keep them honest.
    readme = (STATIC_DIR / "scalar" / "README.md").read_text()
    assert f"**{SCALAR_VERSION}**" in readme
    assert hashlib.sha256(response.content).hexdigest() in readme
    assert (STATIC_DIR / "scalar" / "LICENSE").read_text().startswith("MIT License")


async def test_static_files_need_no_token_and_stay_in_their_directory(client):
    assert (await client.get("/static/favicon.svg")).status_code == 200
    assert (await client.get("/static/scalar/page.css")).status_code == 200
    assert (await client.get("/static/scalar/contrast.css")).status_code == 200
    assert (await client.get("/static/../config.py")).status_code == 404
    assert (await client.get("/static/%2e%2e/config.py")).status_code == 404
    assert (await client.get("/static/nothing.css")).status_code == 404


async def test_static_files_are_not_in_the_schema(client):
    schema = (await client.get("/schema/openapi.json")).json()
    assert not [path for path in schema["paths"] if path.startswith("/static")]


async def test_oauth2_scheme_has_only_oauth2_fields(client):
    """Scalar shows the password-flow login only for a clean oauth2 scheme."""
    schema = (await client.get("/schema/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert list(schemes) == ["BearerToken"]
    scheme = schemes["BearerToken"]
    assert scheme["type"] == "oauth2"
    assert scheme["flows"] == {"password": {"tokenUrl": "/api/auth/login", "scopes": {}}}
    assert not {"name", "in", "scheme", "bearerFormat"} & set(scheme)
    assert schema["security"] == [{"BearerToken": []}]


async def test_every_response_carries_the_security_headers(client):
    for path in ("/api/healthchecker", "/schema/openapi.json", "/nowhere"):
        response = await client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "no-referrer", path
        assert response.headers["x-frame-options"] == "DENY", path
        assert response.headers["content-security-policy"] == NOTHING_CSP, path


async def test_public_operations_need_no_token_in_the_schema(client):
    """Scalar marks them "Auth Required" and sends a token to them otherwise."""
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    public = [
        ("post", "/api/auth/login"),
        ("post", "/api/auth/register"),
        ("get", "/api/auth/confirmed_email/{token}"),
        ("post", "/api/auth/confirm_update_password/{token}"),
        ("get", "/api/healthchecker"),
    ]
    for method, path in public:
        assert paths[path][method]["security"] == [], (method, path)
    # The others keep the document's requirement (BearerToken).
    for method, path in [("get", "/api/users/me"), ("post", "/api/auth/logout"), ("get", "/api/contacts")]:
        assert "security" not in paths[path][method], (method, path)
