"""App passwords: the credentials of clients that cannot do JWT (CardDAV address books).

A user makes one per device (``POST /api/users/me/app-passwords``) and types it, with the
account's email as user name, into the device's HTTP Basic settings. The secret is 160 random
bits from :mod:`secrets`, shown once; only its SHA-256 is stored. A fast hash is enough for a
random token of that size (the refresh tokens are stored the same way): nobody can search the
digest's preimage, and the digest is what the row is looked up by. bcrypt would only add its
cost to every cold verification.

An app password is accepted by :func:`authenticate_basic` only, which the ``/dav/`` mount
calls; it is not a JWT, so every ``/api/...`` route refuses it, and login compares the
account password alone. The account password is never an app password.

**Verifying a sync burst.** A client sends hundreds of requests with the same credentials. A
verified credential is kept in the ``user_cache`` store under ``app-password:<digest>`` (the
same near cache as the user snapshot: a copy in process, Redis behind it, invalidations
published to every process). A warm request costs one SHA-256 and two in-process lookups (the
credential and the user's snapshot, which says the user still exists, is confirmed and has
that email): no query. A cold one is counted against the login rate limit
(:data:`app.ratelimit.BASIC`) and read from the database.

**Revocation takes effect at once.** Deleting an app password, or all of them (a password
change or reset, :func:`revoke_all_app_passwords`), drops the cached credentials after the
commit, on every process. A cold verification that raced a revocation checks the row again
after caching it, and drops its entry when the row is gone. An erased account's snapshot is
gone, so its credentials fail the warm check too.

``last_used_at`` is written at most once a minute per app password (:data:`TOUCH_EVERY`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from litestar.status_codes import HTTP_401_UNAUTHORIZED, HTTP_404_NOT_FOUND, HTTP_409_CONFLICT
from sqlalchemy import delete, func, or_, select, update

from app import cache
from app.audit import audit
from app.errors import AppError
from app.input import SINGLE_LINE, field_error, normalize_email
from app.ratelimit import BASIC, TooManyAttempts, count_attempt
from app.users.current import drop_after_commit, get_current_user, invalidate_user
from app.users.models import AppPassword, User

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.stores.base import Store
    from litestar.types import Scope
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.config import Settings
    from app.users.schemas import CurrentUser

__all__ = (
    "MAX_PER_USER",
    "AppPasswordCreate",
    "AppPasswordCreated",
    "AppPasswordNotFoundError",
    "AppPasswordRead",
    "AppPasswordService",
    "BasicAuthError",
    "TooManyAppPasswordsError",
    "TooManyAttempts",
    "authenticate_basic",
    "revoke_all_app_passwords",
)

logger = logging.getLogger(__name__)

#: App passwords one account may hold.
MAX_PER_USER = 50
#: Random bytes of a secret (160 bits).
SECRET_BYTES = 20
#: Seconds between two writes of an app password's ``last_used_at``.
TOUCH_EVERY = 60.0
#: The ``WWW-Authenticate`` challenge of a refused Basic request.
CHALLENGE = 'Basic realm="contacts"'
#: Prefix of a verified credential's key in the ``user_cache`` store.
KEY_PREFIX = "app-password:"
#: Longest user name or password looked at (an email is at most 254 characters).
_MAX_FIELD = 256
#: Characters a person may add or change when typing a secret: group dashes, spaces, case.
_TYPING = str.maketrans("", "", "- ")


# ---------------------------------------------------------------------------- API bodies


class AppPasswordCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of a new app password: a name saying where it is used."""

    name: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=50,
            pattern=SINGLE_LINE,
            description="Where it is used, e.g. `Phone` (1-50 characters, not only spaces).",
            examples=["Phone"],
        ),
    ]

    def __post_init__(self) -> None:
        """Trim the name; a blank one names nothing."""
        self.name = self.name.strip()
        if not self.name:
            raise field_error("name", "must not be blank")


class AppPasswordRead(msgspec.Struct, kw_only=True):
    """An app password as listed: never its secret."""

    id: UUID
    name: str
    created_at: datetime
    last_used_at: Annotated[
        datetime | None,
        msgspec.Meta(description="When it last opened a request (to the minute); `null`: never used."),
    ]


class AppPasswordCreated(msgspec.Struct, kw_only=True):
    """A new app password, with its secret: the only time the secret is shown."""

    id: UUID
    name: str
    password: Annotated[
        str,
        msgspec.Meta(
            description="The secret (160 random bits), shown only in this answer. Dashes, spaces and "
            "letter case are ignored when it is typed back.",
            examples=["k3mz-q7dn-x2pa-5wje-r4tb-hc6y-vf9s-ul2g"],
        ),
    ]
    created_at: datetime


# ---------------------------------------------------------------------------- errors


class AppPasswordNotFoundError(AppError):
    """No app password of this user has that id (another user's included): ``404``."""

    status_code = HTTP_404_NOT_FOUND
    detail = "No such app password"


class TooManyAppPasswordsError(AppError):
    """The account already holds :data:`MAX_PER_USER` app passwords: ``409``."""

    status_code = HTTP_409_CONFLICT
    detail = f"An account holds at most {MAX_PER_USER} app passwords: revoke one you no longer use"


class BasicAuthError(AppError):
    """Missing or wrong HTTP Basic credentials: ``401`` with the Basic challenge.

    One answer for every reason (unknown email, wrong or revoked app password, the account
    password, an unconfirmed account), so the answer tells nothing about the account.
    """

    status_code = HTTP_401_UNAUTHORIZED
    detail = "Sign in with the account's email and an app password"

    def __init__(self) -> None:
        """Carry the challenge header."""
        super().__init__(headers={"WWW-Authenticate": CHALLENGE})


# ---------------------------------------------------------------------------- secrets


def new_secret() -> str:
    """A new secret: 160 bits from :mod:`secrets`, as 32 base32 letters in groups of four."""
    letters = base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode().lower()
    return "-".join(letters[i : i + 4] for i in range(0, len(letters), 4))


def secret_digest(secret: str) -> str:
    """The stored form of a secret: SHA-256 (hex) of it without dashes, spaces and case.

    One fast hash is enough: the secret is random and long (see the module docstring).
    """
    return hashlib.sha256(secret.lower().translate(_TYPING).encode()).hexdigest()


def cache_key(digest: str) -> str:
    """The ``user_cache`` key of the verified credential with this digest."""
    return KEY_PREFIX + digest


# ---------------------------------------------------------------------------- storage


class AppPasswordRepository(SQLAlchemyAsyncRepository[AppPassword]):
    """The ``app_passwords`` table."""

    model_type = AppPassword

    async def of_user(self, user_id: UUID) -> list[AppPassword]:
        """The user's app passwords, newest first."""
        rows = await self.session.scalars(
            select(AppPassword)
            .where(AppPassword.user_id == user_id)
            .order_by(AppPassword.created_at.desc(), AppPassword.id.desc())
        )
        return list(rows)

    async def count_of_user(self, user_id: UUID) -> int:
        """How many app passwords the user holds, their row locked first (PostgreSQL).

        The lock queues two creations for one user, so that the second one counts the first.
        """
        await self.session.execute(select(User.id).where(User.id == user_id).with_for_update())
        count = await self.session.scalar(
            select(func.count()).select_from(AppPassword).where(AppPassword.user_id == user_id)
        )
        return int(count or 0)

    async def by_digest(self, digest: str) -> AppPassword | None:
        """The app password whose secret has this digest."""
        return await self.session.scalar(select(AppPassword).where(AppPassword.secret_hash == digest))

    async def still_there(self, app_password_id: UUID) -> bool:
        """Whether the app password is still there."""
        found = await self.session.scalar(select(AppPassword.id).where(AppPassword.id == app_password_id))
        return found is not None

    async def remove(self, user_id: UUID, app_password_id: UUID) -> str | None:
        """Delete one of the user's app passwords.

        Returns:
            The digest of its secret, or ``None`` if the user has no such app password.
        """
        digest = await self.session.scalar(
            select(AppPassword.secret_hash).where(
                AppPassword.id == app_password_id, AppPassword.user_id == user_id
            )
        )
        if digest is None:
            return None
        await self.session.execute(
            delete(AppPassword).where(AppPassword.id == app_password_id, AppPassword.user_id == user_id)
        )
        return digest

    async def remove_all(self, user_id: UUID) -> list[str]:
        """Delete every app password of the user; the digests of their secrets."""
        digests = list(
            await self.session.scalars(select(AppPassword.secret_hash).where(AppPassword.user_id == user_id))
        )
        if digests:
            await self.session.execute(delete(AppPassword).where(AppPassword.user_id == user_id))
        return digests

    async def touch(self, app_password_id: UUID, now: datetime) -> None:
        """Set ``last_used_at`` to ``now`` unless it was set less than :data:`TOUCH_EVERY` ago.

        The condition keeps the column to one write a minute across every process.
        """
        await self.session.execute(
            update(AppPassword)
            .where(
                AppPassword.id == app_password_id,
                or_(
                    AppPassword.last_used_at.is_(None),
                    AppPassword.last_used_at <= now - timedelta(seconds=TOUCH_EVERY),
                ),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )


class AppPasswordService:
    """A user's app passwords: create, list, revoke.

    Args:
        session: The unit of work's database session.
        store: The ``user_cache`` store holding verified credentials.
    """

    def __init__(self, session: AsyncSession, store: Store) -> None:
        """Work on ``session``; drop revoked credentials from ``store``."""
        self.session = session
        self.store = store
        self.repository = AppPasswordRepository(session=session)

    async def create(self, user_id: UUID, name: str) -> AppPasswordCreated:
        """Make an app password and commit.

        Args:
            user_id: Its owner.
            name: Where it is used.

        Returns:
            It, with the secret (never stored as such).

        Raises:
            TooManyAppPasswordsError: The user holds :data:`MAX_PER_USER` already.
        """
        if await self.repository.count_of_user(user_id) >= MAX_PER_USER:
            await self.session.rollback()
            raise TooManyAppPasswordsError
        secret = new_secret()
        row = await self.repository.add(
            AppPassword(user_id=user_id, name=name, secret_hash=secret_digest(secret))
        )
        await self.session.commit()
        audit("app_password_created", user_id, app_password_id=row.id)
        return AppPasswordCreated(id=row.id, name=row.name, password=secret, created_at=row.created_at)

    async def list_of(self, user_id: UUID) -> list[AppPasswordRead]:
        """The user's app passwords, newest first, without their secrets."""
        rows = await self.repository.of_user(user_id)
        return [
            AppPasswordRead(id=r.id, name=r.name, created_at=r.created_at, last_used_at=r.last_used_at)
            for r in rows
        ]

    async def revoke(self, user_id: UUID, app_password_id: UUID) -> None:
        """Delete one of the user's app passwords; refused at once by every process afterwards.

        Raises:
            AppPasswordNotFoundError: The user has no app password with that id.
        """
        digest = await self.repository.remove(user_id, app_password_id)
        if digest is None:
            await self.session.rollback()
            raise AppPasswordNotFoundError
        await self.session.commit()
        await invalidate_user(self.store, cache_key(digest))
        audit("app_password_revoked", user_id, app_password_id=app_password_id)


async def revoke_all_app_passwords(session: AsyncSession, user_id: UUID) -> int:
    """Delete every app password of a user, in the caller's transaction (a password change or reset).

    The cached credentials are dropped once the transaction is committed through
    :meth:`app.users.service.UserService.save` (:func:`app.users.current.drop_after_commit`).

    Args:
        session: The unit of work's database session; the caller commits.
        user_id: The user.

    Returns:
        How many were revoked.
    """
    digests = await AppPasswordRepository(session=session).remove_all(user_id)
    if digests:
        drop_after_commit(session, *(cache_key(d) for d in digests))
        audit("app_password_revoked", user_id, count=len(digests), reason="password_changed")
    return len(digests)


# ---------------------------------------------------------------------------- HTTP Basic


class _Verified(msgspec.Struct, array_like=True, frozen=True):
    """A verified credential as cached: which app password, whose."""

    id: UUID
    user_id: UUID


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Verified).decode

#: Monotonic time each app password's ``last_used_at`` was last written by this process.
_touched: dict[UUID, float] = {}
_MAX_TOUCHED = 10_000


def basic_credentials(scope: Scope) -> tuple[str, str] | None:
    """The user name and password of the request's ``Authorization: Basic`` header.

    Returns:
        ``None`` when the header is missing or is another scheme.

    Raises:
        BasicAuthError: A Basic header that does not decode to ``user:password`` (UTF-8).
    """
    value = next((v for k, v in scope["headers"] if k == b"authorization"), None)
    if value is None:
        return None
    scheme, _, encoded = value.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BasicAuthError from None
    username, colon, password = decoded.partition(":")
    if not colon or not username or not password or max(len(username), len(password)) > _MAX_FIELD:
        raise BasicAuthError
    return username, password


def _names_user(username: str, user: CurrentUser) -> bool:
    """Whether the Basic user name is the user's email (compared as login compares it)."""
    if username.strip(" ").lower() == user.email:
        return True
    try:
        return normalize_email(username) == user.email
    except ValueError:
        return False


def _user_ok(username: str, user: CurrentUser | None) -> bool:
    return user is not None and user.confirmed and _names_user(username, user)


async def authenticate_basic(app: Litestar, scope: Scope) -> UUID:
    """The user of the request's HTTP Basic credentials: the account's email and an app password.

    A credential verified before is answered from the ``user_cache`` store (no query); any
    other is counted against the login rate limit, then read from the database. An
    unconfirmed account is refused like a wrong password (login would say ``403``; a Basic
    client can only show "wrong credentials" anyway, and the answer must not tell whether the
    account exists).

    Args:
        app: The application (its stores, database and settings).
        scope: The request's ASGI scope.

    Returns:
        The user's id.

    Raises:
        BasicAuthError: No, malformed or wrong credentials (``401``, ``WWW-Authenticate: Basic``).
        TooManyAttempts: Too many cold verifications from this client (``429``, ``Retry-After``).
    """
    credentials = basic_credentials(scope)
    if credentials is None:
        raise BasicAuthError
    username, password = credentials
    digest = secret_digest(password)
    key = cache_key(digest)
    settings: Settings = app.state.settings
    store = app.stores.get(cache.USER_CACHE)
    db_config = app.state.db_config

    cached = await _cached(store, key)
    if cached is not None:
        user = await get_current_user(store, db_config, cached.user_id, settings.user_cache_ttl)
        if _user_ok(username, user):
            await _touch(app, cached.id)
            return cached.user_id
        if user is None:
            await invalidate_user(store, key)  # an erased account: its credential is dead

    await count_attempt(app, BASIC, scope)
    async with db_config.get_session() as session:
        row = await AppPasswordRepository(session=session).by_digest(digest)
        await session.commit()  # a new transaction for the check below (SQLite keeps its snapshot)
    if row is None:
        audit("app_password_failed", None, reason="unknown")
        raise BasicAuthError
    user = await get_current_user(store, db_config, row.user_id, settings.user_cache_ttl)
    if not _user_ok(username, user):
        reason = "unconfirmed" if user is not None and not user.confirmed else "wrong user name"
        audit("app_password_failed", row.user_id, app_password_id=row.id, reason=reason)
        raise BasicAuthError
    await _touch(app, row.id)
    await _remember(store, key, _Verified(id=row.id, user_id=row.user_id), settings.user_cache_ttl)
    async with db_config.get_session() as session:
        still_there = await AppPasswordRepository(session=session).still_there(row.id)
    if not still_there:
        # Revoked while this was verified: its drop may have come before the entry above.
        await invalidate_user(store, key)
        raise BasicAuthError
    return row.user_id


async def _cached(store: Store, key: str) -> _Verified | None:
    """The verified credential under ``key``, if cached (a store outage reads as a miss)."""
    try:
        raw = await store.get(key)
    except Exception as exc:
        logger.warning("app password cache unavailable, reading the database (%s)", type(exc).__name__)
        return None
    if raw is None:
        return None
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        return None


async def _remember(store: Store, key: str, verified: _Verified, ttl: int) -> None:
    """Cache a verified credential (best effort: an outage only costs the next request a query)."""
    try:
        await store.set(key, _encode(verified), expires_in=ttl)
    except Exception as exc:
        logger.warning("app password cache: could not store (%s)", type(exc).__name__)


async def _touch(app: Litestar, app_password_id: UUID) -> None:
    """Write ``last_used_at`` if this process has not written it for :data:`TOUCH_EVERY` seconds."""
    now = time.monotonic()
    last = _touched.get(app_password_id)
    if last is not None and now - last < TOUCH_EVERY:
        return
    if len(_touched) >= _MAX_TOUCHED:
        _touched.clear()
    _touched[app_password_id] = now  # before the write: concurrent requests do not write too
    try:
        async with app.state.db_config.get_session() as session:
            await AppPasswordRepository(session=session).touch(app_password_id, datetime.now(UTC))
            await session.commit()
    except Exception as exc:
        # A usage stamp must not fail the request it stamps.
        logger.warning("app password: could not record its use (%s)", type(exc).__name__)
