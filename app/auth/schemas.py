"""Request and response bodies of the auth routes (msgspec Structs).

Request bodies reject unknown fields, so a client trying to send ``role`` or ``confirmed``
gets a ``400`` instead of a silently ignored field.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from app.security.password_policy import MAX_LENGTH, MIN_LENGTH

#: A pragmatic address check (the HTML5 one, with a dot in the domain and a 64-char local part).
EMAIL_PATTERN = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
#: Letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit; never ``@``, so a
#: login value is unambiguously an email or a username.
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

Email = Annotated[str, msgspec.Meta(max_length=254, pattern=EMAIL_PATTERN, examples=["ada@example.com"])]
Username = Annotated[
    str, msgspec.Meta(min_length=3, max_length=50, pattern=USERNAME_PATTERN, examples=["ada"])
]
Password = Annotated[
    str,
    msgspec.Meta(
        min_length=MIN_LENGTH,
        max_length=MAX_LENGTH,
        description="8 to 128 characters, compared in full; common passwords are refused.",
    ),
]
#: A token as it travels in a body (generous bound; real ones are a few hundred bytes).
TokenText = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class Register(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new account. The role (``user``) and the confirmed flag are never set by the client."""

    username: Username
    email: Email
    password: Password


class Tokens(msgspec.Struct, kw_only=True):
    """The answer of login and refresh."""

    access_token: str
    refresh_token: str
    expires_in: Annotated[int, msgspec.Meta(description="Seconds the access token lives.")]
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type


class Message(msgspec.Struct, kw_only=True):
    """A human-readable outcome."""

    message: str


class RefreshRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A refresh token (to rotate, or to end its session)."""

    refresh_token: TokenText


class EmailRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An email address (re-send confirmation, start a password reset)."""

    email: Email


class NewPassword(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The new password of a reset. The HTML form also sends ``password_confirm``."""

    password: Password
    password_confirm: str | msgspec.UnsetType = msgspec.UNSET


class PasswordChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A password change by a logged-in user."""

    current_password: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LENGTH)]
    new_password: Password


class LoginForm(msgspec.Struct, kw_only=True):
    """The OAuth2 password grant form. ``username`` is the email or the username.

    The other OAuth2 fields are accepted (clients such as the API UI send them) and ignored.
    """

    username: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LENGTH)]
    grant_type: str | None = None
    scope: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
