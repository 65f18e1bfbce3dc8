"""The API reference at /schema in a real browser: offline, under its CSP, and usable."""

from __future__ import annotations

import pytest

from tests.browser.conftest import screenshots

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
    # The link that would hand the schema's URL to a Scalar-hosted client is switched off.
    assert await page.get_by_text("Open API Client").count() == 0
    await screenshots(page, "schema", full_page=False)

    assert watch.foreign == []  # no CDN, no fonts.scalar.com, no telemetry
    assert watch.errors == []  # no CSP violation, no script error
