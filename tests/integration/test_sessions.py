"""``/api/users/me/sessions``: list the logins, end one, end all others (issue 16, item 1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from app.users.devices import clean_user_agent, truncate_ip
from app.users.models import UserSession
from tests.conftest import PASSWORD, TestUser

SESSIONS = "/api/users/me/sessions"
ME = "/api/users/me"
SESSION_KEYS = {"id", "created_at", "last_used_at", "user_agent", "ip", "current"}
InAppLoop = Callable[..., Awaitable[Any]]


async def _login(client: AsyncTestClient[Litestar], user: TestUser, **headers: str) -> dict[str, Any]:
    response = await client.post(
        "/api/auth/login", data={"username": user.email, "password": PASSWORD}, headers=headers
    )
    assert response.status_code == 200, response.text
    tokens = response.json()
    tokens["headers"] = {"Authorization": f"Bearer {tokens['access_token']}"}
    return tokens


async def _session_row(app: Litestar, session_id: Any) -> UserSession | None:
    async with app.state.db_config.get_session() as session:
        return await session.scalar(select(UserSession).where(UserSession.id == UUID(str(session_id))))


async def _set_last_used(app: Litestar, session_id: Any, value: datetime) -> None:
    async with app.state.db_config.get_session() as session:
        await session.execute(
            update(UserSession).where(UserSession.id == UUID(str(session_id))).values(last_used_at=value)
        )
        await session.commit()


# --------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.57", "203.0.113.0/24"),
        ("198.51.100.255", "198.51.100.0/24"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("::ffff:203.0.113.9", "203.0.113.0/24"),
        ("testclient", None),
        ("", None),
        (None, None),
    ],
)
def test_addresses_are_cut_to_their_network(address: str | None, network: str | None) -> None:
    assert truncate_ip(address) == network


def test_user_agents_lose_control_characters_and_their_tail() -> None:
    assert clean_user_agent("Mozilla/5.0\x00\x1b[31m (X11)") == "Mozilla/5.0[31m (X11)"
    assert clean_user_agent("a" * 1000) == "a" * 200
    assert clean_user_agent("\x00\x01") is None


# --------------------------------------------------------------------------- GET


async def test_sessions_are_listed_newest_first_with_their_device(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: Any
) -> None:
    async with make_client(trusted_proxies=("testclient",)) as client:
        user = await user_factory()
        phone = await _login(client, user, **{"User-Agent": "Phone/1.0", "X-Forwarded-For": "203.0.113.57"})
        laptop = await _login(
            client,
            user,
            **{"User-Agent": "Laptop/2.0 " + "x" * 500, "X-Forwarded-For": "2001:db8:1234:5678::1"},
        )
        response = await client.get(SESSIONS, headers=phone["headers"])
    assert response.status_code == 200, response.text
    sessions = response.json()
    assert all(set(s) == SESSION_KEYS for s in sessions)
    assert [s["id"] for s in sessions][2:] == [str(user.session_id)]  # the fixture's, oldest
    newest, middle = sessions[0], sessions[1]
    assert newest["user_agent"] == ("Laptop/2.0 " + "x" * 500)[:200]
    assert newest["ip"] == "2001:db8:1234::/48"
    assert middle["user_agent"] == "Phone/1.0"
    assert middle["ip"] == "203.0.113.0/24"
    assert [s["current"] for s in sessions] == [False, True, False]
    assert newest["last_used_at"] == newest["created_at"]  # set at login
    assert "57" not in middle["ip"].split("/")[0].split(".")[-1]
    assert laptop["refresh_token"] not in response.text


async def test_ended_and_expired_sessions_are_not_listed(
    client: AsyncTestClient[Litestar], user: TestUser, in_app_loop: InAppLoop, app: Litestar
) -> None:
    other = await _login(client, user)
    assert (
        await client.post(
            "/api/auth/logout", json={"refresh_token": other["refresh_token"]}, headers=other["headers"]
        )
    ).status_code == 204

    async def expire_one() -> None:
        third = UserSession(
            user_id=user.id,
            refresh_token_hash="e" * 64,
            expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )
        async with app.state.db_config.get_session() as session:
            session.add(third)
            await session.commit()

    await in_app_loop(expire_one)
    response = await client.get(SESSIONS, headers=user.headers)
    assert [s["id"] for s in response.json()] == [str(user.session_id)]


async def test_sessions_need_a_token(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.get(SESSIONS)).status_code == 401
    assert (await client.delete(SESSIONS)).status_code == 401
    assert (await client.delete(f"{SESSIONS}/00000000-0000-0000-0000-000000000000")).status_code == 401


# --------------------------------------------------------------------------- last_used_at


async def test_use_is_recorded_at_most_once_a_minute_and_after_the_answer(
    client: AsyncTestClient[Litestar], user: TestUser, app: Litestar, in_app_loop: InAppLoop, queries: Any
) -> None:
    assert (await in_app_loop(_session_row, app, user.session_id)).last_used_at is None
    assert (await client.get(ME, headers=user.headers)).status_code == 200  # fills the cache, records the use
    first = (await in_app_loop(_session_row, app, user.session_id)).last_used_at
    assert first is not None
    assert abs((datetime.now(UTC) - first).total_seconds()) < 30

    queries.reset()
    for _ in range(3):
        assert (await client.get(ME, headers=user.headers)).status_code == 200
    assert queries.count == 0, queries.statements  # within the minute: not even the check costs a statement
    assert (await in_app_loop(_session_row, app, user.session_id)).last_used_at == first

    # A minute later (for this process and for the row), the next use writes again, once.
    earlier = datetime.now(UTC) - timedelta(minutes=5)
    await in_app_loop(_set_last_used, app, user.session_id, earlier)
    activity = app.state.session_activity
    activity._written[str(user.session_id)] = time.monotonic() - activity.every - 1
    queries.reset()
    assert (await client.get(ME, headers=user.headers)).status_code == 200
    assert len([q for q in queries.statements if q.lstrip().upper().startswith("UPDATE")]) == 1
    later = (await in_app_loop(_session_row, app, user.session_id)).last_used_at
    assert later > earlier + timedelta(minutes=4)


async def test_a_refresh_records_the_use(
    client: AsyncTestClient[Litestar], user: TestUser, app: Litestar, in_app_loop: InAppLoop
) -> None:
    tokens = await _login(client, user)
    sid = next(
        s["id"] for s in (await client.get(SESSIONS, headers=tokens["headers"])).json() if s["current"]
    )
    earlier = datetime.now(UTC) - timedelta(hours=1)
    await in_app_loop(_set_last_used, app, sid, earlier)
    response = await client.post("/api/auth/refresh_token", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200
    assert (await in_app_loop(_session_row, app, sid)).last_used_at > earlier + timedelta(minutes=59)


async def test_a_refresh_from_another_network_moves_the_session_ip(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: Any
) -> None:
    async with make_client(trusted_proxies=("testclient",)) as client:
        user = await user_factory()
        tokens = await _login(client, user, **{"X-Forwarded-For": "203.0.113.5"})
        refreshed = await client.post(
            "/api/auth/refresh_token",
            json={"refresh_token": tokens["refresh_token"]},
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        assert refreshed.status_code == 200
        headers = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
        current = next(s for s in (await client.get(SESSIONS, headers=headers)).json() if s["current"])
    assert current["ip"] == "198.51.100.0/24"


# --------------------------------------------------------------------------- DELETE one


async def test_ending_a_session_kills_its_tokens_at_once(
    client: AsyncTestClient[Litestar], user: TestUser, app: Litestar, in_app_loop: InAppLoop
) -> None:
    lost_phone = await _login(client, user)
    assert (await client.get(ME, headers=lost_phone["headers"])).status_code == 200  # cached with the session
    sessions = (await client.get(SESSIONS, headers=user.headers)).json()
    phone_id = next(s["id"] for s in sessions if not s["current"])

    response = await client.delete(f"{SESSIONS}/{phone_id}", headers=user.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(ME, headers=lost_phone["headers"])).status_code == 401
    refresh = await client.post(
        "/api/auth/refresh_token", json={"refresh_token": lost_phone["refresh_token"]}
    )
    assert refresh.status_code == 401
    assert (await client.get(ME, headers=user.headers)).status_code == 200  # the other one lives
    assert [s["id"] for s in (await client.get(SESSIONS, headers=user.headers)).json()] == [
        str(user.session_id)
    ]
    assert (await in_app_loop(_session_row, app, phone_id)).revoked_at is not None
    # Ended already: nothing to end.
    assert (await client.delete(f"{SESSIONS}/{phone_id}", headers=user.headers)).status_code == 404


@pytest.mark.parametrize("which", ["another user's", "unknown", "malformed"])
async def test_a_session_that_is_not_yours_is_404_and_stays(
    client: AsyncTestClient[Litestar], user: TestUser, user_factory: Any, which: str
) -> None:
    other = await user_factory()
    target = {
        "another user's": str(other.session_id),
        "unknown": "0190b7a4-0000-7000-8000-000000000000",
        "malformed": "not-a-session",
    }[which]
    response = await client.delete(f"{SESSIONS}/{target}", headers=user.headers)
    assert response.status_code == 404
    assert (await client.get(ME, headers=other.headers)).status_code == 200
    assert (await client.get(ME, headers=user.headers)).status_code == 200


async def test_ending_the_current_session_signs_this_client_out(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    response = await client.delete(f"{SESSIONS}/{user.session_id}", headers=user.headers)
    assert response.status_code == 204
    assert (await client.get(ME, headers=user.headers)).status_code == 401


# --------------------------------------------------------------------------- DELETE all others


async def test_ending_the_other_sessions_keeps_this_one(
    client: AsyncTestClient[Litestar], user: TestUser, user_factory: Any
) -> None:
    stranger = await user_factory()
    others = [await _login(client, user) for _ in range(2)]
    for tokens in others:
        assert (await client.get(ME, headers=tokens["headers"])).status_code == 200
    response = await client.delete(SESSIONS, headers=user.headers)
    assert response.status_code == 204
    for tokens in others:
        assert (await client.get(ME, headers=tokens["headers"])).status_code == 401
        refresh = await client.post(
            "/api/auth/refresh_token", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refresh.status_code == 401
    assert (await client.get(ME, headers=user.headers)).status_code == 200
    assert [s["id"] for s in (await client.get(SESSIONS, headers=user.headers)).json()] == [
        str(user.session_id)
    ]
    assert (await client.get(ME, headers=stranger.headers)).status_code == 200  # not someone else's
    # Nothing left to end: still 204.
    assert (await client.delete(SESSIONS, headers=user.headers)).status_code == 204


# --------------------------------------------------------------------------- every replica


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "not seen in time"
        await asyncio.sleep(0.02)


async def test_an_ended_session_is_refused_by_every_replica(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: Any
) -> None:
    user = await user_factory()
    async with make_client(user_cache_local_ttl=300) as one, make_client(user_cache_local_ttl=300) as two:
        for app in (one.app, two.app):
            store = app.stores.get("user_cache")
            if hasattr(store, "subscribed"):
                await _until(lambda store=store: asyncio.sleep(0, store.subscribed))
        phone = await _login(one, user)
        assert (await two.get(ME, headers=phone["headers"])).status_code == 200  # two caches the session
        phone_id = next(
            s["id"] for s in (await one.get(SESSIONS, headers=phone["headers"])).json() if s["current"]
        )
        assert (await one.delete(f"{SESSIONS}/{phone_id}", headers=user.headers)).status_code == 204

        async def refused_by_two() -> bool:
            return (await two.get(ME, headers=phone["headers"])).status_code == 401

        await _until(refused_by_two)
        assert (await two.get(ME, headers=user.headers)).status_code == 200
