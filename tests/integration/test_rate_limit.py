"""Rate limits through the real app, on the configured store (memory or Redis)."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import TEST_REDIS_URL, TestUser

UserFactory = Callable[..., Awaitable[TestUser]]


async def test_me_is_rate_limited_per_client(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: UserFactory
) -> None:
    user = await user_factory()
    async with make_client(rate_limit_enabled=True, rate_limit_me_per_minute=3) as client:
        for remaining in ("2", "1", "0"):
            response = await client.get("/api/users/me", headers=user.headers)
            assert response.status_code == 200
            assert response.headers["ratelimit-remaining"] == remaining
        limited = await client.get("/api/users/me", headers=user.headers)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert set(limited.json()) >= {"status_code", "detail"}
        # Other routes keep working for that client.
        assert (await client.get("/api/healthchecker")).status_code == 200


async def test_the_limit_is_per_client_behind_a_trusted_proxy(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: UserFactory
) -> None:
    user = await user_factory()
    async with make_client(
        rate_limit_enabled=True, rate_limit_me_per_minute=2, trusted_proxies=("testclient",)
    ) as client:
        alice = {**user.headers, "X-Forwarded-For": "203.0.113.10"}
        bob = {**user.headers, "X-Forwarded-For": "203.0.113.20"}
        assert [(await client.get("/api/users/me", headers=alice)).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        assert (await client.get("/api/users/me", headers=bob)).status_code == 200


async def test_rate_limit_can_be_turned_off(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: UserFactory
) -> None:
    user = await user_factory()
    async with make_client(rate_limit_enabled=False, rate_limit_me_per_minute=1) as client:
        for _ in range(5):
            response = await client.get("/api/users/me", headers=user.headers)
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers


async def test_login_register_and_mail_endpoints_share_a_tighter_limit(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: UserFactory
) -> None:
    user = await user_factory()
    async with make_client(rate_limit_enabled=True, rate_limit_auth_per_minute=3) as client:
        wrong = {"username": user.email, "password": "not the password"}
        assert (await client.post("/api/auth/login", data=wrong)).status_code == 401
        assert (await client.post("/api/auth/update_password", json={"email": user.email})).status_code == 202
        assert (await client.post("/api/auth/request_email", json={"email": user.email})).status_code == 202
        # The fourth attempt, even with the right password, is refused before it is checked.
        right = {"username": user.email, "password": user.password}
        limited = await client.post("/api/auth/login", data=right)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        body = {"username": "newbie", "email": "newbie@example.com", "password": "a fine new password"}
        assert (await client.post("/api/auth/register", json=body)).status_code == 429
        # Refreshing is not under this limit, and neither is /me.
        refresh = await client.post("/api/auth/refresh_token", json={"refresh_token": "x" * 20})
        assert refresh.status_code == 401
        assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200


def _from(address: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers of a request arriving through the trusted test proxy from ``address``."""
    return {**(headers or {}), "X-Forwarded-For": address}


async def test_wrong_current_passwords_are_limited_per_client_and_per_user(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: UserFactory
) -> None:
    # Issue 19.2: 120 guesses at the current password all got 400, each costing a bcrypt check.
    user, other = await user_factory(), await user_factory()
    guess = {"current_password": "not the password", "new_password": "a fine new password"}
    async with make_client(rate_limit_enabled=True, trusted_proxies=("testclient",)) as client:
        statuses = [
            (
                await client.patch(
                    "/api/users/me/password", json=guess, headers=_from("203.0.113.1", user.headers)
                )
            ).status_code
            for _ in range(120)
        ]
        assert statuses == [400] * 10 + [429] * 110
        limited = await client.patch(
            "/api/users/me/password", json=guess, headers=_from("203.0.113.1", user.headers)
        )
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Per user: the same account from a fresh address is still refused, even with the right password.
        right = {"current_password": user.password, "new_password": "a fine new password"}
        from_elsewhere = await client.patch(
            "/api/users/me/password", json=right, headers=_from("203.0.113.2", user.headers)
        )
        assert from_elsewhere.status_code == 429
        # Per client: that address is refused for another account too.
        other_here = await client.patch(
            "/api/users/me/password", json=guess, headers=_from("203.0.113.1", other.headers)
        )
        assert other_here.status_code == 429
        # Another account from another address is checked as usual.
        other_elsewhere = await client.patch(
            "/api/users/me/password", json=guess, headers=_from("203.0.113.3", other.headers)
        )
        assert other_elsewhere.status_code == 400
        # The refused change did not happen: the old password still logs in.
        login = await client.post(
            "/api/auth/login",
            data={"username": user.email, "password": user.password},
            headers=_from("203.0.113.4"),
        )
        assert login.status_code == 200, login.text


async def test_the_reset_confirmation_is_limited(
    make_client: Callable[..., AsyncTestClient[Litestar]],
) -> None:
    # It hashes the new password: each attempt costs a bcrypt hash once a token is valid.
    async with make_client(rate_limit_enabled=True, rate_limit_auth_per_minute=3) as client:
        statuses = [
            (
                await client.post(
                    "/api/auth/confirm_update_password/not-a-token", json={"password": "x" * 12}
                )
            ).status_code
            for _ in range(5)
        ]
        assert statuses == [400, 400, 400, 429, 429]


async def test_imports_are_limited_per_user(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: UserFactory
) -> None:
    user, other = await user_factory(), await user_factory()

    def card(n: int) -> dict[str, tuple[str, bytes, str]]:
        vcard = (
            "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Card Holder\r\nN:Holder;Card;;;\r\n"
            f"EMAIL:card{n}@example.com\r\nTEL:+380501234567\r\nEND:VCARD\r\n"
        ).encode()
        return {"file": ("cards.vcf", vcard, "text/vcard")}

    async with make_client(
        rate_limit_enabled=True, rate_limit_import_per_minute=2, trusted_proxies=("testclient",)
    ) as client:
        for n in range(2):
            response = await client.post(
                "/api/contacts/import", files=card(n), headers=_from(f"203.0.113.{n}", user.headers)
            )
            assert response.status_code == 200, response.text
            assert response.json()["created"] == 1, response.text
        limited = await client.post(
            "/api/contacts/import", files=card(9), headers=_from("203.0.113.9", user.headers)
        )
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        page = await client.get("/api/contacts/", headers=user.headers)
        assert page.json()["total"] == 2  # the refused file was not read
        # Another user's imports are counted apart.
        assert (
            await client.post("/api/contacts/import", files=card(0), headers=other.headers)
        ).status_code == 200


async def _burst_in(app: Litestar, headers: dict[str, str], count: int) -> list[int]:
    """``count`` concurrent ``GET /api/users/me`` straight into ``app`` (run on its own loop); statuses."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as http:
        answers = await asyncio.gather(*(http.get("/api/users/me", headers=headers) for _ in range(count)))
    return [answer.status_code for answer in answers]


async def _burst(clients: list[AsyncTestClient[Litestar]], headers: dict[str, str], count: int) -> list[int]:
    """A burst of ``count`` requests shared by ``clients``, all at once (each app on its own loop).

    The test client handles one request at a time, so the requests go straight to each app on
    the loop that runs it, from one thread per app.
    """
    per_app = count // len(clients)
    results = await asyncio.gather(
        *(asyncio.to_thread(c.blocking_portal.call, _burst_in, c.app, headers, per_app) for c in clients)
    )
    return [status for statuses in results for status in statuses]


async def test_a_concurrent_burst_passes_exactly_the_limit(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: UserFactory
) -> None:
    user = await user_factory()
    async with make_client(rate_limit_enabled=True, rate_limit_me_per_minute=7) as client:
        statuses = await _burst([client], user.headers, 21)
    assert sorted(statuses) == [200] * 7 + [429] * 14


@pytest.mark.skipif(not TEST_REDIS_URL, reason="replicas share a limit only through Redis")
async def test_a_burst_spread_over_replicas_passes_exactly_the_limit(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: UserFactory
) -> None:
    # Issue 14.4: each replica read the counter, then wrote it back: a burst over three
    # replicas passed up to three times the limit.
    user = await user_factory()
    async with contextlib.AsyncExitStack() as stack:
        replicas = [
            await stack.enter_async_context(make_client(rate_limit_enabled=True, rate_limit_me_per_minute=7))
            for _ in range(3)
        ]
        first = await _burst(replicas, user.headers, 21)
        assert sorted(first) == [200] * 7 + [429] * 14
        # The window stays closed for every replica.
        assert set(await _burst(replicas, user.headers, 6)) == {429}
