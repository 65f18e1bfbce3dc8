"""JWT bearer authentication; the user of a token is found by a loader the app hands in.

The middleware is Litestar's own (:class:`OAuth2PasswordBearerAuth`, so that the API UI's
"Authorize" button can log in with the password flow). This module checks the token (its
signature, claims and purpose); who the user is, and whether the token's session is still
live, is the :class:`UserLoader`'s answer (``app.users.current.load_request_user``), given to
:func:`make_auth` when the app is built. Routes reachable without a token say so on their
handler (``exclude_from_auth=True``).
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from uuid import UUID

from litestar.exceptions import NotAuthorizedException
from litestar.security.jwt import OAuth2PasswordBearerAuth, Token
from litestar.security.jwt.middleware import JWTCookieAuthenticationMiddleware

from app.security.tokens import ALGORITHM, AUDIENCE, ISSUER, Purpose

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.connection import ASGIConnection
    from litestar.middleware.authentication import AuthenticationResult

    from app.config import Settings


class UserLoader(Protocol):
    """Finds the user of a verified access token (``None``: no such user, or the session is over)."""

    async def __call__(self, app: Litestar, user_id: UUID, key: str, session_id: str | None) -> Any | None:
        """The user ``user_id`` (``key`` is its text form) if ``session_id`` is one of their live sessions."""


def user_handler(load_user: UserLoader) -> Any:
    """Litestar's ``retrieve_user_handler``: an access token of a live session, through ``load_user``.

    Args:
        load_user: The domain's loader of the token's user.

    Returns:
        The handler for :class:`OAuth2PasswordBearerAuth`.
    """

    async def retrieve_user_handler(
        token: VerifiedToken, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> Any:
        # The signature, algorithm, exp, aud and iss are checked already; Litestar answers 401 on None.
        if token.extras.get("pur") != Purpose.ACCESS:
            return None
        subject = token.subject
        if subject is None:
            return None
        user_id, key = subject
        return await load_user(connection.app, user_id, key, token.extras.get("sid"))

    return retrieve_user_handler


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


def make_auth(settings: Settings, load_user: UserLoader) -> OAuth2PasswordBearerAuth[Any, Token]:
    """Build the bearer-token authentication for the app.

    Args:
        settings: The application settings (secret key, token lifetime).
        load_user: Finds the user of a verified access token.

    Returns:
        The auth config; its ``on_app_init`` is registered in :func:`app.main.create_app`.
    """
    return OAuth2PasswordBearerAuth[Any, Token](
        authentication_middleware_class=BearerAuthenticationMiddleware,
        token_cls=VerifiedToken,
        token_url="/api/auth/login",  # noqa: S106 - a URL
        token_secret=settings.secret_key,
        retrieve_user_handler=user_handler(load_user),
        algorithm=ALGORITHM,
        accepted_audiences=[AUDIENCE],
        accepted_issuers=[ISSUER],
        require_claims=["exp", "nbf", "sub", "pur", "sid", "aud", "iss"],
        strict_audience=True,
        default_token_expiration=timedelta(minutes=settings.access_token_minutes),
        description="Log in with your email (or username) and password; send the access token as Bearer.",
    )
