"""UserService: creation rules, lookups and cache invalidation on every write."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from litestar.stores.memory import MemoryStore
from sqlalchemy import select

from app.config import Settings
from app.db import make_db_config
from app.security.passwords import verify_password
from app.users.models import User, UserSession
from app.users.service import UserExistsError, UserService, gravatar_url

PASSWORD = "a perfectly fine password"


@pytest.fixture
async def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def service(settings: Settings, store: MemoryStore) -> AsyncIterator[UserService]:
    config = make_db_config(settings)
    async with config.get_session() as session:
        yield UserService(session, user_cache=store, bcrypt_rounds=4)
    await config.get_engine().dispose()


async def test_create_user_normalises_and_defaults(service: UserService) -> None:
    user = await service.create_user(username="  Alice_1 ", email="  Alice@Example.COM ", password=PASSWORD)

    assert user.email == "alice@example.com"
    assert user.username == "Alice_1"
    assert user.role == "user"
    assert user.confirmed is False
    assert user.password_version == 0
    digest = hashlib.sha256(b"alice@example.com").hexdigest()
    assert user.avatar_url == f"https://www.gravatar.com/avatar/{digest}?d=identicon"
    assert user.avatar_url == gravatar_url("ALICE@example.com ")
    assert user.password_hash != PASSWORD
    assert await verify_password(PASSWORD, user.password_hash)
    assert user.password_hash.startswith("$2b$04$")


async def test_create_user_conflicts_are_case_insensitive(service: UserService) -> None:
    await service.create_user(username="Bob", email="bob@example.com", password=PASSWORD)

    with pytest.raises(UserExistsError) as email_taken:
        await service.create_user(username="other", email="BOB@example.com", password=PASSWORD)
    assert email_taken.value.field == "email"
    with pytest.raises(UserExistsError) as name_taken:
        await service.create_user(username="bOB", email="new@example.com", password=PASSWORD)
    assert name_taken.value.field == "username"


async def test_get_by_login_matches_email_or_username(service: UserService) -> None:
    user = await service.create_user(username="Carol", email="carol@example.com", password=PASSWORD)

    assert (await service.get_by_login("CAROL@example.com ")).id == user.id  # type: ignore[union-attr]
    assert (await service.get_by_login("carol")).id == user.id  # type: ignore[union-attr]
    assert await service.get_by_login("nobody") is None
    assert await service.get_by_login("nobody@example.com") is None
    assert (await service.get_by_email("Carol@Example.com")).id == user.id  # type: ignore[union-attr]


async def test_writes_invalidate_the_cache(service: UserService, store: MemoryStore) -> None:
    user = await service.create_user(username="dave", email="dave@example.com", password=PASSWORD)
    await store.set(str(user.id), b"stale")

    await service.confirm(user)

    assert user.confirmed is True
    assert await store.get(str(user.id)) is None


async def test_set_password_revokes_sessions_but_the_kept_one(
    service: UserService, store: MemoryStore
) -> None:
    user = await service.create_user(username="erin", email="erin@example.com", password=PASSWORD)
    later = datetime.now(UTC) + timedelta(days=1)
    kept, other = (
        UserSession(user_id=user.id, refresh_token_hash=name * 64, expires_at=later) for name in "ab"
    )
    service.repository.session.add_all([kept, other])
    await service.save(user.id)
    await store.set(str(user.id), b"stale")

    await service.set_password(user, "another fine password", keep_session=kept.id)

    assert user.password_version == 1
    assert await verify_password("another fine password", user.password_hash)
    assert await store.get(str(user.id)) is None
    rows = {
        s.id: s.revoked_at
        for s in await service.repository.session.scalars(
            select(UserSession)
            .where(UserSession.user_id == user.id)
            .execution_options(populate_existing=True)
        )
    }
    assert rows[kept.id] is None
    assert rows[other.id] is not None

    await service.set_password(user, "a third fine password")
    revoked = await service.repository.session.scalars(
        select(UserSession.revoked_at).where(UserSession.user_id == user.id)
    )
    assert all(value is not None for value in revoked)
    assert (await service.repository.session.get(User, user.id)).password_version == 2  # type: ignore[union-attr]
