"""The pages a person opens from a mail: email confirmation and password reset, in Chromium."""

from __future__ import annotations

import httpx
import pytest

from app.security.headers import PAGE_CSP
from tests.browser.conftest import link_in, mail_to, screenshots
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser

NEW_PASSWORD = "a brand new passphrase 42"


async def _login(live_server, username: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=live_server.url) as api:
        return await api.post("/api/auth/login", data={"username": username, "password": password})


async def _assert_page(page, response, status: int, heading: str) -> None:
    """A page of ours: the status, its heading, the strict CSP and its own stylesheet applied."""
    assert response.status == status
    headers = response.headers
    assert headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == PAGE_CSP
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert await page.get_by_role("heading", level=1).inner_text() == heading
    # The stylesheet loaded from the service (no inline style exists to fall back on).
    assert await page.evaluate("getComputedStyle(document.querySelector('main')).maxWidth") != "none"


async def test_mailed_confirmation_link_confirms_then_says_so_again(browser_page, live_server):
    page, watch = browser_page
    async with httpx.AsyncClient(base_url=live_server.url) as api:
        created = await api.post(
            "/api/auth/register",
            json={"username": "newcomer", "email": "newcomer@example.com", "password": PASSWORD},
        )
    assert created.status_code == 201
    assert (await _login(live_server, "newcomer", PASSWORD)).status_code == 403  # not confirmed yet

    mail = await mail_to(live_server.smtp, "newcomer@example.com", "confirm")
    link = link_in(mail, "/api/auth/confirmed_email/")
    assert link.startswith(live_server.url + "/")

    response = await page.goto(link)
    await _assert_page(page, response, 200, "Email confirmed")
    await page.get_by_text("Your email is confirmed.").wait_for()
    await screenshots(page, "confirm-ok")
    assert (await _login(live_server, "newcomer", PASSWORD)).status_code == 200

    response = await page.goto(link)
    await _assert_page(page, response, 200, "Email confirmed")
    await page.get_by_text("already confirmed").wait_for()
    await screenshots(page, "confirm-already")

    response = await page.goto(live_server.url + "/api/auth/confirmed_email/not-a-real-token")
    await _assert_page(page, response, 400, "Link not valid")
    await page.get_by_text("invalid or has expired").wait_for()
    # The way to a new link is on the page.
    assert await page.get_by_text("new confirmation link").count() >= 1
    await screenshots(page, "confirm-invalid")

    assert watch.foreign == []
    assert _real_errors(watch) == []


async def test_reset_link_form_sets_the_password_once(browser_page, live_server, user_factory):
    page, watch = browser_page
    user = await user_factory()
    async with httpx.AsyncClient(base_url=live_server.url) as api:
        started = await api.post("/api/auth/update_password", json={"email": user.email})
    assert started.status_code == 202
    link = link_in(await mail_to(live_server.smtp, user.email, "reset"), "/api/auth/confirm_update_password/")

    response = await page.goto(link)
    await _assert_page(page, response, 200, "Choose a new password")
    password = page.get_by_label("New password", exact=True)
    confirm = page.get_by_label("Repeat the new password")
    assert await password.get_attribute("minlength") == "8"
    assert await password.get_attribute("maxlength") == "128"
    assert await confirm.get_attribute("minlength") == "8"
    await page.get_by_text("8 to 128 characters").wait_for()
    await screenshots(page, "reset-form")

    # The browser itself refuses a too short password: nothing is posted.
    posted: list[str] = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    await password.fill("short")
    await confirm.fill("short")
    await page.get_by_role("button", name="Set the new password").click()
    assert await password.evaluate("element => element.validity.tooShort") is True
    assert posted == []

    # Two different passwords: the server says so, on the same form, and the link still works.
    await password.fill(NEW_PASSWORD)
    await confirm.fill(NEW_PASSWORD + "x")
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Set the new password").click()
    response = await navigation.value
    await _assert_page(page, response, 400, "Choose a new password")
    await page.get_by_role("alert").wait_for()
    assert "differ" in await page.get_by_role("alert").inner_text()
    assert posted == [link]
    await screenshots(page, "reset-form-error")

    await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Set the new password").click()
    response = await navigation.value
    await _assert_page(page, response, 200, "Password changed")
    await screenshots(page, "reset-done")

    assert (await _login(live_server, user.email, NEW_PASSWORD)).status_code == 200
    assert (await _login(live_server, user.email, PASSWORD)).status_code == 401
    await mail_to(live_server.smtp, user.email, "changed")

    # The same link again: a clear "invalid link" page, and the form is gone.
    response = await page.goto(link)
    await _assert_page(page, response, 400, "This link does not work")
    assert await page.locator("form").count() == 0
    await screenshots(page, "reset-invalid")

    assert watch.foreign == []
    assert _real_errors(watch) == []


def _real_errors(watch) -> list[str]:
    """Console errors other than Chromium's note that a page answered 400 (which ours mean to)."""
    return [error for error in watch.errors if "status of 400" not in error]
