"""Typed, single-purpose JWTs.

Every token carries a ``pur`` claim and is only accepted where that purpose is expected;
the algorithm is allow-listed and ``exp``, ``nbf``, ``aud`` and ``iss`` are always checked.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt
from litestar.status_codes import HTTP_401_UNAUTHORIZED

from app.errors import AppError

#: The only algorithm tokens are signed and accepted with.
ALGORITHM = "HS256"
#: ``aud`` claim of every token.
AUDIENCE = "contacts-api"
#: ``iss`` claim of every token.
ISSUER = "contacts-api"


class Purpose(StrEnum):
    """What a token may be used for."""

    ACCESS = "access"
    REFRESH = "refresh"
    CONFIRM_EMAIL = "confirm_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 - a purpose name, not a secret
    EMAIL_CHANGE = "email_change"


class InvalidToken(AppError):
    """The token is malformed, forged, expired, or made for another purpose: ``401``."""

    status_code = HTTP_401_UNAUTHORIZED
    detail = "Invalid or expired token"


def create_token(
    secret: str, purpose: Purpose, subject: str, ttl: timedelta, **claims: Any
) -> tuple[str, datetime]:
    """Sign a token for ``purpose``.

    Args:
        secret: The signing key.
        purpose: What the token is for.
        subject: The ``sub`` claim (a user id).
        ttl: How long the token lives.
        **claims: Extra claims (``sid``, ``st``...).

    Returns:
        The encoded token and its expiry (the ``exp`` claim, whole seconds).
    """
    payload = token_claims(purpose, subject, ttl, **claims)
    return sign_claims(secret, payload), datetime.fromtimestamp(payload["exp"], UTC)


def token_claims(purpose: Purpose, subject: str, ttl: timedelta, **claims: Any) -> dict[str, Any]:
    """The claims of a new token, signed now by :func:`create_token` or later by :func:`sign_claims`.

    Mails in the outbox keep these rather than the token: without the signing key they are
    no link anyone can use. Times are Unix seconds (JSON), as in the signed token.

    Args:
        purpose: What the token is for.
        subject: The ``sub`` claim (a user id).
        ttl: How long the token lives, from now.
        **claims: Extra claims (``em``, ``st``...).

    Returns:
        The claims.
    """
    now = int(datetime.now(UTC).timestamp())
    return {
        "sub": subject,
        "pur": str(purpose),
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl.total_seconds()),
        "jti": secrets.token_urlsafe(12),
        **claims,
    }


def sign_claims(secret: str, claims: dict[str, Any]) -> str:
    """Sign claims made by :func:`token_claims` into a token.

    Args:
        secret: The signing key.
        claims: The claims.

    Returns:
        The encoded token.
    """
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(secret: str, token: str, purpose: Purpose) -> dict[str, Any]:
    """Verify ``token`` and return its claims if it was made for ``purpose``.

    Args:
        secret: The signing key.
        token: The encoded token.
        purpose: The purpose expected here.

    Returns:
        The verified claims.

    Raises:
        InvalidToken: The token is unusable here, whatever the reason.
    """
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "nbf", "iat", "sub", "pur", "aud", "iss"], "strict_aud": True},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if claims.get("pur") != purpose:
        msg = "token made for another purpose"
        raise InvalidToken(msg)
    return claims


def fingerprint(*parts: object) -> str:
    """A short digest of a user's state, bound into single-use tokens (``st`` claim).

    When the state changes (password changed, email confirmed), the fingerprint changes
    and tokens bound to the old one stop working.

    Args:
        *parts: The pieces of state the token depends on.

    Returns:
        A hex digest.
    """
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def token_hash(token: str) -> str:
    """SHA-256 of a refresh token, the only form in which it is stored."""
    return hashlib.sha256(token.encode()).hexdigest()
