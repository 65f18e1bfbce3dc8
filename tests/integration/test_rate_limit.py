"""Rate limits through the real app, on the configured store (memory or Redis)."""

from collections.abc import Awaitable, Callable

from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.conftest import TestUser

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
