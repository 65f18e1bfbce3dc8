"""App passwords: made, listed and revoked through the API; accepted as HTTP Basic credentials only.

``/dav/`` is built elsewhere: a test-only ASGI route (:func:`basic_probe`) calls
:func:`app.users.app_passwords.authenticate_basic` as the DAV mount does, and answers the
user id it returns (or the error it raises, through the app's error handler).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlparse
from uuid import UUID, uuid4

import pytest
from litestar import Litestar, asgi
from litestar.response.base import ASGIResponse
from litestar.testing import AsyncTestClient
from litestar.types import Receive, Scope, Send
from sqlalchemy import select, update

from app.users import app_passwords
from app.users.app_passwords import (
    MAX_PER_USER,
    AppPasswordRepository,
    authenticate_basic,
    cache_key,
    secret_digest,
)
from app.users.models import AppPassword, User
from tests.conftest import QueryCounter, SmtpServer, TestUser

BASE = "/api/users/me/app-passwords"
PROBE = "/test-basic"
CHALLENGE = 'Basic realm="contacts"'
SECRET_SHAPE = re.compile(r"^[a-z2-7]{4}(-[a-z2-7]{4}){7}$")
UserFactory = Callable[..., Awaitable[TestUser]]
InAppLoop = Callable[..., Awaitable[Any]]


@asgi(PROBE, exclude_from_auth=True)
async def basic_probe(scope: Scope, receive: Receive, send: Send) -> None:
    """Test only: what the ``/dav/`` mount does first — authenticate, then answer."""
    user_id = await authenticate_basic(scope["litestar_app"], scope)
    await ASGIResponse(body=str(user_id).encode(), media_type="text/plain")(scope, receive, send)


def probed(client: AsyncTestClient[Litestar]) -> AsyncTestClient[Litestar]:
    """``client`` with the probe route (added before its lifespan starts)."""
    client.app.register(basic_probe)
    return client


@pytest.fixture
async def client(
    make_client: Callable[..., AsyncTestClient[Litestar]],
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """Override: the app with the probe route."""
    async with probed(make_client()) as c:
        yield c


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def create(client: AsyncTestClient[Litestar], user: TestUser, name: str = "Phone") -> dict[str, Any]:
    response = await client.post(BASE, json={"name": name}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def probe(client: AsyncTestClient[Litestar], username: str, password: str) -> Any:
    return await client.get(PROBE, headers=basic(username, password))


def assert_refused(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == CHALLENGE
    assert response.json()["detail"] == "Sign in with the account's email and an app password"


async def rows_of(app: Litestar, user_id: UUID) -> list[AppPassword]:
    async with app.state.db_config.get_session() as session:
        return list(await session.scalars(select(AppPassword).where(AppPassword.user_id == user_id)))


# --------------------------------------------------------------------------- the API


async def test_create_shows_the_password_once_and_stores_only_its_digest(
    client: AsyncTestClient[Litestar], user: TestUser, in_app_loop: InAppLoop
) -> None:
    created = await create(client, user, "  My phone  ")
    assert set(created) == {"id", "name", "password", "created_at"}
    assert created["name"] == "My phone"
    assert SECRET_SHAPE.fullmatch(created["password"])  # 32 base32 letters: 160 bits

    listed = await client.get(BASE, headers=user.headers)
    assert listed.status_code == 200
    assert listed.json() == [
        {"id": created["id"], "name": "My phone", "created_at": created["created_at"], "last_used_at": None}
    ]
    assert created["password"] not in listed.text

    (row,) = await in_app_loop(rows_of, client.app, user.id)
    plain = created["password"].replace("-", "")
    assert row.secret_hash == hashlib.sha256(plain.encode()).hexdigest()
    values = [str(getattr(row, c.key, "")) for c in AppPassword.__table__.columns]
    assert not any(plain in v or created["password"] in v for v in values)

    # Another one is another secret.
    other = await create(client, user, "Laptop")
    assert other["password"] != created["password"]
    assert [p["name"] for p in (await client.get(BASE, headers=user.headers)).json()] == [
        "Laptop",
        "My phone",
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 51},
        {"name": "a\x00b"},
        {"name": "tab\there"},
        {"name": 5},
        {},
        {"name": "Phone", "password": "mine"},
    ],
)
async def test_create_refuses_bad_names(
    client: AsyncTestClient[Litestar], user: TestUser, in_app_loop: InAppLoop, body: dict[str, Any]
) -> None:
    response = await client.post(BASE, json=body, headers=user.headers)
    assert response.status_code == 400, response.text
    assert await in_app_loop(rows_of, client.app, user.id) == []


async def test_create_takes_fifty_characters_and_json_only(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    assert (await create(client, user, "é" * 50))["name"] == "é" * 50
    response = await client.post(BASE, content=b"name=Phone", headers=user.headers)
    assert response.status_code in {400, 415}


async def test_the_routes_need_an_access_token(client: AsyncTestClient[Litestar], user: TestUser) -> None:
    created = await create(client, user)
    for method, path in (("POST", BASE), ("GET", BASE), ("DELETE", f"{BASE}/{created['id']}")):
        response = await client.request(method, path, json={"name": "x"} if method == "POST" else None)
        assert response.status_code == 401, (method, path)
        # The app password is no bearer token, and not accepted as Basic on /api either.
        for headers in (
            {"Authorization": f"Bearer {created['password']}"},
            basic(user.email, created["password"]),
        ):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers)


async def test_an_account_holds_at_most_fifty(
    client: AsyncTestClient[Litestar], user: TestUser, in_app_loop: InAppLoop
) -> None:
    async def insert(count: int) -> None:
        async with client.app.state.db_config.get_session() as session:
            for i in range(count):
                session.add(AppPassword(user_id=user.id, name=f"p{i}", secret_hash=uuid4().hex * 2))
            await session.commit()

    await in_app_loop(insert, MAX_PER_USER - 1)
    await create(client, user, "the fiftieth")
    refused = await client.post(BASE, json={"name": "one more"}, headers=user.headers)
    assert refused.status_code == 409
    assert "at most 50" in refused.json()["detail"]
    assert len(await in_app_loop(rows_of, client.app, user.id)) == MAX_PER_USER
    # Revoking one makes room.
    first = (await client.get(BASE, headers=user.headers)).json()[0]
    assert (await client.delete(f"{BASE}/{first['id']}", headers=user.headers)).status_code == 204
    await create(client, user, "room again")


async def test_delete_is_scoped_to_its_owner(
    client: AsyncTestClient[Litestar], user_factory: UserFactory, in_app_loop: InAppLoop
) -> None:
    alice, bob = await user_factory(), await user_factory()
    mine = await create(client, alice)
    for bad in (
        str(uuid4()),
        "not-a-uuid",
        "1" * 300,
        "%00",
        "00000000-0000-0000-0000-00000000000g",
    ):
        response = await client.delete(f"{BASE}/{bad}", headers=alice.headers)
        assert response.status_code in {400, 404}, (bad, response.text)
    response = await client.delete(f"{BASE}/{mine['id']}", headers=bob.headers)
    assert response.status_code == 404
    assert response.json()["detail"] == "No such app password"
    assert (await client.get(BASE, headers=bob.headers)).json() == []
    assert (await probe(client, alice.email, mine["password"])).status_code == 200  # untouched

    assert (await client.delete(f"{BASE}/{mine['id']}", headers=alice.headers)).status_code == 204
    assert (await client.delete(f"{BASE}/{mine['id']}", headers=alice.headers)).status_code == 404
    assert await in_app_loop(rows_of, client.app, alice.id) == []


async def test_openapi_documents_the_routes(client: AsyncTestClient[Litestar]) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    post = paths[BASE]["post"]
    assert post["summary"] and post["description"]
    assert {"201", "400", "401", "409"} <= set(post["responses"])
    assert {"200", "401"} <= set(paths[BASE]["get"]["responses"])
    assert {"204", "401", "404"} <= set(paths[BASE + "/{app_password_id}"]["delete"]["responses"])
    assert PROBE not in paths


# --------------------------------------------------------------------------- HTTP Basic


async def test_basic_with_the_email_and_an_app_password_names_the_user(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    secret = (await create(client, user))["password"]
    for username, password in (
        (user.email, secret),
        (user.email.upper(), secret),  # the email in any case
        (f" {user.email}", secret),
        (user.email, secret.upper().replace("-", "")),  # typed on a phone keyboard
        (user.email, secret.replace("-", " ")),
    ):
        response = await probe(client, username, password)
        assert response.status_code == 200, (username, password, response.text)
        assert response.text == str(user.id)


async def test_basic_refuses_everything_else_with_the_challenge(
    client: AsyncTestClient[Litestar], user_factory: UserFactory
) -> None:
    alice, bob = await user_factory(), await user_factory()
    secret = (await create(client, alice))["password"]
    bobs = (await create(client, bob))["password"]
    wrong_secret = secret[:-1] + ("a" if secret[-1] != "a" else "b")
    for username, password in (
        (alice.email, wrong_secret),
        (alice.email, alice.password),  # the account password never works here
        (alice.username, secret),  # the user name is the email
        (bob.email, secret),  # another user's email with alice's app password
        (alice.email, bobs),  # alice's email with bob's app password
        ("nobody@example.com", secret),
        (alice.email, secret + "x"),
        (alice.email + "\x00", secret),
    ):
        assert_refused(await probe(client, username, password))
    for header in (
        None,
        "Basic",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic " + base64.b64encode(f"{alice.email}:".encode()).decode(),
        "Basic " + base64.b64encode(f"{alice.email}:{'a' * 5000}".encode()).decode(),
        f"Bearer {secret}",
        alice.headers["Authorization"],  # an access token is no Basic credential either
    ):
        response = await client.get(PROBE, headers={} if header is None else {"Authorization": header})
        assert_refused(response)
    # Still fine with the right pair.
    assert (await probe(client, alice.email, secret)).status_code == 200


async def test_an_app_password_is_no_login_password(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    secret = (await create(client, user))["password"]
    for username in (user.email, user.username):
        response = await client.post("/api/auth/login", data={"username": username, "password": secret})
        assert response.status_code == 401
    assert (
        await client.get("/api/users/me", headers={"Authorization": f"Bearer {secret}"})
    ).status_code == 401
    assert (await client.get("/api/users/me", headers=basic(user.email, secret))).status_code == 401
    assert (await client.get("/api/contacts", headers=basic(user.email, secret))).status_code == 401


async def test_an_unconfirmed_account_is_refused_like_a_wrong_password(
    client: AsyncTestClient[Litestar], user_factory: UserFactory
) -> None:
    pending = await user_factory(confirmed=False)
    secret = (await create(client, pending))["password"]
    assert_refused(await probe(client, pending.email, secret))


async def test_a_revoked_app_password_is_refused_at_once(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    created = await create(client, user)
    keep = await create(client, user, "Laptop")
    for _ in range(3):  # warm: verified and cached
        assert (await probe(client, user.email, created["password"])).status_code == 200
    assert (await client.delete(f"{BASE}/{created['id']}", headers=user.headers)).status_code == 204
    assert_refused(await probe(client, user.email, created["password"]))
    assert (await probe(client, user.email, keep["password"])).status_code == 200


async def _subscribed(client: AsyncTestClient[Litestar]) -> None:
    """Wait until the app hears other processes' invalidations (Redis only; the file feed is polled)."""
    store = client.app.stores.get("user_cache")
    deadline = time.monotonic() + 5
    while not getattr(store, "subscribed", True):
        assert time.monotonic() < deadline, "the near cache never subscribed"
        await asyncio.sleep(0.05)


async def test_a_revocation_on_one_replica_is_seen_by_another_at_once(
    make_client: Callable[..., AsyncTestClient[Litestar]], user: TestUser
) -> None:
    # Two processes of the service sharing one database (and Redis, when configured), with
    # long-lived local copies: only the invalidation can make the second one refuse.
    async with (
        probed(make_client(user_cache_local_ttl=300)) as one,
        probed(make_client(user_cache_local_ttl=300)) as two,
    ):
        await _subscribed(one)
        await _subscribed(two)
        created = await create(one, user)
        for _ in range(2):
            assert (await probe(two, user.email, created["password"])).status_code == 200  # two caches it
        assert (await one.delete(f"{BASE}/{created['id']}", headers=user.headers)).status_code == 204
        assert_refused(await probe(two, user.email, created["password"]))


async def test_a_password_change_revokes_every_app_password(
    make_client: Callable[..., AsyncTestClient[Litestar]],
    user: TestUser,
    in_app_loop: InAppLoop,
    client: AsyncTestClient[Litestar],
) -> None:
    async with probed(make_client(user_cache_local_ttl=300)) as other:
        await _subscribed(other)
        secrets = [(await create(client, user, name))["password"] for name in ("Phone", "Laptop")]
        for secret in secrets:  # cached by both replicas
            assert (await probe(client, user.email, secret)).status_code == 200
            assert (await probe(other, user.email, secret)).status_code == 200
        response = await client.patch(
            "/api/users/me/password",
            json={"current_password": user.password, "new_password": "a whole new passphrase"},
            headers=user.headers,
        )
        assert response.status_code == 204, response.text
        for secret in secrets:
            assert_refused(await probe(client, user.email, secret))
            assert_refused(await probe(other, user.email, secret))
    assert (await client.get(BASE, headers=user.headers)).json() == []
    assert await in_app_loop(rows_of, client.app, user.id) == []
    # A new one works again.
    fresh = (await create(client, user, "New phone"))["password"]
    assert (await probe(client, user.email, fresh)).status_code == 200


async def test_a_password_reset_revokes_every_app_password(
    make_client: Callable[..., AsyncTestClient[Litestar]], user: TestUser, smtp_server: SmtpServer
) -> None:
    async with probed(make_client(**smtp_server.settings)) as client:
        secret = (await create(client, user))["password"]
        assert (await probe(client, user.email, secret)).status_code == 200
        assert (await client.post("/api/auth/update_password", json={"email": user.email})).status_code == 202
        (mail,) = await smtp_server.sink.wait_for(1)
        (link,) = smtp_server.sink.links(mail)
        response = await client.post(urlparse(link).path, json={"password": "a reset passphrase"})
        assert response.status_code == 200, response.text
        assert_refused(await probe(client, user.email, secret))
        login = await client.post(
            "/api/auth/login", data={"username": user.email, "password": "a reset passphrase"}
        )
        token = login.json()["access_token"]
        assert (await client.get(BASE, headers={"Authorization": f"Bearer {token}"})).json() == []


async def test_an_erased_account_is_refused_though_its_credential_was_cached(
    client: AsyncTestClient[Litestar], user: TestUser, in_app_loop: InAppLoop
) -> None:
    secret = (await create(client, user))["password"]
    assert (await probe(client, user.email, secret)).status_code == 200

    async def erase() -> None:
        async with client.app.state.db_config.get_session() as session:
            await session.delete(await session.get(User, user.id))
            await session.commit()
        await client.app.stores.get("user_cache").delete(str(user.id))  # as every user write does

    await in_app_loop(erase)
    assert_refused(await probe(client, user.email, secret))


async def test_an_email_change_moves_the_user_name_at_once(
    client: AsyncTestClient[Litestar], user: TestUser, in_app_loop: InAppLoop
) -> None:
    secret = (await create(client, user))["password"]
    assert (await probe(client, user.email, secret)).status_code == 200

    async def change_email() -> None:
        async with client.app.state.db_config.get_session() as session:
            await session.execute(update(User).where(User.id == user.id).values(email="moved@example.com"))
            await session.commit()
        await client.app.stores.get("user_cache").delete(str(user.id))

    await in_app_loop(change_email)
    assert_refused(await probe(client, user.email, secret))
    assert (await probe(client, "moved@example.com", secret)).status_code == 200


# --------------------------------------------------------------------------- cost and limits


async def test_a_warm_verification_runs_no_query(
    client: AsyncTestClient[Litestar], user: TestUser, queries: QueryCounter
) -> None:
    secret = (await create(client, user))["password"]
    queries.reset()
    assert (await probe(client, user.email, secret)).status_code == 200  # cold: read and cached
    assert queries.count > 0
    queries.reset()
    for _ in range(20):
        assert (await probe(client, user.email, secret)).status_code == 200
    assert queries.count == 0, queries.statements


async def test_last_used_at_is_written_at_most_once_a_minute(
    client: AsyncTestClient[Litestar],
    user: TestUser,
    queries: QueryCounter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_passwords, "TOUCH_EVERY", 1.0)  # a minute, made short
    created = await create(client, user)

    async def last_used() -> str | None:
        (listed,) = (await client.get(BASE, headers=user.headers)).json()
        return listed["last_used_at"]

    assert await last_used() is None
    assert (await probe(client, user.email, created["password"])).status_code == 200
    first = await last_used()
    assert first is not None
    queries.reset()
    for _ in range(10):
        assert (await probe(client, user.email, created["password"])).status_code == 200
    assert not [s for s in queries.statements if s.lstrip().upper().startswith("UPDATE")]
    assert await last_used() == first

    await asyncio.sleep(1.1)
    assert (await probe(client, user.email, created["password"])).status_code == 200
    second = await last_used()
    assert second is not None
    assert datetime.fromisoformat(second) > datetime.fromisoformat(first)


async def test_cold_verifications_are_rate_limited_like_login(
    make_client: Callable[..., AsyncTestClient[Litestar]], user: TestUser
) -> None:
    async with probed(make_client(rate_limit_enabled=True, rate_limit_auth_per_minute=3)) as client:
        warm = (await create(client, user, "warm"))["password"]
        cold = (await create(client, user, "cold"))["password"]
        assert (await probe(client, user.email, warm)).status_code == 200  # attempt 1, now cached
        for _ in range(2):  # attempts 2 and 3
            assert_refused(await probe(client, user.email, "wrong-" + warm))
        limited = await probe(client, user.email, "wrong-" + warm)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Refused before it is checked, even when right...
        assert (await probe(client, user.email, cold)).status_code == 429
        # ...but a credential verified before is answered from the cache, uncounted.
        for _ in range(5):
            assert (await probe(client, user.email, warm)).status_code == 200
        # Login has counters of its own.
        login = await client.post("/api/auth/login", data={"username": user.email, "password": user.password})
        assert login.status_code == 200


async def test_missing_credentials_are_not_counted(
    make_client: Callable[..., AsyncTestClient[Litestar]], user: TestUser
) -> None:
    # A client's first request often comes without credentials, to get the challenge.
    async with probed(make_client(rate_limit_enabled=True, rate_limit_auth_per_minute=2)) as client:
        secret = (await create(client, user))["password"]
        for _ in range(5):
            assert_refused(await client.get(PROBE))
        assert (await probe(client, user.email, secret)).status_code == 200


async def test_audit_lines_name_the_events_never_the_secret(
    client: AsyncTestClient[Litestar], user: TestUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    created = await create(client, user)
    assert_refused(await probe(client, user.email, "wrong"))
    assert_refused(await probe(client, "someone@example.com", created["password"]))
    assert (await client.delete(f"{BASE}/{created['id']}", headers=user.headers)).status_code == 204
    audit = [r.fields for r in caplog.records if r.name == "app.audit"]  # type: ignore[attr-defined]
    assert [a["event"] for a in audit] == [
        "app_password_created",
        "app_password_failed",
        "app_password_failed",
        "app_password_revoked",
    ]
    assert audit[0]["user_id"] == str(user.id) and audit[0]["app_password_id"] == created["id"]
    assert audit[1]["user_id"] is None
    assert audit[2]["user_id"] == str(user.id)
    assert audit[3]["app_password_id"] == created["id"]
    plain = created["password"].replace("-", "")
    for record in caplog.records:
        text = record.getMessage() + repr(getattr(record, "fields", ""))
        assert created["password"] not in text and plain not in text
        assert secret_digest(created["password"]) not in text


async def test_a_revocation_during_a_cold_verification_is_not_cached(
    client: AsyncTestClient[Litestar], user: TestUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create(client, user)
    touch = app_passwords._touch

    async def revoked_meanwhile(app: Litestar, app_password_id: UUID) -> None:
        # Another request revokes it after this one read the row, before it caches the credential.
        async with app.state.db_config.get_session() as session:
            await AppPasswordRepository(session=session).remove(user.id, app_password_id)
            await session.commit()
        await app.stores.get("user_cache").delete(cache_key(secret_digest(created["password"])))
        await touch(app, app_password_id)

    monkeypatch.setattr(app_passwords, "_touch", revoked_meanwhile)
    assert_refused(await probe(client, user.email, created["password"]))
    monkeypatch.setattr(app_passwords, "_touch", touch)
    assert_refused(await probe(client, user.email, created["password"]))  # nothing was left cached
