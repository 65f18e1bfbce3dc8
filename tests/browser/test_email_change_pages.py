"""The email change link in Chromium: the button page, the result, a used link, a taken address.

Each state is also audited for accessibility (axe-core, both widths and colour schemes) and
driven by the keyboard, as the confirmation and reset pages are in ``test_a11y.py``.
"""

from __future__ import annotations

import httpx
import pytest

from tests.browser.conftest import link_in, mail_to, screenshots
from tests.browser.test_a11y import _audit_views, _error_announced, _focused, _tab_order
from tests.browser.test_pages import _assert_page, _login, _real_errors

pytestmark = pytest.mark.browser


async def _ask(live_server, user, new_email: str) -> str:
    """Ask for the change through the API; the link mailed to ``new_email``."""
    async with httpx.AsyncClient(base_url=live_server.url) as api:
        asked = await api.post(
            "/api/users/me/email",
            json={"new_email": new_email, "password": user.password},
            headers=user.headers,
        )
    assert asked.status_code == 202
    mail = await mail_to(live_server.smtp, new_email, "confirm your new email")
    link = link_in(mail, "/api/auth/confirm_email_change/")
    assert link.startswith(live_server.url + "/")
    return link


async def test_the_mailed_link_shows_a_button_that_changes_the_email_once(
    browser_page, live_server, user_factory
):
    page, watch = browser_page
    user = await user_factory()
    link = await _ask(live_server, user, "moved@example.com")
    await mail_to(live_server.smtp, user.email, "change of your")  # the notice to the current address

    response = await page.goto(link)
    await _assert_page(page, response, 200, "Confirm your new email")
    await page.get_by_text("moved@example.com").wait_for()
    await screenshots(page, "email-change-form")
    # Opening the link changed nothing: mail scanners open links too.
    assert (await _login(live_server, user.email, user.password)).status_code == 200

    posted: list[str] = []
    page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Change my email").click()
    response = await navigation.value
    await _assert_page(page, response, 200, "Email changed")
    await page.get_by_text("Your email is now moved@example.com.").wait_for()
    assert posted == [link]
    await screenshots(page, "email-change-done")
    assert (await _login(live_server, "moved@example.com", user.password)).status_code == 200
    assert (await _login(live_server, user.email, user.password)).status_code == 401
    await mail_to(live_server.smtp, user.email, "was changed")

    # The same link again: the "not valid" page, with the way to ask again, and no button.
    response = await page.goto(link)
    await _assert_page(page, response, 400, "Link not valid")
    await page.get_by_text("invalid, expired or already used").wait_for()
    assert await page.locator("form").count() == 0
    assert await page.get_by_role("link", name="API reference").count() == 1
    await screenshots(page, "email-change-invalid")

    assert watch.foreign == []
    assert _real_errors(watch) == []


async def test_an_address_taken_since_gets_its_own_page(browser_page, live_server, user_factory):
    page, watch = browser_page
    user = await user_factory()
    link = await _ask(live_server, user, "contested@example.com")
    await user_factory(email="contested@example.com")
    response = await page.goto(link)
    await _assert_page(page, response, 200, "Confirm your new email")

    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Change my email").click()
    response = await navigation.value

    await _assert_page(page, response, 409, "Address taken")
    await page.get_by_text("belongs to another account").wait_for()
    await screenshots(page, "email-change-taken")
    assert (await _login(live_server, user.email, user.password)).status_code == 200
    assert watch.foreign == []
    assert [e for e in _real_errors(watch) if "status of 409" not in e] == []


async def test_every_state_is_accessible_and_works_by_keyboard(audit_page, live_server, user_factory):
    page, _ = audit_page
    user, other = await user_factory(), await user_factory()
    link = await _ask(live_server, user, "keyboard@example.com")
    taken = await _ask(live_server, other, "taken-later@example.com")
    await user_factory(email="taken-later@example.com")

    problems = []
    assert (await page.goto(link)).status == 200
    assert await page.title() == "Confirm your new email · Contacts API"
    assert await page.get_by_role("alert").count() == 0
    # The button is the one stop of the Tab order, with a visible focus; Enter presses it.
    assert await _tab_order(page, 1) == ["button"]
    problems += await _audit_views(page, "email change form")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Shift+Tab")
    assert await _focused(page) == "button"
    async with page.expect_navigation() as navigation:
        await page.keyboard.press("Enter")
    assert (await navigation.value).status == 200
    assert await page.title() == "Email changed · Contacts API"
    problems += await _audit_views(page, "email change done")

    assert (await page.goto(link)).status == 400
    await _error_announced(page, "Link not valid")
    assert await _tab_order(page, 1) == ["a"]
    problems += await _audit_views(page, "email change invalid link")

    assert (await page.goto(taken)).status == 200
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Change my email").click()
    assert (await navigation.value).status == 409
    await _error_announced(page, "Address taken")
    problems += await _audit_views(page, "email change taken")

    assert problems == [], "\n".join(problems)
