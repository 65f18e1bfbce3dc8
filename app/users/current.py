"""The current user: a snapshot of the user and their live sessions, cached in the ``user_cache`` store.

The auth middleware (:mod:`app.security.auth`) is handed :func:`load_request_user` at app
construction and calls it with a verified access token's user and session. The snapshot is a
msgspec-encoded :class:`CurrentUser` in the store; on a miss or a store error it is read from
the database and the store refilled. Every write to a user or their sessions drops it
(:func:`invalidate_user`, called by :meth:`app.users.service.UserService.save`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import select

from app import cache
from app.users.models import User, UserSession
from app.users.schemas import CurrentUser

if TYPE_CHECKING:
    from uuid import UUID

    from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
    from litestar import Litestar
    from litestar.stores.base import Store
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.config import Settings

logger = logging.getLogger(__name__)

_encode = msgspec.msgpack.Encoder().encode
_decoder = msgspec.msgpack.Decoder(CurrentUser)


async def load_current_user(session: AsyncSession, user_id: UUID) -> CurrentUser | None:
    """Read a user and their live session ids from the database.

    Args:
        session: A database session.
        user_id: The user's id.

    Returns:
        The snapshot, or ``None`` if there is no such user.
    """
    user = await session.scalar(select(User).where(User.id == user_id))
    if user is None:
        return None
    now = datetime.now(UTC)
    sids = await session.scalars(
        select(UserSession.id).where(
            UserSession.user_id == user_id, UserSession.revoked_at.is_(None), UserSession.expires_at > now
        )
    )
    return CurrentUser(
        id=user.id,
        username=user.username,
        email=user.email,
        role=user.role,  # type: ignore[arg-type]
        confirmed=user.confirmed,
        avatar_url=user.avatar_url,
        created_at=user.created_at,
        session_ids=frozenset(str(sid) for sid in sids),
    )


async def invalidate_user(store: Store, user_id: UUID | str) -> None:
    """Drop a user's cached snapshot (or another key of the store); called by every code path that changes a user.

    A store outage is logged, not raised: the entry expires on its own (TTL) and the
    write that triggered this must not fail because of the cache.

    Args:
        store: The ``user_cache`` store.
        user_id: The user whose snapshot is dropped.
    """
    try:
        await store.delete(str(user_id))
    except Exception as exc:
        logger.warning("user cache: could not invalidate (%s)", type(exc).__name__)


#: ``Session.info`` key of the cache keys to drop once the session's transaction is committed.
_DROP_AFTER_COMMIT = "user_cache_drop_after_commit"


def drop_after_commit(session: AsyncSession, *keys: str) -> None:
    """Have ``keys`` of the ``user_cache`` store dropped once ``session`` commits.

    For a change that makes cached entries wrong and joins a transaction someone else commits
    (a password change revoking the app passwords): dropped before the commit, an entry could
    be cached again from the old rows. :meth:`app.users.service.UserService.save` drops them.

    Args:
        session: The unit of work's database session.
        *keys: The store keys.
    """
    session.info.setdefault(_DROP_AFTER_COMMIT, []).extend(keys)


async def drop_committed(session: AsyncSession, store: Store) -> None:
    """Drop the keys :func:`drop_after_commit` noted on ``session`` (call it after the commit).

    Args:
        session: The session just committed.
        store: The ``user_cache`` store.
    """
    for key in session.info.pop(_DROP_AFTER_COMMIT, ()):
        await invalidate_user(store, key)


async def get_current_user(
    store: Store,
    db_config: SQLAlchemyAsyncConfig,
    user_id: UUID,
    ttl: int,
    key: str | None = None,
    *,
    fresh: bool = False,
) -> CurrentUser | None:
    """The user snapshot from the store, or from the database on a miss or an outage.

    Args:
        store: The ``user_cache`` store.
        db_config: The SQLAlchemy config (for a session on a miss).
        user_id: The user's id.
        ttl: Seconds a refilled entry lives.
        key: ``str(user_id)``, when the caller has it already.
        fresh: Skip the store: read the database and refill the store.

    Returns:
        The snapshot, or ``None`` if the user does not exist.
    """
    key = key or str(user_id)
    store_ok = True
    raw = None
    if not fresh:
        try:
            raw = await store.get(key)
        except Exception as exc:
            logger.warning("user cache unavailable, reading the database (%s)", type(exc).__name__)
            store_ok = False
    if raw is not None:
        try:
            return _decoder.decode(raw)
        except msgspec.DecodeError:
            logger.warning("user cache: undecodable entry dropped")
    async with db_config.get_session() as session:
        user = await load_current_user(session, user_id)
    if user is not None and store_ok:
        try:
            await store.set(key, _encode(user), expires_in=ttl)
        except Exception as exc:
            logger.warning("user cache: could not store (%s)", type(exc).__name__)
    return user


async def load_request_user(
    app: Litestar, user_id: UUID, key: str, session_id: str | None
) -> CurrentUser | None:
    """The auth middleware's user loader: the user, if ``session_id`` is one of their live sessions.

    Args:
        app: The application (its ``user_cache`` store, database config and settings).
        user_id: The verified token's user.
        key: ``str(user_id)``.
        session_id: The token's ``sid`` claim.

    Returns:
        The current user, or ``None`` (no such user, or the session is over).
    """
    settings: Settings = app.state.settings
    store = app.stores.get(cache.USER_CACHE)
    db_config = app.state.db_config
    user = await get_current_user(store, db_config, user_id, settings.user_cache_ttl, key)
    if user is not None and session_id not in user.session_ids:
        # Logins do not drop the cached snapshot, so it may predate this token's session:
        # ask the database. Ended sessions are dropped from the cache when they end.
        user = await get_current_user(store, db_config, user_id, settings.user_cache_ttl, key, fresh=True)
    if user is None or session_id not in user.session_ids:
        return None
    return user
