"""``/api/users``: the current user, the user list and roles, through HTTP."""

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app import cache
from app.users.models import User
from tests.conftest import TestUser

UserFactory = Callable[..., Awaitable[TestUser]]

USER_KEYS = {"id", "username", "email", "role", "confirmed", "avatar_url", "created_at"}


InAppLoop = Callable[..., Awaitable[Any]]
RoleInDb = Callable[[TestUser], Awaitable[str]]


async def _read_role(app: Litestar, user_id: Any) -> str:
    async with app.state.db_config.get_session() as session:
        return (await session.scalar(select(User.role).where(User.id == user_id))) or ""


@pytest.fixture
def role_in_db(app: Litestar, in_app_loop: InAppLoop) -> Callable[[TestUser], Awaitable[str]]:
    async def read(user: TestUser) -> str:
        return await in_app_loop(_read_role, app, user.id)

    return read


# --------------------------------------------------------------------------- GET /api/users/me


async def test_me_returns_the_user(client: AsyncTestClient[Litestar], user: TestUser) -> None:
    response = await client.get("/api/users/me", headers=user.headers)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == USER_KEYS
    assert body["id"] == str(user.id)
    assert (body["email"], body["username"], body["role"], body["confirmed"]) == (
        user.email,
        user.username,
        "user",
        True,
    )
    assert body["created_at"].endswith(("Z", "+00:00"))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
)
async def test_me_needs_a_valid_token(client: AsyncTestClient[Litestar], headers: dict[str, str]) -> None:
    response = await client.get("/api/users/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_me_runs_no_query_on_a_warm_cache(
    client: AsyncTestClient[Litestar], user: TestUser, queries: Any
) -> None:
    cold = await client.get("/api/users/me", headers=user.headers)
    assert cold.status_code == 200
    assert queries.count > 0  # the miss read the user (and sessions) from the database
    queries.reset()
    for _ in range(3):
        warm = await client.get("/api/users/me", headers=user.headers)
        assert warm.json() == cold.json()
    assert queries.count == 0, queries.statements


async def test_me_falls_back_to_the_database_on_a_cold_cache(
    client: AsyncTestClient[Litestar],
    app: Litestar,
    user: TestUser,
    queries: Any,
    in_app_loop: InAppLoop,
) -> None:
    await client.get("/api/users/me", headers=user.headers)
    await in_app_loop(app.stores.get(cache.USER_CACHE).delete, str(user.id))
    queries.reset()
    response = await client.get("/api/users/me", headers=user.headers)
    assert response.status_code == 200
    assert queries.count > 0


# --------------------------------------------------------------------------- GET /api/users


async def test_list_users_is_a_page(
    client: AsyncTestClient[Litestar], admin: TestUser, user_factory: UserFactory
) -> None:
    others = [await user_factory() for _ in range(4)]
    response = await client.get("/api/users", headers=admin.headers)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (5, 20, 0)
    assert [u["id"] for u in body["items"]] == [str(u.id) for u in [admin, *others]]  # oldest first
    assert all(set(item) == USER_KEYS for item in body["items"])
    assert "password" not in response.text and "password_hash" not in response.text

    page = (await client.get("/api/users", params={"limit": 2, "offset": 3}, headers=admin.headers)).json()
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 3)
    assert [u["id"] for u in page["items"]] == [str(others[2].id), str(others[3].id)]

    past = (await client.get("/api/users", params={"offset": 10}, headers=admin.headers)).json()
    assert (past["items"], past["total"]) == ([], 5)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": "x"}, "offset"),
    ],
)
async def test_list_users_bad_paging(
    client: AsyncTestClient[Litestar], admin: TestUser, params: dict[str, Any], field: str
) -> None:
    response = await client.get("/api/users", params=params, headers=admin.headers)
    assert response.status_code == 400
    assert field in str(response.json()["extra"])


async def test_list_users_limit_bounds_accepted(client: AsyncTestClient[Litestar], admin: TestUser) -> None:
    for limit in (1, 100):
        response = await client.get("/api/users", params={"limit": limit}, headers=admin.headers)
        assert response.status_code == 200
        assert response.json()["limit"] == limit


async def test_list_users_admin_only(client: AsyncTestClient[Litestar], user: TestUser) -> None:
    assert (await client.get("/api/users", headers=user.headers)).status_code == 403
    assert (await client.get("/api/users")).status_code == 401


# --------------------------------------------------------------------------- PATCH /api/users/{id}/role


async def test_promote_and_demote(
    client: AsyncTestClient[Litestar], role_in_db: RoleInDb, admin: TestUser, user: TestUser
) -> None:
    response = await client.patch(f"/api/users/{user.id}/role", json={"role": "admin"}, headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    assert set(response.json()) == USER_KEYS
    assert await role_in_db(user) == "admin"

    response = await client.patch(f"/api/users/{user.id}/role", json={"role": "user"}, headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["role"] == "user"
    assert await role_in_db(user) == "user"


async def test_same_role_is_a_no_op(
    client: AsyncTestClient[Litestar], admin: TestUser, user: TestUser
) -> None:
    response = await client.patch(f"/api/users/{user.id}/role", json={"role": "user"}, headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["role"] == "user"


async def test_role_change_applies_on_the_next_request(
    client: AsyncTestClient[Litestar], admin: TestUser, user: TestUser
) -> None:
    # Warm the user's cache entry, as a user browsing would.
    assert (await client.get("/api/users/me", headers=user.headers)).json()["role"] == "user"
    assert (await client.get("/api/users", headers=user.headers)).status_code == 403

    promoted = await client.patch(f"/api/users/{user.id}/role", json={"role": "admin"}, headers=admin.headers)
    assert promoted.status_code == 200
    assert (await client.get("/api/users/me", headers=user.headers)).json()["role"] == "admin"
    assert (await client.get("/api/users", headers=user.headers)).status_code == 200

    demoted = await client.patch(f"/api/users/{user.id}/role", json={"role": "user"}, headers=admin.headers)
    assert demoted.status_code == 200
    assert (await client.get("/api/users/me", headers=user.headers)).json()["role"] == "user"
    assert (await client.get("/api/users", headers=user.headers)).status_code == 403


async def test_last_admin_cannot_demote_itself(
    client: AsyncTestClient[Litestar], role_in_db: RoleInDb, admin: TestUser
) -> None:
    response = await client.patch(f"/api/users/{admin.id}/role", json={"role": "user"}, headers=admin.headers)
    assert response.status_code == 409
    assert "last admin" in response.json()["detail"]
    assert await role_in_db(admin) == "admin"
    # Promoting itself again is harmless.
    again = await client.patch(f"/api/users/{admin.id}/role", json={"role": "admin"}, headers=admin.headers)
    assert again.status_code == 200


async def test_an_admin_can_step_down_when_another_remains(
    client: AsyncTestClient[Litestar], role_in_db: RoleInDb, admin: TestUser, user_factory: UserFactory
) -> None:
    other = await user_factory(role="admin")
    response = await client.patch(f"/api/users/{admin.id}/role", json={"role": "user"}, headers=admin.headers)
    assert response.status_code == 200
    assert await role_in_db(admin) == "user"
    # Now the other one is the last admin.
    response = await client.patch(f"/api/users/{other.id}/role", json={"role": "user"}, headers=other.headers)
    assert response.status_code == 409
    # And the former admin has lost its rights on its very next request.
    response = await client.patch(f"/api/users/{other.id}/role", json={"role": "user"}, headers=admin.headers)
    assert response.status_code == 403


@pytest.mark.parametrize(
    "path_id",
    ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "%27%20OR%201%3D1"],
)
async def test_role_malformed_id_is_404(
    client: AsyncTestClient[Litestar], admin: TestUser, path_id: str
) -> None:
    response = await client.patch(f"/api/users/{path_id}/role", json={"role": "admin"}, headers=admin.headers)
    assert response.status_code == 404


async def test_role_unknown_user_is_404(client: AsyncTestClient[Litestar], admin: TestUser) -> None:
    response = await client.patch(
        "/api/users/0190e0a4-0000-7000-8000-000000000000/role", json={"role": "admin"}, headers=admin.headers
    )
    assert response.status_code == 404
    assert response.json()["detail"] == "Not found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "superuser"}, "role"),
        ({"role": "ADMIN"}, "role"),
        ({"role": None}, "role"),
        ({}, "role"),
        ({"role": "admin", "confirmed": True}, "confirmed"),
    ],
)
async def test_role_bad_body_is_400(
    client: AsyncTestClient[Litestar], admin: TestUser, user: TestUser, body: dict[str, Any], field: str
) -> None:
    response = await client.patch(f"/api/users/{user.id}/role", json=body, headers=admin.headers)
    assert response.status_code == 400
    assert field in str(response.json())


async def test_role_broken_json_and_wrong_content_type(
    client: AsyncTestClient[Litestar], admin: TestUser, user: TestUser
) -> None:
    path = f"/api/users/{user.id}/role"
    broken = await client.patch(
        path, content=b'{"role": ', headers={**admin.headers, "Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    form = await client.patch(path, data={"role": "admin"}, headers=admin.headers)
    assert form.status_code == 415
    plain = await client.patch(
        path, content=b'{"role": "admin"}', headers={**admin.headers, "Content-Type": "text/plain"}
    )
    assert plain.status_code == 415
    assert "application/json" in plain.json()["detail"]


async def test_role_admin_only(
    client: AsyncTestClient[Litestar], role_in_db: RoleInDb, user: TestUser, user_factory: UserFactory
) -> None:
    target = await user_factory()
    response = await client.patch(f"/api/users/{user.id}/role", json={"role": "admin"}, headers=user.headers)
    assert response.status_code == 403
    response = await client.patch(
        f"/api/users/{target.id}/role", json={"role": "admin"}, headers=user.headers
    )
    assert response.status_code == 403
    assert await role_in_db(user) == "user"
    assert (await client.patch(f"/api/users/{user.id}/role", json={"role": "admin"})).status_code == 401
