"""Request and response bodies of the auth routes (msgspec Structs).

Request bodies reject unknown fields, so a client trying to send ``role`` or ``confirmed``
gets a ``400`` instead of a silently ignored field.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from app.input import EMAIL_MAX, NO_CONTROLS, EmailText, Text, Username, email_field
from app.security.password_policy import MAX_LENGTH, MIN_LENGTH

Email = EmailText
Password = Annotated[
    str,
    msgspec.Meta(
        min_length=MIN_LENGTH,
        max_length=MAX_LENGTH,
        description="8 to 128 characters, compared in full; common passwords are refused.",
    ),
    NO_CONTROLS,
]
#: A password being checked (login, current password): any length the policy ever allowed.
PasswordText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LENGTH), NO_CONTROLS]
#: A token as it travels in a body (generous bound; real ones are a few hundred bytes).
TokenText = Annotated[str, msgspec.Meta(min_length=1, max_length=4096), NO_CONTROLS]


class Register(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new account. The role (``user``) and the confirmed flag are never set by the client."""

    username: Username
    email: Email
    password: Password

    def __post_init__(self) -> None:
        """Store the email in its one normalised form (see :func:`app.input.normalize_email`)."""
        self.email = email_field(self.email)


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

    def __post_init__(self) -> None:
        """Look the address up in its one normalised form."""
        self.email = email_field(self.email)


class NewPassword(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The new password of a reset (JSON or form); ``password_confirm`` is checked only when sent.

    The HTML form sends it; a JSON client or a script posting the form may send ``password`` alone.
    """

    password: Password
    password_confirm: PasswordText | msgspec.UnsetType = msgspec.UNSET


class PasswordChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A password change by a logged-in user."""

    current_password: PasswordText
    new_password: Password


class EmailChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An email change by a logged-in user: the new address and the account password."""

    new_email: Email
    password: PasswordText

    def __post_init__(self) -> None:
        """Keep the new address in its one normalised form."""
        self.new_email = email_field(self.new_email, "new_email")


class LoginForm(msgspec.Struct, kw_only=True):
    """The OAuth2 password grant form. ``username`` is the email or the username.

    The other OAuth2 fields are accepted (clients such as the API UI send them) and ignored.
    """

    username: Annotated[str, msgspec.Meta(min_length=1, max_length=EMAIL_MAX), NO_CONTROLS]
    password: PasswordText
    grant_type: Text | None = None
    scope: Text | None = None
    client_id: Text | None = None
    client_secret: Text | None = None
