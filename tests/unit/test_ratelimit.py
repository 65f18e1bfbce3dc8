"""The rate limit middleware on a stub app: which requests count, against which counter."""

from typing import Any

import msgspec
import pytest
from litestar import Litestar, Request, get, post
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.stores.memory import MemoryStore
from litestar.testing import AsyncTestClient

from app import cache
from app.config import load_settings
from app.errors import EXCEPTION_HANDLERS
from app.ratelimit import AUTH, AUTH_PER_USER, IMPORT, ME, ClientIdentifier, limited, rate_limit_middleware


@get("/api/users/me", opt=limited(ME))
async def me() -> str:
    return "me"


@post("/api/auth/{name:str}", status_code=200, opt=limited(AUTH))
async def auth(name: str) -> str:
    return name


@post("/api/auth/refresh_token", status_code=200)
async def refresh() -> str:
    return "refresh"


@get("/api/auth/{name:str}")
async def auth_get(name: str) -> str:
    return name


@get("/api/contacts")
async def contacts() -> str:
    return "contacts"


@post("/api/password", status_code=200, opt=limited(AUTH, AUTH_PER_USER))
async def password(request: Request[Any, Any, Any]) -> str:
    return str(request.user)


@post("/api/import", status_code=200, opt=limited(IMPORT))
async def import_() -> str:
    return "import"


class _User(msgspec.Struct):
    id: str


class _HeaderUser(AbstractAuthenticationMiddleware):
    """The user named by the ``X-User`` header (or anonymous), like the real auth middleware."""

    async def authenticate_request(self, connection: Any) -> AuthenticationResult:
        name = connection.headers.get("x-user")
        return AuthenticationResult(user=_User(id=name) if name else None, auth=None)


def _app(**env: str) -> Litestar:
    settings = load_settings(
        {
            "SECRET_KEY": "k" * 40,
            "RATE_LIMIT_ME_PER_MINUTE": "3",
            "RATE_LIMIT_AUTH_PER_MINUTE": "2",
            "RATE_LIMIT_IMPORT_PER_MINUTE": "1",
            **env,
        },
        env_file=None,
    )
    return Litestar(
        route_handlers=[me, auth, refresh, auth_get, contacts, password, import_],
        middleware=[DefineMiddleware(_HeaderUser), *rate_limit_middleware(settings)],
        stores={cache.RATE_LIMIT: MemoryStore()},
        exception_handlers=EXCEPTION_HANDLERS,
    )


async def _statuses(client: AsyncTestClient[Litestar], method: str, path: str, n: int) -> list[int]:
    return [(await client.request(method, path)).status_code for _ in range(n)]


async def test_me_limit_and_429_shape() -> None:
    async with AsyncTestClient(_app()) as client:
        assert await _statuses(client, "GET", "/api/users/me", 3) == [200] * 3
        response = await client.get("/api/users/me")
        assert response.status_code == 429
        assert response.json()["status_code"] == 429
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.headers["ratelimit-limit"] == "3"
        assert response.headers["ratelimit-remaining"] == "0"


async def test_auth_limit_is_tighter_post_only_and_shared_by_the_routes_naming_it() -> None:
    async with AsyncTestClient(_app()) as client:
        assert await _statuses(client, "POST", "/api/auth/login", 1) == [200]
        assert await _statuses(client, "POST", "/api/auth/register", 1) == [200]
        for path in ("login", "register", "request_email", "update_password"):
            assert (await client.post(f"/api/auth/{path}")).status_code == 429
        assert (await client.post("/api/password", headers={"X-User": "u1"})).status_code == 429
        # Handlers that do not name the limit are not counted.
        assert await _statuses(client, "POST", "/api/auth/refresh_token", 5) == [200] * 5
        assert await _statuses(client, "GET", "/api/auth/login", 5) == [200] * 5
        # The /me counter is separate from the auth counter.
        assert await _statuses(client, "GET", "/api/users/me", 3) == [200] * 3


async def test_a_per_user_limit_follows_the_user_across_clients() -> None:
    async with AsyncTestClient(_app(TRUSTED_PROXIES="testclient")) as client:
        alice_here = {"X-User": "alice", "X-Forwarded-For": "203.0.113.1"}
        alice_there = {"X-User": "alice", "X-Forwarded-For": "203.0.113.2"}
        bob_elsewhere = {"X-User": "bob", "X-Forwarded-For": "203.0.113.3"}
        assert (await client.post("/api/password", headers=alice_here)).status_code == 200
        assert (await client.post("/api/password", headers=alice_there)).status_code == 200
        # Two clients, each under its own per-client limit, but alice's account is at its limit.
        limited_answer = await client.post("/api/password", headers=alice_there)
        assert limited_answer.status_code == 429
        assert 1 <= int(limited_answer.headers["retry-after"]) <= 60
        assert (await client.post("/api/password", headers=bob_elsewhere)).status_code == 200


async def test_import_limit_is_per_user() -> None:
    async with AsyncTestClient(_app()) as client:
        assert (await client.post("/api/import", headers={"X-User": "alice"})).status_code == 200
        assert (await client.post("/api/import", headers={"X-User": "alice"})).status_code == 429
        assert (await client.post("/api/import", headers={"X-User": "bob"})).status_code == 200


async def test_other_routes_are_not_limited() -> None:
    async with AsyncTestClient(_app()) as client:
        assert await _statuses(client, "GET", "/api/contacts", 20) == [200] * 20


async def test_disabled() -> None:
    assert (
        rate_limit_middleware(
            load_settings({"RATE_LIMIT_ENABLED": "false", "SECRET_KEY": "k" * 40}, env_file=None)
        )
        == []
    )
    async with AsyncTestClient(_app(RATE_LIMIT_ENABLED="false")) as client:
        assert await _statuses(client, "GET", "/api/users/me", 10) == [200] * 10
        assert await _statuses(client, "POST", "/api/auth/login", 10) == [200] * 10


async def test_clients_behind_a_trusted_proxy_are_told_apart() -> None:
    async with AsyncTestClient(_app(TRUSTED_PROXIES="testclient")) as client:
        a = {"X-Forwarded-For": "203.0.113.1"}
        b = {"X-Forwarded-For": "203.0.113.2"}
        for _ in range(2):
            assert (await client.post("/api/auth/login", headers=a)).status_code == 200
        assert (await client.post("/api/auth/login", headers=a)).status_code == 429
        assert (await client.post("/api/auth/login", headers=b)).status_code == 200
        # A forged left-most entry does not escape: the proxy appended the real address last.
        forged = {"X-Forwarded-For": "198.51.100.7, 203.0.113.1"}
        assert (await client.post("/api/auth/login", headers=forged)).status_code == 429


async def test_forwarded_header_is_ignored_from_an_untrusted_peer() -> None:
    async with AsyncTestClient(_app()) as client:
        for i in range(2):
            response = await client.post("/api/auth/login", headers={"X-Forwarded-For": f"203.0.113.{i}"})
            assert response.status_code == 200
        response = await client.post("/api/auth/login", headers={"X-Forwarded-For": "203.0.113.99"})
        assert response.status_code == 429


class _FakeRequest(msgspec.Struct):
    client: Any
    headers: Any


class _Headers:
    def __init__(self, *values: str) -> None:
        self.values = list(values)

    def getall(self, _name: str, default: list[str]) -> list[str]:
        return self.values or default


class _Peer(msgspec.Struct):
    host: str


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        ((), "192.0.2.1", ["203.0.113.5"], "192.0.2.1"),  # nothing trusted: the peer
        (("10.0.0.0/8",), "10.1.2.3", ["203.0.113.5"], "203.0.113.5"),  # CIDR proxy
        (("10.0.0.0/8",), "10.1.2.3", ["203.0.113.5, 10.9.9.9"], "203.0.113.5"),  # two proxies
        (("10.0.0.0/8",), "10.1.2.3", ["198.51.100.1", "203.0.113.5"], "203.0.113.5"),  # two headers
        (("10.0.0.0/8",), "10.1.2.3", [], "10.1.2.3"),  # a proxy without the header
        (("10.0.0.0/8",), "10.1.2.3", ["10.0.0.7"], "10.0.0.7"),  # only proxies: the first hop
        (("::1",), "::1", ["2001:db8::1"], "2001:db8::1"),  # IPv6
        (("10.0.0.0/8",), "not-an-ip", ["203.0.113.5"], "not-an-ip"),
    ],
)
def test_client_identifier(trusted: tuple[str, ...], peer: str, forwarded: list[str], expected: str) -> None:
    identify = ClientIdentifier("auth", trusted)
    request: Any = _FakeRequest(client=_Peer(host=peer), headers=_Headers(*forwarded))
    assert identify.client_of(request) == expected
    assert identify(request) == f"auth:{expected}"


def test_client_identifier_without_a_peer() -> None:
    request: Any = _FakeRequest(client=None, headers=_Headers())
    assert ClientIdentifier("me", ())(request) == "me:unknown"
