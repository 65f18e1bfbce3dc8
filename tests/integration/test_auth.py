"""The Auth table of API.md through HTTP: register, login, refresh, logout, confirmation.

Mail goes to a real SMTP server (aiosmtpd) and the links in it are followed as a user would.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

import jwt
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app import cache
from app.security.tokens import ALGORITHM, AUDIENCE, ISSUER, Purpose, create_token
from app.users.models import User, UserSession
from app.users.schemas import CurrentUser
from tests.conftest import SECRET, SmtpServer, TestUser

STRONG = "a long enough passphrase"
InAppLoop = Callable[..., Awaitable[Any]]


@pytest.fixture
async def client(
    make_client: Callable[..., AsyncTestClient[Litestar]], smtp_server: SmtpServer
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The app, sending its mail to the test SMTP server."""
    async with make_client(**smtp_server.settings) as c:
        yield c


def path_of(link: str) -> str:
    """The path of a mailed link (the test client talks to the app directly)."""
    assert link.startswith("http://testserver.local/"), link
    return urlparse(link).path


async def register(client: AsyncTestClient[Litestar], **fields: Any) -> Any:
    body = {"username": "ada", "email": "Ada@Example.com", "password": STRONG, **fields}
    return await client.post("/api/auth/register", json=body)


async def login(client: AsyncTestClient[Litestar], username: str, password: str = STRONG) -> Any:
    return await client.post("/api/auth/login", data={"username": username, "password": password})


async def registered_and_confirmed(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer
) -> dict[str, Any]:
    """Register ada, follow the confirmation link, log in; return the tokens."""
    assert (await register(client)).status_code == 201
    (mail,) = await smtp_server.sink.wait_for(1)
    (link,) = smtp_server.sink.links(mail)
    assert (await client.get(path_of(link))).status_code == 200
    response = await login(client, "ada")
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Database helpers: run on the app's loop through ``in_app_loop`` (its pool lives there).


async def user_by_email(app: Litestar, email: str) -> User | None:
    async with app.state.db_config.get_session() as session:
        return await session.scalar(select(User).where(User.email == email))


async def session_row(app: Litestar, session_id: UUID) -> UserSession | None:
    async with app.state.db_config.get_session() as session:
        return await session.get(UserSession, session_id)


async def expire_sessions(app: Litestar, user_id: UUID) -> None:
    async with app.state.db_config.get_session() as session:
        for row in await session.scalars(select(UserSession).where(UserSession.user_id == user_id)):
            row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        await session.commit()


async def add_user(app: Litestar, username: str, email: str, password_hash: str) -> None:
    async with app.state.db_config.get_session() as session:
        session.add(
            User(username=username, email=email, password_hash=password_hash, confirmed=True, avatar_url="x")
        )
        await session.commit()


# --------------------------------------------------------------------------- register


async def test_register_creates_an_unconfirmed_user_and_mails_a_link(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, app: Litestar, in_app_loop: InAppLoop
) -> None:
    response = await register(client)

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "username", "email", "role", "confirmed", "avatar_url", "created_at"}
    assert body["email"] == "ada@example.com"
    assert body["username"] == "ada"
    assert body["role"] == "user"
    assert body["confirmed"] is False
    assert body["avatar_url"].startswith("https://www.gravatar.com/avatar/")
    assert re.search(r"(Z|\+00:00)$", body["created_at"])
    assert STRONG not in response.text

    (mail,) = await smtp_server.sink.wait_for(1)
    assert mail["To"] == "ada@example.com"
    assert "Confirm" in mail["Subject"]
    assert mail.get_body(("html",)) is not None
    (link,) = smtp_server.sink.links(mail)
    assert link.startswith("http://testserver.local/api/auth/confirmed_email/")
    assert link in smtp_server.sink.html(mail)

    user = await in_app_loop(user_by_email, app, "ada@example.com")
    assert user is not None
    assert user.password_hash != STRONG
    assert user.password_hash.startswith("$2b$04$")


async def test_register_conflicts_case_insensitively(client: AsyncTestClient[Litestar]) -> None:
    assert (await register(client)).status_code == 201

    same_email = await register(client, username="other", email="ADA@example.COM")
    same_name = await register(client, username="ADA", email="other@example.com")

    assert same_email.status_code == 409
    assert "email" in same_email.json()["detail"]
    assert same_name.status_code == 409
    assert "username" in same_name.json()["detail"]


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"role": "admin"}, "role"),
        ({"confirmed": True}, "confirmed"),
        ({"password": "short"}, "password"),
        ({"password": "x" * 129}, "password"),
        ({"password": "password123"}, "password"),
        ({"password": "Qwertyuiop"}, "password"),
        ({"username": "ab"}, "username"),
        ({"username": "a" * 51}, "username"),
        ({"username": "ada@home"}, "username"),
        ({"username": "ada lovelace"}, "username"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@b"}, "email"),
        ({"email": "a" * 250 + "@example.com"}, "email"),
        ({"email": 42}, "email"),
    ],
)
async def test_register_refuses_bad_input(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, fields: dict[str, Any], key: str
) -> None:
    response = await register(client, **fields)

    assert response.status_code == 400, response.text
    assert key in response.text
    assert smtp_server.messages == []


async def test_register_refuses_missing_fields_and_non_json(client: AsyncTestClient[Litestar]) -> None:
    missing = await client.post("/api/auth/register", json={"username": "ada", "email": "ada@example.com"})
    broken = await client.post(
        "/api/auth/register", content=b"{not json", headers={"Content-Type": "application/json"}
    )

    assert missing.status_code == 400
    assert "password" in missing.text
    assert broken.status_code == 400


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/api/auth/register",
            b'{"username": "ada", "email": "ada@example.com", "password": "a long passphrase"}',
        ),
        ("/api/auth/refresh_token", b'{"refresh_token": "x"}'),
        ("/api/auth/request_email", b'{"email": "ada@example.com"}'),
        ("/api/auth/update_password", b'{"email": "ada@example.com"}'),
    ],
)
async def test_json_routes_refuse_other_content_types_and_deep_nesting(
    client: AsyncTestClient[Litestar], path: str, body: bytes
) -> None:
    as_text = await client.post(path, content=body, headers={"Content-Type": "text/plain"})
    as_form = await client.post(path, data={"email": "ada@example.com"})
    deep = await client.post(path, content=b"[" * 100_000, headers={"Content-Type": "application/json"})

    assert as_text.status_code == 415
    assert "application/json" in as_text.json()["detail"]
    assert as_form.status_code == 415
    assert deep.status_code == 400
    assert deep.json()["detail"] == "The JSON body is nested too deeply"


async def test_long_passwords_are_compared_in_full(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer
) -> None:
    long_password = "p" * 80 + "A"
    assert (await register(client, password=long_password)).status_code == 201
    (mail,) = await smtp_server.sink.wait_for(1)
    await client.get(path_of(smtp_server.sink.links(mail)[0]))

    assert (await login(client, "ada", "p" * 80 + "B")).status_code == 401
    assert (await login(client, "ada", long_password)).status_code == 200


# --------------------------------------------------------------------------- confirmation


async def test_confirmation_link_confirms_once_then_says_so(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer
) -> None:
    await register(client)
    (mail,) = await smtp_server.sink.wait_for(1)
    path = path_of(smtp_server.sink.links(mail)[0])

    assert (await login(client, "ada")).status_code == 403
    first = await client.get(path)
    again = await client.get(path)

    assert first.status_code == 200
    assert first.json() == {"message": "Your email is confirmed."}
    assert again.status_code == 200
    assert "already" in again.json()["message"]
    assert (await login(client, "ada")).status_code == 200


async def test_confirmation_page_for_a_browser(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer
) -> None:
    await register(client)
    (mail,) = await smtp_server.sink.wait_for(1)
    path = path_of(smtp_server.sink.links(mail)[0])
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}

    page = await client.get(path, headers=browser)
    bad = await client.get("/api/auth/confirmed_email/nope", headers=browser)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Your email is confirmed." in page.text
    assert "<script" not in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("text/html")
    assert "invalid or has expired" in bad.text


async def test_confirmation_refuses_bad_tokens(client: AsyncTestClient[Litestar], user_factory: Any) -> None:
    unconfirmed = await user_factory(confirmed=False)
    uid = str(unconfirmed.id)
    good_claims = {"em": unconfirmed.email}
    tokens = {
        "garbage": "nope",
        "expired": create_token(SECRET, Purpose.CONFIRM_EMAIL, uid, timedelta(seconds=-1), **good_claims)[0],
        "wrong key": create_token("k" * 40, Purpose.CONFIRM_EMAIL, uid, timedelta(hours=1), **good_claims)[0],
        "access": create_token(SECRET, Purpose.ACCESS, uid, timedelta(hours=1), **good_claims)[0],
        "refresh": create_token(SECRET, Purpose.REFRESH, uid, timedelta(hours=1), **good_claims)[0],
        "reset": create_token(SECRET, Purpose.RESET_PASSWORD, uid, timedelta(hours=1), **good_claims)[0],
        "other email": create_token(
            SECRET, Purpose.CONFIRM_EMAIL, uid, timedelta(hours=1), em="someone@else.com"
        )[0],
        "unknown user": create_token(
            SECRET,
            Purpose.CONFIRM_EMAIL,
            "00000000-0000-0000-0000-000000000000",
            timedelta(hours=1),
            **good_claims,
        )[0],
        "not a uuid": create_token(SECRET, Purpose.CONFIRM_EMAIL, "x", timedelta(hours=1), **good_claims)[0],
    }
    for name, token in tokens.items():
        response = await client.get(f"/api/auth/confirmed_email/{token}")
        assert response.status_code == 400, name
        assert response.json()["detail"] == "This confirmation link is invalid or has expired.", name

    valid = create_token(SECRET, Purpose.CONFIRM_EMAIL, uid, timedelta(hours=1), **good_claims)[0]
    assert (await client.get(f"/api/auth/confirmed_email/{valid}")).status_code == 200


async def test_confirmation_is_visible_on_the_next_request(
    client: AsyncTestClient[Litestar], user_factory: Any
) -> None:
    unconfirmed = await user_factory(confirmed=False)
    # Warm the cache with the unconfirmed snapshot.
    before = await client.get("/api/users/me", headers=unconfirmed.headers)
    assert before.json()["confirmed"] is False

    token = create_token(
        SECRET, Purpose.CONFIRM_EMAIL, str(unconfirmed.id), timedelta(hours=1), em=unconfirmed.email
    )[0]
    assert (await client.get(f"/api/auth/confirmed_email/{token}")).status_code == 200

    after = await client.get("/api/users/me", headers=unconfirmed.headers)
    assert after.json()["confirmed"] is True


async def test_request_email_answers_the_same_and_mails_only_the_unconfirmed(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user_factory: Any
) -> None:
    confirmed = await user_factory()
    unconfirmed = await user_factory(confirmed=False)

    answers = [
        await client.post("/api/auth/request_email", json={"email": address})
        for address in (confirmed.email, "nobody@example.com", unconfirmed.email.upper())
    ]

    assert {r.status_code for r in answers} == {202}
    assert len({r.text for r in answers}) == 1
    (mail,) = await smtp_server.sink.wait_for(1)
    await asyncio.sleep(0.05)
    assert len(smtp_server.messages) == 1
    assert mail["To"] == unconfirmed.email
    assert (await client.get(path_of(smtp_server.sink.links(mail)[0]))).status_code == 200
    assert (await login(client, unconfirmed.username, unconfirmed.password)).status_code == 200


async def test_request_email_validates_the_address(client: AsyncTestClient[Litestar]) -> None:
    bad = await client.post("/api/auth/request_email", json={"email": "nope"})
    extra = await client.post("/api/auth/request_email", json={"email": "a@example.com", "x": 1})

    assert bad.status_code == 400
    assert extra.status_code == 400


# --------------------------------------------------------------------------- login


async def test_login_with_email_or_username_returns_tokens(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    by_email = await login(client, user.email.upper(), user.password)
    by_name = await login(client, user.username.upper(), user.password)

    for response in (by_email, by_name):
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
        assert body["token_type"] == "bearer"
        assert body["expires_in"] == 15 * 60
        me = await client.get("/api/users/me", headers=bearer(body["access_token"]))
        assert me.status_code == 200
        assert me.json()["id"] == str(user.id)


async def test_a_new_session_works_at_once_despite_a_warm_cache(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200  # cache warm

    tokens = (await login(client, user.email, user.password)).json()

    assert (await client.get("/api/users/me", headers=bearer(tokens["access_token"]))).status_code == 200
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200


async def test_login_stores_only_a_hash_of_the_refresh_token(
    client: AsyncTestClient[Litestar], user: TestUser, app: Litestar, in_app_loop: InAppLoop
) -> None:
    tokens = (await login(client, user.email, user.password)).json()

    claims = jwt.decode(tokens["access_token"], SECRET, algorithms=[ALGORITHM], audience=AUDIENCE)
    row = await in_app_loop(session_row, app, UUID(claims["sid"]))
    assert row is not None
    assert row.user_id == user.id
    assert row.refresh_token_hash != tokens["refresh_token"]
    assert len(row.refresh_token_hash) == 64
    assert row.expires_at > datetime.now(UTC) + timedelta(days=6)


async def test_login_failures_look_the_same(client: AsyncTestClient[Litestar], user: TestUser) -> None:
    unknown = await login(client, "nobody@example.com", user.password)
    unknown_name = await login(client, "nobody", user.password)
    wrong = await login(client, user.email, "wrong password!")

    for response in (unknown, unknown_name, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert unknown.json() == wrong.json() == unknown_name.json()


async def test_login_unconfirmed_is_403_only_with_the_right_password(
    client: AsyncTestClient[Litestar], user_factory: Any
) -> None:
    unconfirmed = await user_factory(confirmed=False)

    assert (await login(client, unconfirmed.email, "wrong password!")).status_code == 401
    forbidden = await login(client, unconfirmed.email, unconfirmed.password)
    assert forbidden.status_code == 403
    assert "not confirmed" in forbidden.json()["detail"]


async def test_login_refuses_malformed_forms(client: AsyncTestClient[Litestar]) -> None:
    missing = await client.post("/api/auth/login", data={"username": "ada"})
    as_json = await client.post("/api/auth/login", json={"username": "ada", "password": "x" * 10})

    assert missing.status_code == 400
    assert as_json.status_code == 415


async def test_login_takes_the_same_time_for_unknown_users(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: Any, smtp_server: SmtpServer
) -> None:
    # A real cost factor, so that skipping bcrypt would stand out against the noise.
    async with make_client(bcrypt_rounds=10, **smtp_server.settings) as timed:
        from app.security.passwords import hash_password

        known = "known@example.com"
        hashed = await hash_password(STRONG, 10)
        await asyncio.to_thread(timed.blocking_portal.call, add_user, timed.app, "known", known, hashed)

        async def duration(username: str) -> float:
            started = time.perf_counter()
            response = await login(timed, username, "wrong password!")
            assert response.status_code == 401
            return time.perf_counter() - started

        await duration("warm-up@example.com")
        # Interleaved, so that a busy moment of the machine weighs on both sides alike.
        unknowns, wrongs = [], []
        for _ in range(7):
            unknowns.append(await duration("nobody@example.com"))
            wrongs.append(await duration(known))
        # The fastest of each: load only ever adds time, the work itself is the floor.
        unknown, wrong = min(unknowns), min(wrongs)
    assert abs(unknown - wrong) < max(0.5 * wrong, 0.02), (unknown, wrong)


# --------------------------------------------------------------------------- refresh


async def test_refresh_rotates_and_the_old_token_dies(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    first = (await login(client, user.email, user.password)).json()

    second = await client.post("/api/auth/refresh_token", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["token_type"] == "bearer"
    assert (await client.get("/api/users/me", headers=bearer(rotated["access_token"]))).status_code == 200

    third = await client.post("/api/auth/refresh_token", json={"refresh_token": rotated["refresh_token"]})
    assert third.status_code == 200


async def test_reusing_a_rotated_refresh_token_ends_every_session(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    stolen = (await login(client, user.email, user.password)).json()
    other = (await login(client, user.email, user.password)).json()
    rotated = (
        await client.post("/api/auth/refresh_token", json={"refresh_token": stolen["refresh_token"]})
    ).json()
    # Every access token works before the re-use (and warms the cache).
    for token in (rotated["access_token"], other["access_token"]):
        assert (await client.get("/api/users/me", headers=bearer(token))).status_code == 200

    reuse = await client.post("/api/auth/refresh_token", json={"refresh_token": stolen["refresh_token"]})

    assert reuse.status_code == 401
    assert reuse.headers["www-authenticate"] == "Bearer"
    for token in (rotated["access_token"], other["access_token"], stolen["access_token"]):
        assert (await client.get("/api/users/me", headers=bearer(token))).status_code == 401
    for token in (rotated["refresh_token"], other["refresh_token"]):
        response = await client.post("/api/auth/refresh_token", json={"refresh_token": token})
        assert response.status_code == 401
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 401


async def test_concurrent_refreshes_with_one_token_let_at_most_one_through(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    tokens = (await login(client, user.email, user.password)).json()

    responses = await asyncio.gather(
        *(
            client.post("/api/auth/refresh_token", json={"refresh_token": tokens["refresh_token"]})
            for _ in range(5)
        )
    )

    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) <= 1
    assert set(statuses) <= {200, 401}


async def test_refresh_refuses_bad_tokens(client: AsyncTestClient[Litestar], user: TestUser) -> None:
    tokens = (await login(client, user.email, user.password)).json()
    sid = jwt.decode(tokens["refresh_token"], SECRET, algorithms=[ALGORITHM], audience=AUDIENCE)["sid"]
    uid = str(user.id)
    bad = {
        "garbage": "not.a.token",
        "access token": tokens["access_token"],
        "expired": create_token(SECRET, Purpose.REFRESH, uid, timedelta(seconds=-1), sid=sid)[0],
        "wrong key": create_token("k" * 40, Purpose.REFRESH, uid, timedelta(days=1), sid=sid)[0],
        "confirm": create_token(SECRET, Purpose.CONFIRM_EMAIL, uid, timedelta(days=1), sid=sid)[0],
        "reset": create_token(SECRET, Purpose.RESET_PASSWORD, uid, timedelta(days=1), sid=sid)[0],
        "no sid": create_token(SECRET, Purpose.REFRESH, uid, timedelta(days=1))[0],
        "unknown sid": create_token(
            SECRET, Purpose.REFRESH, uid, timedelta(days=1), sid="00000000-0000-0000-0000-000000000000"
        )[0],
        "alg none": jwt.encode(
            {
                "sub": uid,
                "pur": "refresh",
                "sid": sid,
                "aud": AUDIENCE,
                "iss": ISSUER,
                "exp": 2**40,
                "nbf": 0,
                "iat": 0,
            },
            key=None,
            algorithm="none",
        ),
        "wrong audience": jwt.encode(
            {
                "sub": uid,
                "pur": "refresh",
                "sid": sid,
                "aud": "other",
                "iss": ISSUER,
                "exp": 2**40,
                "nbf": 0,
                "iat": 0,
            },
            SECRET,
            algorithm=ALGORITHM,
        ),
    }
    for name, token in bad.items():
        response = await client.post("/api/auth/refresh_token", json={"refresh_token": token})
        assert response.status_code == 401, name
    # None of those ended the session: the genuine token still works.
    good = await client.post("/api/auth/refresh_token", json={"refresh_token": tokens["refresh_token"]})
    assert good.status_code == 200


async def test_refresh_after_the_session_expired_is_refused(
    client: AsyncTestClient[Litestar], user: TestUser, app: Litestar, in_app_loop: InAppLoop
) -> None:
    tokens = (await login(client, user.email, user.password)).json()
    await in_app_loop(expire_sessions, app, user.id)

    response = await client.post("/api/auth/refresh_token", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 401


async def test_refresh_body_is_validated(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.post("/api/auth/refresh_token", json={})).status_code == 400
    assert (await client.post("/api/auth/refresh_token", json={"refresh_token": ""})).status_code == 400
    assert (
        await client.post("/api/auth/refresh_token", json={"refresh_token": "x" * 5000})
    ).status_code == 400


# --------------------------------------------------------------------------- bearer token attacks


async def test_bearer_refuses_every_token_but_a_live_access_token(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    tokens = (await login(client, user.email, user.password)).json()
    sid = jwt.decode(tokens["access_token"], SECRET, algorithms=[ALGORITHM], audience=AUDIENCE)["sid"]
    uid = str(user.id)
    claims = {"sub": uid, "sid": sid, "iss": ISSUER, "exp": 2**40, "nbf": 0, "iat": 0}
    bad = {
        "refresh": tokens["refresh_token"],
        "confirm": create_token(
            SECRET, Purpose.CONFIRM_EMAIL, uid, timedelta(hours=1), sid=sid, em=user.email
        )[0],
        "reset": create_token(SECRET, Purpose.RESET_PASSWORD, uid, timedelta(hours=1), sid=sid)[0],
        "expired": create_token(SECRET, Purpose.ACCESS, uid, timedelta(seconds=-1), sid=sid)[0],
        "wrong key": create_token("k" * 40, Purpose.ACCESS, uid, timedelta(hours=1), sid=sid)[0],
        "alg none": jwt.encode({**claims, "pur": "access", "aud": AUDIENCE}, key=None, algorithm="none"),
        "HS512": jwt.encode({**claims, "pur": "access", "aud": AUDIENCE}, SECRET, algorithm="HS512"),
        "wrong audience": jwt.encode(
            {**claims, "pur": "access", "aud": "other"}, SECRET, algorithm=ALGORITHM
        ),
        "no purpose": jwt.encode({**claims, "aud": AUDIENCE}, SECRET, algorithm=ALGORITHM),
        "unknown session": create_token(
            SECRET, Purpose.ACCESS, uid, timedelta(hours=1), sid="00000000-0000-0000-0000-000000000000"
        )[0],
    }
    for name, token in bad.items():
        response = await client.get("/api/users/me", headers=bearer(token))
        assert response.status_code == 401, name
        assert response.headers["www-authenticate"] == "Bearer", name
    assert (await client.get("/api/users/me", headers=bearer(tokens["access_token"]))).status_code == 200


# --------------------------------------------------------------------------- logout


async def test_logout_ends_only_that_session_at_once(
    client: AsyncTestClient[Litestar], user: TestUser, app: Litestar
) -> None:
    mine = (await login(client, user.email, user.password)).json()
    other = (await login(client, user.email, user.password)).json()
    assert (
        await client.get("/api/users/me", headers=bearer(mine["access_token"]))
    ).status_code == 200  # cached

    response = await client.post(
        "/api/auth/logout",
        json={"refresh_token": mine["refresh_token"]},
        headers=bearer(mine["access_token"]),
    )

    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get("/api/users/me", headers=bearer(mine["access_token"]))).status_code == 401
    again = await client.post("/api/auth/refresh_token", json={"refresh_token": mine["refresh_token"]})
    assert again.status_code == 401
    assert (await client.get("/api/users/me", headers=bearer(other["access_token"]))).status_code == 200
    assert (
        await client.post("/api/auth/refresh_token", json={"refresh_token": other["refresh_token"]})
    ).status_code == 200


async def test_logout_needs_auth_and_the_users_own_refresh_token(
    client: AsyncTestClient[Litestar], user: TestUser, user_factory: Any
) -> None:
    someone = await user_factory()
    theirs = (await login(client, someone.email, someone.password)).json()
    mine = (await login(client, user.email, user.password)).json()

    anonymous = await client.post("/api/auth/logout", json={"refresh_token": mine["refresh_token"]})
    not_mine = await client.post(
        "/api/auth/logout", json={"refresh_token": theirs["refresh_token"]}, headers=user.headers
    )
    access_as_refresh = await client.post(
        "/api/auth/logout", json={"refresh_token": mine["access_token"]}, headers=user.headers
    )
    no_body = await client.post("/api/auth/logout", json={}, headers=user.headers)

    assert anonymous.status_code == 401
    assert not_mine.status_code == 401
    assert access_as_refresh.status_code == 401
    assert no_body.status_code == 400
    # Their session survived.
    assert (
        await client.post("/api/auth/refresh_token", json={"refresh_token": theirs["refresh_token"]})
    ).status_code == 200


# --------------------------------------------------------------------------- the whole journey


async def test_register_confirm_login_use_refresh_logout(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer
) -> None:
    tokens = await registered_and_confirmed(client, smtp_server)

    me = await client.get("/api/users/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json()["confirmed"] is True
    refreshed = (
        await client.post("/api/auth/refresh_token", json={"refresh_token": tokens["refresh_token"]})
    ).json()
    out = await client.post(
        "/api/auth/logout",
        json={"refresh_token": refreshed["refresh_token"]},
        headers=bearer(refreshed["access_token"]),
    )
    assert out.status_code == 204
    assert (await client.get("/api/users/me", headers=bearer(refreshed["access_token"]))).status_code == 401


async def test_openapi_documents_every_auth_error(client: AsyncTestClient[Litestar]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    expected = {
        ("/api/auth/register", "post"): {"201", "400", "409"},
        ("/api/auth/login", "post"): {"200", "400", "401", "403"},
        ("/api/auth/refresh_token", "post"): {"200", "400", "401"},
        ("/api/auth/logout", "post"): {"204", "401"},
        ("/api/auth/confirmed_email/{token}", "get"): {"200", "400"},
        ("/api/auth/request_email", "post"): {"202", "400"},
        ("/api/auth/update_password", "post"): {"202", "400"},
        ("/api/auth/confirm_update_password/{token}", "get"): {"200", "400"},
        ("/api/auth/confirm_update_password/{token}", "post"): {"200", "400"},
        ("/api/users/me/password", "patch"): {"204", "400", "401"},
    }
    for (path, method), codes in expected.items():
        documented = set(paths[path][method]["responses"])
        assert codes <= documented, (path, method, documented)
    for path, method in (
        ("/api/auth/confirmed_email/{token}", "get"),
        ("/api/auth/confirm_update_password/{token}", "get"),
        ("/api/auth/confirm_update_password/{token}", "post"),
    ):
        for code in ("200", "400"):
            content = paths[path][method]["responses"][code]["content"]
            assert {"application/json", "text/html"} <= set(content), (path, method, code)
    login_body = paths["/api/auth/login"]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in login_body
    reset_body = paths["/api/auth/confirm_update_password/{token}"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(reset_body)


async def test_a_login_keeps_the_cached_user_and_its_new_token_works_at_once(
    client: AsyncTestClient[Litestar], user: TestUser, in_app_loop: InAppLoop
):
    """A login must not drop the user's snapshot (every in-flight request would then read the
    database at once); the new session's token is checked against the database once instead."""
    store = client.app.stores.get(cache.USER_CACHE)
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200
    cached = await in_app_loop(store.get, str(user.id))
    assert cached is not None

    tokens = (await login(client, user.email, user.password)).json()
    assert await in_app_loop(store.get, str(user.id)) == cached  # still there, unchanged

    response = await client.get(
        "/api/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 200
    sid = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
    refreshed = msgspec.msgpack.decode(await in_app_loop(store.get, str(user.id)), type=CurrentUser)
    assert {sid, str(user.session_id)} <= refreshed.session_ids  # both sessions, from the database


async def test_a_token_of_a_session_the_database_does_not_have_is_refused(
    client: AsyncTestClient[Litestar], user: TestUser
):
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200  # cached
    token, _ = create_token(SECRET, Purpose.ACCESS, str(user.id), timedelta(minutes=5), sid=str(UUID(int=7)))
    response = await client.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
