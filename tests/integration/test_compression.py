"""Compression: large JSON and HTML are gzip-encoded, token responses never, the API UI bundle precompressed."""

from __future__ import annotations

import re

import pytest

from app.compression import MINIMUM_SIZE
from app.openapi_ui import SCALAR_BUNDLE, scalar_bundle_url

GZIP = {"Accept-Encoding": "gzip, deflate, br"}


async def _contacts(client, user, count: int) -> None:
    for n in range(count):
        response = await client.post(
            "/api/contacts/",
            json={
                "first_name": f"Name{n}",
                "last_name": "Somebody",
                "email": f"c{n}@example.com",
                "phone_number": f"+38050123{n:04d}",
                "additional_data": "notes " * 20,
            },
            headers=user.headers,
        )
        assert response.status_code == 201, response.text


async def test_a_large_json_page_is_gzipped(client, user):
    await _contacts(client, user, 8)
    response = await client.get("/api/contacts/?limit=20", headers={**user.headers, **GZIP})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["vary"]
    plain = await client.get(
        "/api/contacts/?limit=20", headers={**user.headers, "Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    assert len(plain.content) > MINIMUM_SIZE
    # The header's length is the compressed one, and the client reads the same JSON.
    assert int(response.headers["content-length"]) < len(plain.content) / 3
    assert response.json() == plain.json()


async def test_a_small_json_answer_is_not_compressed(client, user):
    response = await client.get("/api/users/me", headers={**user.headers, **GZIP})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert len(response.content) < MINIMUM_SIZE


async def test_html_and_the_schema_are_gzipped(client, monkeypatch):
    for path in ["/schema/openapi.json", "/schema/openapi.yaml"]:
        response = await client.get(path, headers=GZIP)
        assert response.status_code == 200, path
        assert response.headers.get("content-encoding") == "gzip", path
    # The API reference page is a few hundred bytes; HTML is compressed like JSON past the threshold.
    monkeypatch.setattr("app.compression.MINIMUM_SIZE", 64)
    page = await client.get("/schema", headers=GZIP)
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers.get("content-encoding") == "gzip"


@pytest.mark.parametrize("refused", ["gzip;q=0", "identity", ""])
async def test_no_gzip_unless_asked(client, refused):
    response = await client.get("/schema/openapi.json", headers={"Accept-Encoding": refused})
    assert "content-encoding" not in response.headers


async def test_token_responses_are_never_compressed(client, user, monkeypatch):
    """BREACH: a token next to attacker-chosen text in a compressed body leaks by its size."""
    # Token answers are small: with a tiny threshold, only the rule keeps them uncompressed.
    monkeypatch.setattr("app.compression.MINIMUM_SIZE", 16)
    me = await client.get("/api/users/me", headers={**user.headers, **GZIP})
    assert me.headers.get("content-encoding") == "gzip"  # the threshold is in force
    login = await client.post(
        "/api/auth/login",
        data={"username": user.email, "password": user.password},
        headers=GZIP,
    )
    assert login.status_code == 200
    assert "content-encoding" not in login.headers
    refresh = await client.post(
        "/api/auth/refresh_token",
        json={"refresh_token": login.json()["refresh_token"]},
        headers=GZIP,
    )
    assert refresh.status_code in (200, 201), refresh.text
    assert "content-encoding" not in refresh.headers


async def test_the_api_ui_bundle_is_precompressed_and_immutable(client):
    page = (await client.get("/schema", headers=GZIP)).text
    url = scalar_bundle_url()
    assert url in page
    assert re.fullmatch(r"/assets/scalar/[0-9a-f]{16}/standalone\.js", url)
    response = await client.get(url, headers=GZIP)
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "javascript" in response.headers["content-type"]
    size = int(response.headers["content-length"])
    original = SCALAR_BUNDLE.read_bytes()
    assert size < len(original) / 3  # 4.8 MB -> about 1.4 MB
    assert response.content == original  # decoded by the client: the same bytes
    identity = await client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in identity.headers
    assert identity.content == original
    # Another digest (a stale page, a guess) is not this bundle.
    assert (await client.get("/assets/scalar/0123456789abcdef/standalone.js")).status_code == 404
