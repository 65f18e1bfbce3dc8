"""Password reset (mailed link, JSON and HTML form) and password change, through HTTP.

Mail goes to a real SMTP server (aiosmtpd); the reset link is followed as a user would.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app import cache
from app.security.tokens import Purpose, create_token
from app.users.models import User, UserSession
from tests.conftest import SECRET, SmtpServer, TestUser

NEW = "a brand new passphrase"
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
InAppLoop = Callable[..., Awaitable[Any]]


@pytest.fixture
async def client(
    make_client: Callable[..., AsyncTestClient[Litestar]], smtp_server: SmtpServer
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app, sending its mail to the test SMTP server."""
    async with make_client(**smtp_server.settings) as c:
        yield c


async def login(client: AsyncTestClient[Litestar], username: str, password: str) -> Any:
    return await client.post("/api/auth/login", data={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def reset_link(client: AsyncTestClient[Litestar], smtp_server: SmtpServer, email: str) -> str:
    """Ask for a reset and return the path of the mailed link."""
    before = len(smtp_server.messages)
    response = await client.post("/api/auth/update_password", json={"email": email})
    assert response.status_code == 202
    messages = await smtp_server.sink.wait_for(before + 1)
    mail = messages[-1]
    assert mail["To"] == email
    (link,) = smtp_server.sink.links(mail)
    assert link.startswith("http://testserver.local/api/auth/confirm_update_password/")
    return urlparse(link).path


async def live_sessions(app: Litestar, user_id: UUID) -> list[UUID]:
    async with app.state.db_config.get_session() as session:
        rows = await session.scalars(
            select(UserSession.id).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        )
        return list(rows)


async def password_version(app: Litestar, user_id: UUID) -> int:
    async with app.state.db_config.get_session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user.password_version


async def cached(app: Litestar, user_id: UUID) -> bytes | None:
    return await app.stores.get(cache.USER_CACHE).get(str(user_id))


# --------------------------------------------------------------------------- update_password


async def test_update_password_answers_the_same_for_unknown_emails(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser
) -> None:
    known = await client.post("/api/auth/update_password", json={"email": user.email.upper()})
    unknown = await client.post("/api/auth/update_password", json={"email": "nobody@example.com"})

    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    (mail,) = await smtp_server.sink.wait_for(1)
    assert mail["To"] == user.email
    assert "reset" in mail["Subject"].lower()
    assert smtp_server.sink.links(mail)[0] in smtp_server.sink.html(mail)


async def test_update_password_validates_the_body(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.post("/api/auth/update_password", json={"email": "nope"})).status_code == 400
    assert (await client.post("/api/auth/update_password", json={})).status_code == 400
    assert (
        await client.post("/api/auth/update_password", json={"email": "a@example.com", "role": "admin"})
    ).status_code == 400


# --------------------------------------------------------------------------- the reset, JSON client


async def test_reset_with_json_takes_effect_on_the_very_next_request(
    client: AsyncTestClient[Litestar],
    smtp_server: SmtpServer,
    user: TestUser,
    app: Litestar,
    in_app_loop: InAppLoop,
) -> None:
    tokens = (await login(client, user.email, user.password)).json()
    assert (await client.get("/api/users/me", headers=bearer(tokens["access_token"]))).status_code == 200
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200
    assert await in_app_loop(cached, app, user.id) is not None  # warm cache
    path = await reset_link(client, smtp_server, user.email)

    check = await client.get(path)
    assert check.status_code == 200
    assert "message" in check.json()
    done = await client.post(path, json={"password": NEW})

    assert done.status_code == 200
    assert "changed" in done.json()["message"]
    assert await in_app_loop(cached, app, user.id) is None
    # Every session is over, at once: access tokens and refresh tokens alike.
    assert (await client.get("/api/users/me", headers=bearer(tokens["access_token"]))).status_code == 401
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 401
    refresh = await client.post("/api/auth/refresh_token", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
    assert await in_app_loop(live_sessions, app, user.id) == []
    assert await in_app_loop(password_version, app, user.id) == 1
    # The old password is gone, the new one works.
    assert (await login(client, user.email, user.password)).status_code == 401
    assert (await login(client, user.email, NEW)).status_code == 200
    # A "your password was changed" notice went out.
    notice = (await smtp_server.sink.wait_for(2))[-1]
    assert notice["To"] == user.email
    assert "changed" in notice["Subject"]
    assert NEW not in smtp_server.sink.text(notice)


async def test_reset_link_works_once(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser
) -> None:
    path = await reset_link(client, smtp_server, user.email)
    assert (await client.post(path, json={"password": NEW})).status_code == 200

    again_get = await client.get(path)
    again_post = await client.post(path, json={"password": "yet another passphrase"})

    assert again_get.status_code == 400
    assert again_post.status_code == 400
    assert "already used" in again_post.json()["detail"]
    assert (await login(client, user.email, NEW)).status_code == 200


async def test_reset_link_dies_when_the_password_changes_otherwise(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser
) -> None:
    path = await reset_link(client, smtp_server, user.email)
    changed = await client.patch(
        "/api/users/me/password",
        json={"current_password": user.password, "new_password": NEW},
        headers=user.headers,
    )
    assert changed.status_code == 204

    assert (await client.post(path, json={"password": "yet another passphrase"})).status_code == 400
    assert (await login(client, user.email, NEW)).status_code == 200


async def test_an_older_reset_link_dies_with_a_newer_one_used(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser
) -> None:
    first = await reset_link(client, smtp_server, user.email)
    second = await reset_link(client, smtp_server, user.email)
    assert first != second

    assert (await client.post(second, json={"password": NEW})).status_code == 200
    assert (await client.post(first, json={"password": "yet another passphrase"})).status_code == 400


async def test_reset_refuses_bad_tokens(client: AsyncTestClient[Litestar], user: TestUser) -> None:
    uid = str(user.id)
    tokens = {
        "garbage": "nope",
        "expired": create_token(SECRET, Purpose.RESET_PASSWORD, uid, timedelta(seconds=-1), st="x")[0],
        "wrong key": create_token("k" * 40, Purpose.RESET_PASSWORD, uid, timedelta(minutes=5), st="x")[0],
        "wrong state": create_token(SECRET, Purpose.RESET_PASSWORD, uid, timedelta(minutes=5), st="x")[0],
        "no state": create_token(SECRET, Purpose.RESET_PASSWORD, uid, timedelta(minutes=5))[0],
        "access": create_token(SECRET, Purpose.ACCESS, uid, timedelta(minutes=5), sid=str(user.session_id))[
            0
        ],
        "refresh": create_token(SECRET, Purpose.REFRESH, uid, timedelta(minutes=5), sid=str(user.session_id))[
            0
        ],
        "confirm": create_token(SECRET, Purpose.CONFIRM_EMAIL, uid, timedelta(minutes=5), em=user.email)[0],
    }
    for name, token in tokens.items():
        path = f"/api/auth/confirm_update_password/{token}"
        got = await client.get(path)
        posted = await client.post(path, json={"password": NEW})
        page = await client.get(path, headers=BROWSER)
        assert got.status_code == 400, name
        assert posted.status_code == 400, name
        assert page.status_code == 400, name
        assert page.headers["content-type"].startswith("text/html"), name
    assert (await login(client, user.email, user.password)).status_code == 200


async def test_reset_refuses_weak_or_malformed_passwords(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser
) -> None:
    path = await reset_link(client, smtp_server, user.email)

    for body in (
        {"password": "short"},
        {"password": "password123"},
        {"password": "x" * 129},
        {},
        {"pw": NEW},
    ):
        response = await client.post(path, json=body)
        assert response.status_code == 400, body
        assert response.json()["extra"], body
    broken = await client.post(path, content=b"{nope", headers={"Content-Type": "application/json"})
    wrong_type = await client.post(path, content=b"password=x", headers={"Content-Type": "text/plain"})

    assert broken.status_code == 400
    assert wrong_type.status_code == 415
    # None of that used the link up.
    assert (await client.post(path, json={"password": NEW})).status_code == 200


# --------------------------------------------------------------------------- the reset, browser


async def test_reset_in_a_browser_shows_a_form_that_sets_the_password(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser
) -> None:
    path = await reset_link(client, smtp_server, user.email)

    page = await client.get(path, headers=BROWSER)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text
    form = re.search(r'<form[^>]*method="post"[^>]*action="([^"]+)"', page.text)
    assert form is not None
    assert form.group(1) == path
    assert 'name="password"' in page.text
    assert 'name="password_confirm"' in page.text

    mismatch = await client.post(
        form.group(1), data={"password": NEW, "password_confirm": NEW + "!"}, headers=BROWSER
    )
    assert mismatch.status_code == 400
    assert "differ" in mismatch.text
    assert 'name="password"' in mismatch.text  # the form again
    weak = await client.post(
        form.group(1), data={"password": "password123", "password_confirm": "password123"}, headers=BROWSER
    )
    assert weak.status_code == 400
    assert "too common" in weak.text
    short = await client.post(form.group(1), data={"password": "x", "password_confirm": "x"}, headers=BROWSER)
    assert short.status_code == 400

    done = await client.post(form.group(1), data={"password": NEW, "password_confirm": NEW}, headers=BROWSER)
    assert done.status_code == 200
    assert done.headers["content-type"].startswith("text/html")
    assert "Your password was changed" in done.text
    assert (await login(client, user.email, NEW)).status_code == 200

    used = await client.get(path, headers=BROWSER)
    assert used.status_code == 400
    assert used.headers["content-type"].startswith("text/html")


async def test_reset_form_post_without_browser_accept_still_gets_a_page(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser
) -> None:
    path = await reset_link(client, smtp_server, user.email)

    done = await client.post(path, data={"password": NEW, "password_confirm": NEW})

    assert done.status_code == 200
    assert done.headers["content-type"].startswith("text/html")


# --------------------------------------------------------------------------- PATCH /api/users/me/password


async def test_password_change_keeps_this_session_and_ends_the_others(
    client: AsyncTestClient[Litestar],
    smtp_server: SmtpServer,
    user: TestUser,
    app: Litestar,
    in_app_loop: InAppLoop,
) -> None:
    here = (await login(client, user.email, user.password)).json()
    elsewhere = (await login(client, user.email, user.password)).json()
    for token in (here["access_token"], elsewhere["access_token"]):
        assert (await client.get("/api/users/me", headers=bearer(token))).status_code == 200

    response = await client.patch(
        "/api/users/me/password",
        json={"current_password": user.password, "new_password": NEW},
        headers=bearer(here["access_token"]),
    )

    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get("/api/users/me", headers=bearer(here["access_token"]))).status_code == 200
    assert (await client.get("/api/users/me", headers=bearer(elsewhere["access_token"]))).status_code == 401
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 401
    kept = await client.post("/api/auth/refresh_token", json={"refresh_token": here["refresh_token"]})
    ended = await client.post("/api/auth/refresh_token", json={"refresh_token": elsewhere["refresh_token"]})
    assert kept.status_code == 200
    assert ended.status_code == 401
    assert len(await in_app_loop(live_sessions, app, user.id)) == 1
    assert (await login(client, user.email, user.password)).status_code == 401
    assert (await login(client, user.email, NEW)).status_code == 200
    notice = (await smtp_server.sink.wait_for(1))[-1]
    assert "changed" in notice["Subject"]


async def test_password_change_refusals(client: AsyncTestClient[Litestar], user: TestUser) -> None:
    wrong = await client.patch(
        "/api/users/me/password",
        json={"current_password": "not my password", "new_password": NEW},
        headers=user.headers,
    )
    weak = await client.patch(
        "/api/users/me/password",
        json={"current_password": user.password, "new_password": "password123"},
        headers=user.headers,
    )
    short = await client.patch(
        "/api/users/me/password",
        json={"current_password": user.password, "new_password": "short"},
        headers=user.headers,
    )
    extra = await client.patch(
        "/api/users/me/password",
        json={"current_password": user.password, "new_password": NEW, "role": "admin"},
        headers=user.headers,
    )
    anonymous = await client.patch(
        "/api/users/me/password", json={"current_password": user.password, "new_password": NEW}
    )

    assert wrong.status_code == 400
    assert wrong.json()["extra"][0]["key"] == "current_password"
    assert weak.status_code == 400
    assert weak.json()["extra"][0]["key"] == "new_password"
    assert short.status_code == 400
    assert extra.status_code == 400
    assert anonymous.status_code == 401
    as_form = await client.patch(
        "/api/users/me/password",
        data={"current_password": user.password, "new_password": NEW},
        headers=user.headers,
    )
    deep = await client.patch(
        "/api/users/me/password",
        content=b"{" * 100_000,
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert as_form.status_code == 415
    assert deep.status_code == 400
    # Nothing changed.
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200
    assert (await login(client, user.email, user.password)).status_code == 200
