"""UserService: roles (the last admin stays), avatars (no orphan files), the user page."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar.stores.memory import MemoryStore
from sqlalchemy import delete, select

from app.config import Settings
from app.db import make_db_config
from app.storage.images import inspect_image
from app.users.models import User
from app.users.service import LastAdminError, UserService
from tests import images
from tests.conftest import PASSWORD_HASH


@pytest.fixture
async def db_config(settings: Settings) -> AsyncIterator[SQLAlchemyAsyncConfig]:
    config = make_db_config(settings)
    yield config
    await config.get_engine().dispose()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def make_service(db_config: SQLAlchemyAsyncConfig, store: MemoryStore) -> Callable[[Any], UserService]:
    def make(session: Any) -> UserService:
        return UserService(session, user_cache=store, bcrypt_rounds=4)

    return make


async def _add(
    db_config: SQLAlchemyAsyncConfig, role: str = "user", avatar: str = "https://g/x"
) -> uuid.UUID:
    async with db_config.get_session() as session:
        user = User(
            username=f"u_{uuid.uuid4().hex[:8]}",
            email=f"{uuid.uuid4().hex[:8]}@example.com",
            password_hash=PASSWORD_HASH,
            role=role,
            confirmed=True,
            avatar_url=avatar,
        )
        session.add(user)
        await session.commit()
        return user.id


async def _roles(db_config: SQLAlchemyAsyncConfig) -> dict[uuid.UUID, str]:
    async with db_config.get_session() as session:
        return {row.id: row.role for row in (await session.execute(select(User.id, User.role))).all()}


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    db_config: SQLAlchemyAsyncConfig, make_service: Callable[[Any], UserService]
) -> None:
    a, b = await _add(db_config, "admin"), await _add(db_config, "admin")

    async def demote(user_id: uuid.UUID) -> str:
        async with db_config.get_session() as session:
            try:
                await make_service(session).set_role(user_id, "user")
            except LastAdminError:
                return "refused"
            return "demoted"

    outcomes = await asyncio.gather(demote(a), demote(b))
    assert sorted(outcomes) == ["demoted", "refused"]
    assert sorted((await _roles(db_config)).values()) == ["admin", "user"]


async def test_set_role_invalidates_the_cache(
    db_config: SQLAlchemyAsyncConfig, make_service: Callable[[Any], UserService], store: MemoryStore
) -> None:
    admin, other = await _add(db_config, "admin"), await _add(db_config, "admin")
    for user_id, role in ((other, "user"), (other, "admin"), (admin, "user")):
        await store.set(str(user_id), b"cached")
        async with db_config.get_session() as session:
            user = await make_service(session).set_role(user_id, role)
        assert user.role == role
        assert await store.get(str(user_id)) is None
    assert (await _roles(db_config)) == {admin: "user", other: "admin"}


async def test_set_role_unknown_user(
    db_config: SQLAlchemyAsyncConfig, make_service: Callable[[Any], UserService]
) -> None:
    async with db_config.get_session() as session:
        with pytest.raises(NotFoundError):
            await make_service(session).set_role(uuid.uuid4(), "admin")


class FakeStorage:
    """Records what the service asks of a storage."""

    def __init__(self, url: str = "https://cdn/new.png", on_save: Any = None) -> None:
        self.url = url
        self.on_save = on_save
        self.saved: list[uuid.UUID] = []
        self.discarded: list[str] = []

    async def save(self, user_id: uuid.UUID, _data: bytes, _image: Any) -> str:
        self.saved.append(user_id)
        if self.on_save:
            await self.on_save()
        return self.url

    async def discard(self, url: str) -> None:
        self.discarded.append(url)


PNG = images.png()
PNG_INFO = inspect_image(PNG, 100)


async def test_set_avatar_discards_the_previous_one(
    db_config: SQLAlchemyAsyncConfig, make_service: Callable[[Any], UserService], store: MemoryStore
) -> None:
    user_id = await _add(db_config, "admin", avatar="https://old/a.png")
    await store.set(str(user_id), b"cached")
    storage = FakeStorage()
    async with db_config.get_session() as session:
        user = await make_service(session).set_avatar(user_id, PNG, PNG_INFO, storage)
    assert user.avatar_url == "https://cdn/new.png"
    assert storage.discarded == ["https://old/a.png"]
    assert await store.get(str(user_id)) is None


async def test_set_avatar_same_url_is_not_discarded(
    db_config: SQLAlchemyAsyncConfig, make_service: Callable[[Any], UserService]
) -> None:
    user_id = await _add(db_config, "admin", avatar="https://cdn/new.png")
    storage = FakeStorage()
    async with db_config.get_session() as session:
        await make_service(session).set_avatar(user_id, PNG, PNG_INFO, storage)
    assert storage.discarded == []


async def test_set_avatar_failed_write_leaves_no_orphan_file(
    db_config: SQLAlchemyAsyncConfig, make_service: Callable[[Any], UserService]
) -> None:
    user_id = await _add(db_config, "admin", avatar="https://old/a.png")

    async def delete_user_meanwhile() -> None:  # the account is deleted while the file uploads
        async with db_config.get_session() as other:
            await other.execute(delete(User).where(User.id == user_id))
            await other.commit()

    storage = FakeStorage(on_save=delete_user_meanwhile)
    async with db_config.get_session() as session:
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the ORM raises for a vanished row
            await make_service(session).set_avatar(user_id, PNG, PNG_INFO, storage)
    assert storage.discarded == ["https://cdn/new.png"]  # the new file, never the old one


async def test_list_page_orders_oldest_first(
    db_config: SQLAlchemyAsyncConfig, make_service: Callable[[Any], UserService]
) -> None:
    ids = [await _add(db_config) for _ in range(3)]
    async with db_config.get_session() as session:
        users, total = await make_service(session).list_page(limit=2, offset=1)
    assert total == 3
    assert [u.id for u in users] == ids[1:]
