"""Email change: the request, the link mailed to the new address, the notices to the old one.

Mail goes to a real SMTP server (aiosmtpd) through the outbox; links are followed as a user
would, by a JSON client and by a browser (``Accept: text/html``, the page's form).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app import cache
from app.auth.service import email_change_state
from app.jobs.models import OutboxMail
from app.security.tokens import Purpose, create_token
from app.users.models import User, UserSession
from app.users.service import gravatar_url
from tests.conftest import SECRET, SmtpServer, TestUser

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
NEW_PASSWORD = "a brand new passphrase"
InAppLoop = Callable[..., Awaitable[Any]]
UserFactory = Callable[..., Awaitable[TestUser]]


@pytest.fixture
async def client(
    make_client: Callable[..., AsyncTestClient[Litestar]], smtp_server: SmtpServer
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app, sending its mail to the test SMTP server."""
    async with make_client(**smtp_server.settings) as c:
        yield c


# --------------------------------------------------------------------------- helpers


async def login(client: AsyncTestClient[Litestar], username: str, password: str) -> Any:
    return await client.post("/api/auth/login", data={"username": username, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def request_change(
    client: AsyncTestClient[Litestar], user: TestUser, new_email: str, password: str | None = None
) -> Any:
    return await client.post(
        "/api/users/me/email",
        json={"new_email": new_email, "password": password or user.password},
        headers=user.headers,
    )


async def mail_to(smtp_server: SmtpServer, address: str, subject_word: str) -> EmailMessage:
    """The first mail to ``address`` whose subject has ``subject_word`` (delivered in the background)."""
    for _ in range(300):
        for message in smtp_server.sink.to(address):
            if subject_word.lower() in str(message["Subject"]).lower():
                return message
        await asyncio.sleep(0.05)
    got = [(str(m["To"]), str(m["Subject"])) for m in smtp_server.messages]
    raise AssertionError(f"no mail to {address} about {subject_word!r}; got {got}")


async def link_path(smtp_server: SmtpServer, address: str) -> str:
    """The path of the email change link mailed to ``address``."""
    mail = await mail_to(smtp_server, address, "confirm your new email")
    (link,) = smtp_server.sink.links(mail)
    assert link.startswith("http://testserver.local/api/auth/confirm_email_change/")
    assert link in smtp_server.sink.html(mail)
    return urlparse(link).path


async def outbox_settled(client: AsyncTestClient[Litestar]) -> None:
    """Wait until the job runner has nothing pending (requests resolved, mails sent)."""
    runner = client.app.state.job_runner
    for _ in range(300):
        status = await asyncio.to_thread(client.blocking_portal.call, runner.status)
        if status.pending == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the outbox still has pending rows")


async def stored_user(app: Litestar, user_id: UUID) -> User:
    async with app.state.db_config.get_session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user


async def live_sessions(app: Litestar, user_id: UUID) -> set[UUID]:
    async with app.state.db_config.get_session() as session:
        rows = await session.scalars(
            select(UserSession.id).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        )
        return set(rows)


async def outbox_rows(app: Litestar) -> int:
    async with app.state.db_config.get_session() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxMail)) or 0)


async def cached(app: Litestar, user_id: UUID) -> bytes | None:
    return await app.stores.get(cache.USER_CACHE).get(str(user_id))


def email_change_token(user: User, new_email: str, ttl: timedelta = timedelta(hours=1)) -> str:
    """A token as the service makes them, for the user's current state."""
    token, _ = create_token(
        SECRET, Purpose.EMAIL_CHANGE, str(user.id), ttl, ne=new_email, st=email_change_state(user)
    )
    return token


# --------------------------------------------------------------------------- the whole change, JSON client


async def test_change_by_a_json_client(
    client: AsyncTestClient[Litestar],
    smtp_server: SmtpServer,
    user: TestUser,
    app: Litestar,
    in_app_loop: InAppLoop,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = (await login(client, user.email, user.password)).json()  # a second session, elsewhere
    assert (await client.get("/api/users/me", headers=bearer(other["access_token"]))).status_code == 200
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200
    assert await in_app_loop(cached, app, user.id) is not None  # warm cache
    caplog.set_level(logging.INFO, logger="app.audit")

    asked = await request_change(client, user, "  New.Address@Example.COM ")

    assert asked.status_code == 202
    assert "confirmation link" in asked.json()["message"]
    notice = await mail_to(smtp_server, user.email, "change of your")
    assert "new.address@example.com" in smtp_server.sink.text(notice)
    assert smtp_server.sink.links(notice) == []  # the old address gets no link
    path = await link_path(smtp_server, "new.address@example.com")
    # Nothing changed yet.
    assert (await in_app_loop(stored_user, app, user.id)).email == user.email
    assert (await client.get(path)).json() == {
        "message": "The link is valid: POST to this address to change your email."
    }
    assert (await in_app_loop(stored_user, app, user.id)).email == user.email

    done = await client.post(path)

    assert done.status_code == 200
    assert done.json() == {"message": "Your email is now new.address@example.com."}
    stored = await in_app_loop(stored_user, app, user.id)
    assert stored.email == "new.address@example.com"
    assert stored.confirmed is True
    assert await in_app_loop(cached, app, user.id) is None
    # The session that asked stays; every other one ends at once.
    me = await client.get("/api/users/me", headers=user.headers)
    assert me.status_code == 200
    assert me.json()["email"] == "new.address@example.com"
    assert (await client.get("/api/users/me", headers=bearer(other["access_token"]))).status_code == 401
    refresh = await client.post("/api/auth/refresh_token", json={"refresh_token": other["refresh_token"]})
    assert refresh.status_code == 401
    assert await in_app_loop(live_sessions, app, user.id) == {user.session_id}
    # Log in with the new address; the old one names nobody now.
    assert (await login(client, "new.address@example.com", user.password)).status_code == 200
    assert (await login(client, user.email, user.password)).status_code == 401
    changed = await mail_to(smtp_server, user.email, "was changed")
    assert "new.address@example.com" in smtp_server.sink.text(changed)
    # The audit log has both events, with the user and never the link.
    events = [(r.fields["event"], r.fields["user_id"]) for r in caplog.records if r.name == "app.audit"]
    assert ("email_change_requested", str(user.id)) in events
    assert ("email_changed", str(user.id)) in events
    assert path.rsplit("/", 1)[1] not in caplog.text


async def test_the_link_works_once(
    client: AsyncTestClient[Litestar],
    smtp_server: SmtpServer,
    user: TestUser,
    app: Litestar,
    in_app_loop: InAppLoop,
) -> None:
    await request_change(client, user, "once@example.com")
    path = await link_path(smtp_server, "once@example.com")
    assert (await client.post(path)).status_code == 200

    again = await client.post(path)
    looked = await client.get(path)

    assert again.status_code == looked.status_code == 400
    assert again.json()["detail"] == "This email change link is invalid, expired or already used."
    assert (await in_app_loop(stored_user, app, user.id)).email == "once@example.com"


async def test_a_second_link_dies_when_the_first_is_used(
    client: AsyncTestClient[Litestar],
    smtp_server: SmtpServer,
    user: TestUser,
    app: Litestar,
    in_app_loop: InAppLoop,
) -> None:
    await request_change(client, user, "first@example.com")
    await request_change(client, user, "second@example.com")
    first = await link_path(smtp_server, "first@example.com")
    second = await link_path(smtp_server, "second@example.com")

    assert (await client.post(second)).status_code == 200
    assert (await client.post(first)).status_code == 400
    assert (await in_app_loop(stored_user, app, user.id)).email == "second@example.com"


async def test_a_gravatar_follows_the_address(
    client: AsyncTestClient[Litestar],
    smtp_server: SmtpServer,
    user_factory: UserFactory,
    app: Litestar,
    in_app_loop: InAppLoop,
) -> None:
    user = await user_factory()
    await in_app_loop(_set_avatar, app, user.id, gravatar_url(user.email))
    await request_change(client, user, "gravatar@example.com")

    assert (await client.post(await link_path(smtp_server, "gravatar@example.com"))).status_code == 200

    assert (await in_app_loop(stored_user, app, user.id)).avatar_url == gravatar_url("gravatar@example.com")


async def _set_avatar(app: Litestar, user_id: UUID, url: str) -> None:
    async with app.state.db_config.get_session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.avatar_url = url
        await session.commit()


# --------------------------------------------------------------------------- no enumeration


async def test_a_taken_address_gets_the_same_answer_and_no_mail(
    client: AsyncTestClient[Litestar],
    smtp_server: SmtpServer,
    user_factory: UserFactory,
    app: Litestar,
    in_app_loop: InAppLoop,
) -> None:
    user, owner = await user_factory(), await user_factory()

    taken = await request_change(client, user, owner.email.upper())
    free = await request_change(client, user, "free@example.com")

    assert taken.status_code == free.status_code == 202
    assert taken.json() == free.json()
    await link_path(smtp_server, "free@example.com")
    await outbox_settled(client)
    # Both requests noticed to the account's own address, the free one got its link, and the
    # owner of the taken address got nothing at all.
    notices = [m for m in smtp_server.sink.to(user.email) if "change of your" in str(m["Subject"]).lower()]
    assert len(notices) == 2
    assert smtp_server.sink.to(owner.email) == []
    assert (await in_app_loop(stored_user, app, user.id)).email == user.email


async def test_an_address_taken_meanwhile_is_a_409_and_nothing_changes(
    client: AsyncTestClient[Litestar],
    smtp_server: SmtpServer,
    user_factory: UserFactory,
    app: Litestar,
    in_app_loop: InAppLoop,
) -> None:
    user = await user_factory()
    await request_change(client, user, "late@example.com")
    path = await link_path(smtp_server, "late@example.com")
    other = (await login(client, user.email, user.password)).json()
    await user_factory(email="late@example.com")  # registered after the link was sent

    json_answer = await client.post(path)
    page = await client.post(path, headers=BROWSER)

    assert json_answer.status_code == 409
    assert json_answer.json()["detail"] == "This email is already taken"
    assert page.status_code == 409
    assert page.headers["content-type"].startswith("text/html")
    assert "belongs to another account" in page.text
    assert (await in_app_loop(stored_user, app, user.id)).email == user.email
    assert (await client.get("/api/users/me", headers=bearer(other["access_token"]))).status_code == 200


# --------------------------------------------------------------------------- bad requests


async def test_a_wrong_password_is_a_400_and_nothing_is_queued(
    client: AsyncTestClient[Litestar], user: TestUser, app: Litestar, in_app_loop: InAppLoop
) -> None:
    response = await request_change(client, user, "wrong@example.com", password="not my password")

    assert response.status_code == 400
    assert response.json()["extra"] == [
        {"message": "The password is wrong", "key": "password", "source": "body"}
    ]
    assert await in_app_loop(outbox_rows, app) == 0


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"new_email": "not-an-address", "password": "x"}, "new_email"),
        ({"new_email": "a@example.com"}, None),
        ({"new_email": "a@example.com", "password": "x", "role": "admin"}, None),
        ({"new_email": "a\u0000b@example.com", "password": "x"}, "new_email"),
        ({"new_email": "a@example.com", "password": ""}, "password"),
    ],
)
async def test_a_malformed_body_is_a_400(
    client: AsyncTestClient[Litestar],
    user: TestUser,
    app: Litestar,
    in_app_loop: InAppLoop,
    body: dict[str, str],
    key: str | None,
) -> None:
    response = await client.post("/api/users/me/email", json=body, headers=user.headers)

    assert response.status_code == 400
    if key:
        assert response.json()["extra"][0]["key"] == key
    assert await in_app_loop(outbox_rows, app) == 0


async def test_the_current_address_is_a_400(
    client: AsyncTestClient[Litestar], user: TestUser, app: Litestar, in_app_loop: InAppLoop
) -> None:
    response = await request_change(client, user, user.email.upper())

    assert response.status_code == 400
    assert response.json()["extra"][0]["key"] == "new_email"
    assert await in_app_loop(outbox_rows, app) == 0


async def test_the_request_needs_a_token_and_json(client: AsyncTestClient[Litestar], user: TestUser) -> None:
    body = {"new_email": "x@example.com", "password": user.password}
    assert (await client.post("/api/users/me/email", json=body)).status_code == 401
    form = await client.post("/api/users/me/email", data=body, headers=user.headers)
    assert form.status_code == 415


# --------------------------------------------------------------------------- dead links


async def test_a_password_change_kills_the_link(
    client: AsyncTestClient[Litestar],
    smtp_server: SmtpServer,
    user: TestUser,
    app: Litestar,
    in_app_loop: InAppLoop,
) -> None:
    await request_change(client, user, "killed@example.com")
    path = await link_path(smtp_server, "killed@example.com")
    changed = await client.patch(
        "/api/users/me/password",
        json={"current_password": user.password, "new_password": NEW_PASSWORD},
        headers=user.headers,
    )
    assert changed.status_code == 204

    assert (await client.get(path)).status_code == 400
    assert (await client.post(path)).status_code == 400
    assert (await in_app_loop(stored_user, app, user.id)).email == user.email


async def test_an_expired_link_is_refused(
    client: AsyncTestClient[Litestar], user: TestUser, app: Litestar, in_app_loop: InAppLoop
) -> None:
    stored = await in_app_loop(stored_user, app, user.id)
    expired = email_change_token(stored, "expired@example.com", ttl=timedelta(seconds=-1))
    fresh = email_change_token(stored, "fresh@example.com")
    assert (await client.get(f"/api/auth/confirm_email_change/{fresh}")).status_code == 200  # the control

    assert (await client.post(f"/api/auth/confirm_email_change/{expired}")).status_code == 400
    assert (await in_app_loop(stored_user, app, user.id)).email == user.email


async def test_the_link_lives_at_most_a_day(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser, app: Litestar
) -> None:
    await request_change(client, user, "day@example.com")
    path = await link_path(smtp_server, "day@example.com")
    token = path.rsplit("/", 1)[1]

    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["pur"] == "email_change"
    assert 0 < claims["exp"] - claims["iat"] <= 24 * 3600
    assert set(claims) >= {"ne", "st"}


async def test_tokens_of_other_purposes_are_refused_both_ways(
    client: AsyncTestClient[Litestar], user: TestUser, app: Litestar, in_app_loop: InAppLoop
) -> None:
    stored = await in_app_loop(stored_user, app, user.id)
    change = email_change_token(stored, "purpose@example.com")
    for purpose in (Purpose.CONFIRM_EMAIL, Purpose.RESET_PASSWORD, Purpose.ACCESS, Purpose.REFRESH):
        other, _ = create_token(
            SECRET,
            purpose,
            str(user.id),
            timedelta(minutes=5),
            ne="purpose@example.com",
            st=email_change_state(stored),
            em=stored.email,
            sid=str(user.session_id),
        )
        assert (await client.get(f"/api/auth/confirm_email_change/{other}")).status_code == 400, purpose
        assert (await client.post(f"/api/auth/confirm_email_change/{other}")).status_code == 400, purpose

    # The email change token anywhere else.
    assert (await client.get(f"/api/auth/confirmed_email/{change}")).status_code == 400
    assert (await client.get(f"/api/auth/confirm_update_password/{change}")).status_code == 400
    assert (await client.get("/api/users/me", headers=bearer(change))).status_code == 401
    refresh = await client.post("/api/auth/refresh_token", json={"refresh_token": change})
    assert refresh.status_code == 401
    assert (await in_app_loop(stored_user, app, user.id)).email == user.email


async def test_a_reset_link_mailed_to_the_old_address_dies_with_the_change(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser
) -> None:
    assert (await client.post("/api/auth/update_password", json={"email": user.email})).status_code == 202
    reset = urlparse(smtp_server.sink.links(await mail_to(smtp_server, user.email, "reset"))[0]).path
    await request_change(client, user, "moved@example.com")
    assert (await client.post(await link_path(smtp_server, "moved@example.com"))).status_code == 200

    assert (await client.get(reset)).status_code == 400
    assert (await client.post(reset, json={"password": NEW_PASSWORD})).status_code == 400


# --------------------------------------------------------------------------- a browser


async def test_a_browser_gets_a_button_then_the_result(
    client: AsyncTestClient[Litestar],
    smtp_server: SmtpServer,
    user: TestUser,
    app: Litestar,
    in_app_loop: InAppLoop,
) -> None:
    await request_change(client, user, "browser@example.com")
    path = await link_path(smtp_server, "browser@example.com")

    page = await client.get(path, headers=BROWSER)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f'<form method="post" action="{path}">' in page.text
    assert "browser@example.com" in page.text
    assert (await in_app_loop(stored_user, app, user.id)).email == user.email  # a GET changes nothing

    done = await client.post(
        path, content=b"", headers={**BROWSER, "Content-Type": "application/x-www-form-urlencoded"}
    )

    assert done.status_code == 200
    assert done.headers["content-type"].startswith("text/html")
    assert "Your email is now browser@example.com." in done.text
    assert (await in_app_loop(stored_user, app, user.id)).email == "browser@example.com"
    again = await client.post(
        path, content=b"", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert again.status_code == 400
    assert again.headers["content-type"].startswith("text/html")
    assert "Link not valid" in again.text
    assert "/api/users/me/email" in again.text


async def test_a_browser_with_a_broken_link_gets_a_page(client: AsyncTestClient[Litestar]) -> None:
    page = await client.get("/api/auth/confirm_email_change/not-a-token", headers=BROWSER)
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "invalid, expired or already used" in page.text


async def test_a_deleted_accounts_link_is_dead(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user_factory: UserFactory
) -> None:
    user = await user_factory()
    await request_change(client, user, "gone@example.com")
    path = await link_path(smtp_server, "gone@example.com")
    deleted = await client.request(
        "DELETE", "/api/users/me", json={"password": user.password}, headers=user.headers
    )
    assert deleted.status_code == 204

    assert (await client.get(path)).status_code == 400
    assert (await client.post(path)).status_code == 400
    # The address was never taken by the link: it can register.
    registered = await client.post(
        "/api/auth/register",
        json={"username": "newcomer", "email": "gone@example.com", "password": "a good passphrase"},
    )
    assert registered.status_code == 201
