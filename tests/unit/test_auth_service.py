"""AuthService against the database: sessions, rotation races, and the link tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import UUID

import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar.stores.memory import MemoryStore
from sqlalchemy import select

from app.auth.service import (
    AuthService,
    InvalidCredentials,
    InvalidLink,
    InvalidRefreshToken,
    NotConfirmed,
    WeakPassword,
    WrongPassword,
    dummy_hash,
)
from app.config import Settings
from app.db import make_db_config
from app.jobs.models import OutboxMail
from app.security.tokens import Purpose, create_token, decode_token, sign_claims
from app.users.service import UserService

PASSWORD = "a perfectly fine password"


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[SQLAlchemyAsyncConfig]:
    config = make_db_config(settings)
    yield config
    await config.get_engine().dispose()


def service(
    config: SQLAlchemyAsyncConfig, settings: Settings, session: object, store: MemoryStore
) -> AuthService:
    users = UserService(session, user_cache=store, bcrypt_rounds=4)  # type: ignore[arg-type]
    return AuthService(users=users, settings=settings)


@pytest.fixture
async def confirmed(db: SQLAlchemyAsyncConfig, settings: Settings) -> UUID:
    async with db.get_session() as session:
        auth = service(db, settings, session, MemoryStore())
        user = await auth.register(username="ada", email="ada@example.com", password=PASSWORD)
        await auth.users.confirm(user)
        return user.id


async def test_concurrent_refreshes_let_exactly_one_through(
    db: SQLAlchemyAsyncConfig, settings: Settings, confirmed: UUID
) -> None:
    store = MemoryStore()
    async with db.get_session() as session:
        tokens = await service(db, settings, session, store).login("ada", PASSWORD)

    async def refresh() -> str:
        async with db.get_session() as session:
            try:
                await service(db, settings, session, store).refresh(tokens.refresh_token)
            except InvalidRefreshToken:
                return "refused"
            return "rotated"

    outcomes = await asyncio.gather(*(refresh() for _ in range(4)))

    # One wins; the others either lose the conditional UPDATE or, arriving after the winner's
    # commit, present a dead token (a re-use, which ends the session: that is the rule).
    assert sorted(outcomes) == ["refused", "refused", "refused", "rotated"]


async def test_rotate_matches_only_the_current_hash(
    db: SQLAlchemyAsyncConfig, settings: Settings, confirmed: UUID
) -> None:
    store = MemoryStore()
    async with db.get_session() as session:
        auth = service(db, settings, session, store)
        tokens = await auth.login("ada", PASSWORD)
        sid = UUID(decode_token(settings.secret_key, tokens.refresh_token, Purpose.REFRESH)["sid"])
        row = await auth.users.sessions.get(sid)
        old = row.refresh_token_hash
        later = row.expires_at + timedelta(days=1)

        assert await auth.users.sessions.rotate(sid, old, "a" * 64, later) is True
        assert await auth.users.sessions.rotate(sid, old, "b" * 64, later) is False
        await session.commit()
        await auth.users.sessions.revoke(confirmed, only=sid)
        assert await auth.users.sessions.rotate(sid, "a" * 64, "c" * 64, later) is False


async def test_login_rules(db: SQLAlchemyAsyncConfig, settings: Settings, confirmed: UUID) -> None:
    async with db.get_session() as session:
        auth = service(db, settings, session, MemoryStore())
        with pytest.raises(InvalidCredentials):
            await auth.login("nobody", PASSWORD)
        with pytest.raises(InvalidCredentials):
            await auth.login("ada", PASSWORD + "!")
        await auth.register(username="bob", email="bob@example.com", password=PASSWORD)
        with pytest.raises(NotConfirmed):
            await auth.login("BOB@example.com", PASSWORD)
        tokens = await auth.login("ADA", PASSWORD)

    access = decode_token(settings.secret_key, tokens.access_token, Purpose.ACCESS)
    refresh = decode_token(settings.secret_key, tokens.refresh_token, Purpose.REFRESH)
    assert access["sid"] == refresh["sid"]
    assert access["sub"] == str(confirmed)


async def test_dummy_hash_is_made_once_per_cost() -> None:
    first = await dummy_hash(4)
    assert await dummy_hash(4) is first
    assert first.startswith("$2b$04$")


async def test_logout_refuses_someone_elses_or_broken_tokens(
    db: SQLAlchemyAsyncConfig, settings: Settings, confirmed: UUID
) -> None:
    async with db.get_session() as session:
        auth = service(db, settings, session, MemoryStore())
        tokens = await auth.login("ada", PASSWORD)
        with pytest.raises(InvalidRefreshToken):
            await auth.logout(UUID(int=1), tokens.refresh_token)
        with pytest.raises(InvalidRefreshToken):
            await auth.logout(confirmed, tokens.access_token)
        no_sid = create_token(settings.secret_key, Purpose.REFRESH, str(confirmed), timedelta(minutes=1))[0]
        with pytest.raises(InvalidRefreshToken):
            await auth.logout(confirmed, no_sid)
        await auth.logout(confirmed, tokens.refresh_token)
        with pytest.raises(InvalidRefreshToken):
            await auth.refresh(tokens.refresh_token)


async def test_confirmation_token_is_bound_to_the_email(
    db: SQLAlchemyAsyncConfig, settings: Settings, confirmed: UUID
) -> None:
    async with db.get_session() as session:
        auth = service(db, settings, session, MemoryStore())
        user = await auth.register(username="carol", email="carol@example.com", password=PASSWORD)
        row = await session.scalar(select(OutboxMail).where(OutboxMail.recipient == "carol@example.com"))
        assert row is not None
        assert row.kind == "confirm_email"
        token = sign_claims(settings.secret_key, row.params["claims"])
        user.email = "carol.new@example.com"
        await auth.users.save(user.id)

        with pytest.raises(InvalidLink):
            await auth.confirm_email(token)


async def test_password_rules(db: SQLAlchemyAsyncConfig, settings: Settings, confirmed: UUID) -> None:
    async with db.get_session() as session:
        auth = service(db, settings, session, MemoryStore())
        with pytest.raises(WeakPassword) as weak:
            await auth.register(username="dave", email="dave@example.com", password="password123")
        assert weak.value.field == "password"
        with pytest.raises(WrongPassword):
            await auth.change_password(confirmed, None, "wrong one!", "another fine password")
        with pytest.raises(WeakPassword) as weak_new:
            await auth.change_password(confirmed, None, PASSWORD, "12345678")
        assert weak_new.value.field == "new_password"
        assert await auth.request_reset("nobody@example.com") is False
        assert await auth.request_confirmation("ada@example.com") is False  # already confirmed
