"""JWT bearer authentication with the current user read from the store.

The middleware is Litestar's own (:class:`OAuth2PasswordBearerAuth`, so that the API UI's
"Authorize" button can log in with the password flow). Its user lookup reads a
msgspec-encoded :class:`CurrentUser` from the ``user_cache`` store; on a miss or a store
error it loads the user and their live sessions from the database and refills the store.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

import msgspec
from litestar.exceptions import NotAuthorizedException
from litestar.security.jwt import OAuth2PasswordBearerAuth, Token
from litestar.security.jwt.middleware import JWTCookieAuthenticationMiddleware
from sqlalchemy import select

from app import cache
from app.security.tokens import ALGORITHM, AUDIENCE, ISSUER, Purpose
from app.users.models import User, UserSession
from app.users.schemas import CurrentUser

if TYPE_CHECKING:
    from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
    from litestar.connection import ASGIConnection
    from litestar.datastructures import State
    from litestar.middleware.authentication import AuthenticationResult
    from litestar.stores.base import Store
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.config import Settings

logger = logging.getLogger(__name__)

_encode = msgspec.msgpack.Encoder().encode
_decoder = msgspec.msgpack.Decoder(CurrentUser)

#: Paths reachable without a token.
PUBLIC_PATHS = [
    "^/api/auth/(register|login|refresh_token|confirmed_email|request_email|update_password|confirm_update_password)",
    "^/api/healthchecker",
    "^/schema",
    "^/media",
]


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
    """Drop a user's cached snapshot; called by every code path that changes a user.

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


async def retrieve_user_handler(
    token: VerifiedToken, connection: ASGIConnection[Any, Any, Any, Any]
) -> CurrentUser | None:
    """Litestar's user lookup: an access token of a live session of an existing user.

    Args:
        token: The verified JWT (signature, algorithm, ``exp``, ``aud``, ``iss`` already checked).
        connection: The current connection.

    Returns:
        The current user, or ``None`` (Litestar answers ``401``).
    """
    if token.extras.get("pur") != Purpose.ACCESS:
        return None
    subject = token.subject
    if subject is None:
        return None
    state: State = connection.app.state
    settings: Settings = state.settings
    store = connection.app.stores.get(cache.USER_CACHE)
    user_id, key = subject
    user = await get_current_user(store, state.db_config, user_id, settings.user_cache_ttl, key)
    sid = token.extras.get("sid")
    if user is not None and sid not in user.session_ids:
        # Logins do not drop the cached snapshot, so it may predate this token's session:
        # ask the database. Ended sessions are dropped from the cache when they end.
        user = await get_current_user(
            store, state.db_config, user_id, settings.user_cache_ttl, key, fresh=True
        )
    if user is None or sid not in user.session_ids:
        return None
    return user


class VerifiedToken(Token):
    """Litestar's JWT token, remembering tokens it has already verified.

    Verifying an HS256 signature and its claims is a large share of a cached request's cost,
    and a client sends the same access token many times. A token string seen and verified
    before is taken from a bounded in-process map; its expiry and ``nbf`` are still checked on
    every use. A forged or altered token is a different string, so it is always fully verified;
    ended sessions are refused later by the session check, as for any token.
    """

    _verified: ClassVar[OrderedDict[tuple[str, str], VerifiedToken]] = OrderedDict()
    _max_verified: ClassVar[int] = 10_000

    @functools.cached_property
    def subject(self) -> tuple[UUID, str] | None:
        """The subject as a user id and its canonical text (``None`` if it is not a user id).

        Parsed once per token: a remembered token is used for many requests.
        """
        try:
            user_id = UUID(self.sub)
        except ValueError:
            return None
        return user_id, str(user_id)

    @classmethod
    def decode(cls, encoded_token: str, secret: str, *args: Any, **kwargs: Any) -> VerifiedToken:  # type: ignore[override]
        """Return the verified token, from the map when this exact string was verified before."""
        key = (encoded_token, secret)
        token = cls._verified.get(key)
        now = time.time()
        if token is not None and token.exp.timestamp() > now and token.extras.get("nbf", 0) <= now:
            return token
        token = super().decode(encoded_token, secret, *args, **kwargs)
        cls._verified[key] = token
        if len(cls._verified) > cls._max_verified:
            cls._verified.popitem(last=False)
        return token


class BearerAuthenticationMiddleware(JWTCookieAuthenticationMiddleware):
    """Litestar's JWT middleware reading the bearer token from the ``Authorization`` header only.

    Cookies are never read: a credential the browser sends on its own would open the API to
    cross-site request forgery. The header is found in the raw ASGI headers, without
    building the request's header map for it.
    """

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        """The user of the request's bearer token.

        Args:
            connection: The current connection.

        Returns:
            The authenticated user and token.

        Raises:
            NotAuthorizedException: No token, or one that is invalid or names no live session.
        """
        wanted = self.auth_header.lower().encode("latin-1")
        credentials = None
        for name, value in connection.scope["headers"]:
            if name == wanted:
                credentials = value.decode("latin-1")
                break
        if credentials is None:
            raise NotAuthorizedException("No JWT token found in request header")
        return await self.authenticate_token(encoded_token=bearer_token(credentials), connection=connection)


def bearer_token(credentials: str) -> str:
    """The token of ``Bearer <token>`` credentials; any other scheme is refused.

    The scheme name is case-insensitive (RFC 7235, section 2.1), so ``bearer`` and ``BEARER``
    count; ``Basic`` and every other scheme do not, whatever follows them: an access token
    sent as Basic credentials (as ``/dav/`` takes) is not a bearer token.

    Args:
        credentials: The value of the ``Authorization`` header.

    Returns:
        The token.

    Raises:
        NotAuthorizedException: Another scheme, or no token after the scheme.
    """
    scheme, _, token = credentials.strip(" ").partition(" ")
    if scheme.lower() != "bearer":
        raise NotAuthorizedException("Send the access token as 'Authorization: Bearer <token>'")
    token = token.strip(" ")
    if not token:
        raise NotAuthorizedException("No JWT token found in request header")
    return token


def make_auth(settings: Settings) -> OAuth2PasswordBearerAuth[CurrentUser, Token]:
    """Build the bearer-token authentication for the app.

    Args:
        settings: The application settings (secret key, token lifetime).

    Returns:
        The auth config; its ``on_app_init`` is registered in :func:`app.main.create_app`.
    """
    return OAuth2PasswordBearerAuth[CurrentUser, Token](
        authentication_middleware_class=BearerAuthenticationMiddleware,
        token_cls=VerifiedToken,
        token_url="/api/auth/login",  # noqa: S106 - a URL
        token_secret=settings.secret_key,
        retrieve_user_handler=retrieve_user_handler,
        algorithm=ALGORITHM,
        accepted_audiences=[AUDIENCE],
        accepted_issuers=[ISSUER],
        require_claims=["exp", "nbf", "sub", "pur", "sid", "aud", "iss"],
        strict_audience=True,
        default_token_expiration=timedelta(minutes=settings.access_token_minutes),
        exclude=PUBLIC_PATHS,
        description="Log in with your email (or username) and password; send the access token as Bearer.",
    )
