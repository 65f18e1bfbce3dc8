"""User DTOs (msgspec Structs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from app.input import NO_CONTROLS
from app.security.password_policy import MAX_LENGTH

Role = Literal["user", "admin"]


class UserRead(msgspec.Struct, kw_only=True):
    """A user as the API shows it (never a password or hash)."""

    id: UUID
    username: str
    email: str
    role: Role
    confirmed: bool
    avatar_url: str
    created_at: datetime


class UserPage(msgspec.Struct, kw_only=True):
    """One page of users."""

    items: list[UserRead]
    total: Annotated[int, msgspec.Meta(description="Users in all pages.")]
    limit: int
    offset: int


class CurrentUser(UserRead, kw_only=True, frozen=True):
    """The authenticated user as cached in the store.

    It carries the ids of the user's live sessions, so that an access token whose session
    was ended (logout, password change) is refused without touching the database.
    """

    session_ids: frozenset[str] = frozenset()

    def public(self) -> UserRead:
        """The API view of this user."""
        return UserRead(
            id=self.id,
            username=self.username,
            email=self.email,
            role=self.role,
            confirmed=self.confirmed,
            avatar_url=self.avatar_url,
            created_at=self.created_at,
        )


class RoleUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of a role change."""

    role: Role


class SessionRead(msgspec.Struct, kw_only=True):
    """A live session (one login) as its owner sees it."""

    id: UUID
    created_at: Annotated[datetime, msgspec.Meta(description="When the login happened.")]
    last_used_at: Annotated[
        datetime | None,
        msgspec.Meta(description="Last login, refresh or use (use is recorded at most once a minute)."),
    ]
    user_agent: Annotated[
        str | None, msgspec.Meta(description="The client's User-Agent, cut to 200 characters.")
    ]
    ip: Annotated[
        str | None,
        msgspec.Meta(
            description="The client's network, never its full address: IPv4 /24 (`203.0.113.0/24`), "
            "IPv6 /48 (`2001:db8:1234::/48`)."
        ),
    ]
    current: Annotated[bool, msgspec.Meta(description="Whether this is the session of the request's token.")]


class AccountDeletion(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of ``DELETE /api/users/me``: the account's password, checked again."""

    password: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LENGTH), NO_CONTROLS]
