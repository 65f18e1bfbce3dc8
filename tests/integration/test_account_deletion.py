"""``DELETE /api/users/me`` and ``DELETE /api/users/{id}``: erasing an account (issue 16, item 4)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, inspect, select, text, update

from app import models
from app.config import Settings
from app.db import make_db_config
from app.jobs.models import PENDING
from app.jobs.outbox import add_mail
from app.security.tokens import Purpose, create_token, fingerprint
from app.storage.images import inspect_image
from app.users.models import User
from tests import images
from tests.conftest import PASSWORD, PASSWORD_HASH, SECRET, SmtpServer, TestUser
from tests.outbox import outbox_rows

ME = "/api/users/me"
UserFactory = Callable[..., Awaitable[TestUser]]
InAppLoop = Callable[..., Awaitable[Any]]
#: Columns that name a user without a foreign key (none today; a table that adds one is walked too).
OWNER_COLUMNS = ("user_id", "owner_id")


def _user_references() -> list[tuple[str, str]]:
    """``(table, column)`` of every column that refers to a user: foreign keys to ``users.id``, owner columns."""
    found: set[tuple[str, str]] = set()
    for table in models.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name == "users":
                found.add((table.name, fk.parent.name))
        for column in table.columns:
            if column.name in OWNER_COLUMNS:
                found.add((table.name, column.name))
    return sorted(found)


async def _rows_referring_to(settings: Settings, user_id: UUID, email: str) -> dict[str, int]:
    """How many rows of each table still refer to the user (by id, or the users row by email)."""
    config = make_db_config(settings)
    try:
        async with config.get_session() as session:
            counts = {
                "users": await session.scalar(
                    select(func.count()).select_from(User).where((User.id == user_id) | (User.email == email))
                )
                or 0
            }
            for table_name, column_name in _user_references():
                table = models.metadata.tables[table_name]
                counts[f"{table_name}.{column_name}"] = (
                    await session.scalar(
                        select(func.count()).select_from(table).where(table.c[column_name] == user_id)
                    )
                    or 0
                )
            return counts
    finally:
        await config.get_engine().dispose()


def _media_files(settings: Settings) -> list[str]:
    directory = Path(settings.media_dir)
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def _give_avatar(app: Litestar, user_id: UUID) -> str:
    """Store an avatar file for the user (as the upload route does) and point the user at it."""
    data = images.png(8, 8)
    url = await app.state.avatar_storage.save(user_id, data, inspect_image(data, 10_000))
    async with app.state.db_config.get_session() as session:
        await session.execute(update(User).where(User.id == user_id).values(avatar_url=url))
        await session.commit()
    return url


async def _queue_mail(app: Litestar, to: str) -> None:
    async with app.state.db_config.get_session() as session:
        add_mail(session, "password_changed", to, username="x")
        await session.commit()


async def _login(client: AsyncTestClient[Litestar], login: str) -> dict[str, Any]:
    response = await client.post("/api/auth/login", data={"username": login, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()


def _contact(n: int) -> dict[str, str]:
    return {
        "first_name": f"Ann{n}",
        "last_name": "Erased",
        "email": f"ann{n}@example.com",
        "phone_number": "+380501234567",
    }


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _delete_me(client: AsyncTestClient[Litestar], user: TestUser, password: str = PASSWORD) -> Any:
    return await client.request("DELETE", ME, json={"password": password}, headers=user.headers)


# --------------------------------------------------------------------------- the schema


def test_the_walk_covers_every_table_that_refers_to_users() -> None:
    references = _user_references()
    assert ("user_sessions", "user_id") in references
    assert ("contacts", "owner_id") in references
    assert ("contact_counts", "owner_id") in references


def test_every_foreign_key_to_users_cascades_in_the_models() -> None:
    for table in models.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name == "users":
                assert fk.ondelete == "CASCADE", f"{table.name}.{fk.parent.name} must be ON DELETE CASCADE"


async def test_every_foreign_key_to_users_cascades_in_the_migrated_database(settings: Settings) -> None:
    config = make_db_config(settings)
    try:
        async with config.get_engine().connect() as connection:

            def keys(sync_connection: Any) -> list[tuple[str, dict[str, Any]]]:
                inspector = inspect(sync_connection)
                return [
                    (table, fk)
                    for table in inspector.get_table_names()
                    for fk in inspector.get_foreign_keys(table)
                    if fk["referred_table"] == "users"
                ]

            found = await connection.run_sync(keys)
    finally:
        await config.get_engine().dispose()
    assert {table for table, _ in found} >= {"user_sessions", "contacts", "contact_counts"}
    for table, fk in found:
        assert (fk.get("options") or {}).get("ondelete", "").upper() == "CASCADE", (table, fk)


# --------------------------------------------------------------------------- DELETE /api/users/me


async def test_deleting_my_account_leaves_no_row_and_no_file(
    client: AsyncTestClient[Litestar],
    app: Litestar,
    settings: Settings,
    user: TestUser,
    user_factory: UserFactory,
    in_app_loop: InAppLoop,
) -> None:
    bystander = await user_factory()
    for n in range(3):
        assert (
            await client.post("/api/contacts/", json=_contact(n), headers=user.headers)
        ).status_code == 201
    assert (
        await client.post("/api/contacts/", json=_contact(9), headers=bystander.headers)
    ).status_code == 201
    await _login(client, user.email)  # a second session
    await in_app_loop(_give_avatar, app, user.id)
    await in_app_loop(_queue_mail, app, user.email)
    await in_app_loop(_queue_mail, app, bystander.email)
    # An account request (the reset mail is still to be resolved by the job runner).
    assert (
        await client.post("/api/auth/update_password", json={"email": user.email.upper()})
    ).status_code == 202
    before = await _rows_referring_to(settings, user.id, user.email)
    assert before["users"] == 1
    assert before["contacts.owner_id"] == 3
    assert before["contact_counts.owner_id"] == 1
    assert before["user_sessions.user_id"] == 2
    assert len(_media_files(settings)) == 1

    response = await _delete_me(client, user)

    assert response.status_code == 204, response.text
    assert response.content == b""
    after = await _rows_referring_to(settings, user.id, user.email)
    assert set(after.values()) == {0}, after
    assert _media_files(settings) == []
    pending_to_user = [
        row.kind
        for row in await outbox_rows(settings)
        if row.recipient.lower() == user.email and row.status == PENDING
    ]
    assert pending_to_user == ["account_deleted"]  # the goodbye, nothing that was waiting
    # Nobody else lost anything.
    assert (await client.get("/api/contacts/", headers=bystander.headers)).json()["total"] == 1
    assert any(row.recipient == bystander.email for row in await outbox_rows(settings))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "wrong password here"}, "password"),
        ({}, None),
        ({"password": ""}, None),
        ({"password": PASSWORD, "extra": 1}, None),
        ({"password": "nul\x00byte"}, None),
    ],
)
async def test_a_wrong_password_or_bad_body_is_400_and_nothing_changes(
    client: AsyncTestClient[Litestar],
    settings: Settings,
    user: TestUser,
    body: dict[str, Any],
    field: str | None,
) -> None:
    response = await client.request("DELETE", ME, json=body, headers=user.headers)
    assert response.status_code == 400, response.text
    if field is not None:
        assert response.json()["extra"][0]["key"] == field
    assert (await client.get(ME, headers=user.headers)).status_code == 200
    assert (await _rows_referring_to(settings, user.id, user.email))["users"] == 1


async def test_deleting_needs_a_token_and_a_json_body(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    assert (await client.request("DELETE", ME, json={"password": PASSWORD})).status_code == 401
    response = await client.request(
        "DELETE",
        ME,
        content=f"password={PASSWORD}",
        headers={**user.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code in (400, 415)
    assert (await client.get(ME, headers=user.headers)).status_code == 200


async def test_the_last_admin_cannot_delete_their_account(
    client: AsyncTestClient[Litestar], admin: TestUser, user_factory: UserFactory
) -> None:
    response = await _delete_me(client, admin)
    assert response.status_code == 409
    assert response.json()["detail"] == "The last admin cannot be deleted"
    assert (await client.get(ME, headers=admin.headers)).status_code == 200
    await user_factory(role="admin")
    assert (await _delete_me(client, admin)).status_code == 204


async def test_a_deleted_users_tokens_and_links_are_dead_and_the_email_is_free(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    uid = str(user.id)
    tokens = await _login(client, user.email)
    assert (await client.get(ME, headers=_bearer(tokens["access_token"]))).status_code == 200  # cached
    reset = create_token(
        SECRET,
        Purpose.RESET_PASSWORD,
        uid,
        timedelta(minutes=30),
        st=fingerprint(uid, PASSWORD_HASH, 0, user.email),
    )[0]
    confirm = create_token(SECRET, Purpose.CONFIRM_EMAIL, uid, timedelta(hours=1), em=user.email)[0]
    reset_path = f"/api/auth/confirm_update_password/{reset}"
    assert (await client.get(reset_path)).status_code == 200  # valid before

    assert (await _delete_me(client, user)).status_code == 204

    assert (await client.get(ME, headers=user.headers)).status_code == 401
    assert (await client.get(ME, headers=_bearer(tokens["access_token"]))).status_code == 401
    refresh = await client.post("/api/auth/refresh_token", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401
    assert (await client.get(reset_path)).status_code == 400
    assert (await client.post(reset_path, json={"password": "a brand new passphrase"})).status_code == 400
    assert (await client.get(f"/api/auth/confirmed_email/{confirm}")).status_code == 400
    assert (
        await client.post("/api/auth/login", data={"username": user.email, "password": PASSWORD})
    ).status_code == 401

    again = await client.post(
        "/api/auth/register",
        json={"username": user.username, "email": user.email, "password": "another good passphrase"},
    )
    assert again.status_code == 201, again.text
    assert again.json()["id"] != uid


async def test_the_goodbye_notice_is_mailed_and_waiting_mails_are_not(
    make_client: Callable[..., AsyncTestClient[Litestar]], smtp_server: SmtpServer, user_factory: Any
) -> None:
    async with make_client(**smtp_server.settings) as client:
        user = await user_factory()
        assert (await _delete_me(client, user)).status_code == 204
        [goodbye] = await smtp_server.sink.wait_for(1)
    assert goodbye["To"] == user.email
    assert goodbye["Subject"] == "Your Contacts API account was deleted"
    assert "deleted" in smtp_server.sink.text(goodbye)
    assert "administrator" not in smtp_server.sink.text(goodbye)


async def test_another_replica_refuses_the_deleted_users_token_at_once(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: Any
) -> None:
    user = await user_factory()
    async with make_client(user_cache_local_ttl=300) as one, make_client(user_cache_local_ttl=300) as two:
        for replica in (one, two):
            store = replica.app.stores.get("user_cache")
            if hasattr(store, "subscribed"):
                while not store.subscribed:  # noqa: ASYNC110 - the store offers no event to wait on
                    await asyncio.sleep(0.02)
        assert (await two.get(ME, headers=user.headers)).status_code == 200  # two caches the user
        assert (await _delete_me(one, user)).status_code == 204
        deadline = time.monotonic() + 1.0
        while (await two.get(ME, headers=user.headers)).status_code != 401:
            assert time.monotonic() < deadline, "replica two still accepts the deleted user's token"
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- DELETE /api/users/{id}


async def test_an_admin_erases_an_account(
    client: AsyncTestClient[Litestar],
    app: Litestar,
    settings: Settings,
    admin: TestUser,
    user: TestUser,
    in_app_loop: InAppLoop,
) -> None:
    assert (await client.post("/api/contacts/", json=_contact(1), headers=user.headers)).status_code == 201
    await in_app_loop(_give_avatar, app, user.id)
    assert (await client.get(ME, headers=user.headers)).status_code == 200

    response = await client.delete(f"/api/users/{user.id}", headers=admin.headers)

    assert response.status_code == 204
    assert set((await _rows_referring_to(settings, user.id, user.email)).values()) == {0}
    assert _media_files(settings) == []
    assert (await client.get(ME, headers=user.headers)).status_code == 401
    assert (await client.get(ME, headers=admin.headers)).status_code == 200
    goodbye = [r for r in await outbox_rows(settings) if r.recipient == user.email]
    assert [(r.kind, r.params["by_admin"]) for r in goodbye] == [("account_deleted", True)]
    assert (await client.delete(f"/api/users/{user.id}", headers=admin.headers)).status_code == 404


@pytest.mark.parametrize("target", ["0190b7a4-0000-7000-8000-000000000000", "not-an-id"])
async def test_an_unknown_user_is_404(
    client: AsyncTestClient[Litestar], admin: TestUser, target: str
) -> None:
    assert (await client.delete(f"/api/users/{target}", headers=admin.headers)).status_code == 404


async def test_only_admins_delete_others(
    client: AsyncTestClient[Litestar], settings: Settings, user: TestUser, user_factory: UserFactory
) -> None:
    other = await user_factory()
    assert (await client.delete(f"/api/users/{other.id}", headers=user.headers)).status_code == 403
    assert (await client.delete(f"/api/users/{other.id}")).status_code == 401
    assert (await _rows_referring_to(settings, other.id, other.email))["users"] == 1


async def test_an_admin_cannot_erase_the_last_admin(
    client: AsyncTestClient[Litestar], settings: Settings, admin: TestUser, user_factory: UserFactory
) -> None:
    response = await client.delete(f"/api/users/{admin.id}", headers=admin.headers)
    assert response.status_code == 409
    assert (await _rows_referring_to(settings, admin.id, admin.email))["users"] == 1
    second = await user_factory(role="admin")
    assert (await client.delete(f"/api/users/{second.id}", headers=admin.headers)).status_code == 204
    assert (await client.delete(f"/api/users/{admin.id}", headers=admin.headers)).status_code == 409


async def test_sqlite_enforces_the_cascades(settings: Settings) -> None:
    """On SQLite the cascades work only with ``PRAGMA foreign_keys=ON`` on every connection."""
    config = make_db_config(settings)
    try:
        async with config.get_engine().connect() as connection:
            if connection.dialect.name != "sqlite":
                pytest.skip("PostgreSQL always enforces foreign keys")
            assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
    finally:
        await config.get_engine().dispose()


async def test_two_last_admins_deleting_each_other_at_once_leave_one(
    client: AsyncTestClient[Litestar], settings: Settings, user_factory: UserFactory
) -> None:
    first, second = await user_factory(role="admin"), await user_factory(role="admin")
    answers = await asyncio.gather(
        client.delete(f"/api/users/{second.id}", headers=first.headers),
        client.delete(f"/api/users/{first.id}", headers=second.headers),
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses[0] == 204, [a.text for a in answers]
    assert statuses[1] in (401, 409), [a.text for a in answers]  # refused, or its sender was gone already
    left = [(await _rows_referring_to(settings, admin.id, admin.email))["users"] for admin in (first, second)]
    assert sorted(left) == [0, 1]
