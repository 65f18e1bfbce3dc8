"""The API reference at /schema in a real browser: offline, under its CSP, and usable."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import screenshots
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser


async def _open_schema(page, live_server) -> None:
    response = await page.goto(live_server.url + "/schema")
    assert response.status == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    # Scalar has rendered the document once the sidebar lists the tags.
    await page.locator("aside").get_by_text("health", exact=True).wait_for(state="visible", timeout=20_000)


async def test_schema_lists_the_operations_from_the_service_alone(browser_page, live_server):
    page, watch = browser_page
    await _open_schema(page, live_server)
    assert await page.title() == "Contacts API"
    sidebar = page.locator("aside")
    for tag in ("auth", "users", "contacts", "health"):
        assert await sidebar.get_by_text(tag, exact=True).count() == 1, tag
    await sidebar.get_by_text("health", exact=True).click()
    await sidebar.locator('a[href="#tag/health/GET/api/healthchecker"]').wait_for(state="visible")
    health = page.locator('section[id$="/tag/health/GET/api/healthchecker"]')
    await health.get_by_role("heading", name="Check the service's health").wait_for(state="visible")
    assert await health.get_by_text("Auth Required").count() == 0  # a public operation
    # The link that would hand the schema's URL to a Scalar-hosted client is switched off.
    assert await page.get_by_text("Open API Client").count() == 0
    await screenshots(page, "schema", full_page=False)

    assert watch.foreign == []  # no CDN, no fonts.scalar.com, no telemetry
    assert watch.errors == []  # no CSP violation, no script error


async def test_authorize_with_the_password_flow_then_try_users_me(browser_page, live_server, user_factory):
    page, watch = browser_page
    user = await user_factory()
    await _open_schema(page, live_server)

    # "Authorize": the OAuth2 password flow against tokenUrl /api/auth/login.
    await page.get_by_role("combobox", name="Username").fill(user.email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    async with page.expect_response(lambda r: r.url.endswith("/api/auth/login")) as login:
        await page.get_by_role("button", name="Authorize").click()
    assert (await login.value).status == 200
    await page.get_by_text("Access Token").first.wait_for(state="visible")
    await screenshots(page, "schema-authorized", full_page=False)

    # "Test Request" on GET /api/users/me: the request goes to this origin with the token.
    await page.locator("aside").get_by_text("users", exact=True).click()
    await page.locator('aside a[href="#tag/users/GET/api/users/me"]').click()
    operation = page.locator('section[id$="/tag/users/GET/api/users/me"]')
    await operation.get_by_role("button", name=re.compile("Test Request")).click()
    dialog = page.get_by_role("dialog")
    await dialog.wait_for(state="visible")
    async with page.expect_request(lambda r: r.url.endswith("/api/users/me")) as sent:
        await dialog.get_by_role("button", name=re.compile("^Send")).first.click()
    request = await sent.value
    assert request.url == live_server.url + "/api/users/me"
    assert (await request.header_value("authorization") or "").startswith("Bearer ey")
    response = await request.response()
    assert response.status == 200
    assert (await response.json())["email"] == user.email
    await dialog.get_by_text("200 OK").first.wait_for(state="visible")
    await dialog.get_by_text(user.email).first.wait_for(state="visible")
    await screenshots(page, "schema-try-users-me", full_page=False)

    assert watch.foreign == []
    assert watch.errors == []
