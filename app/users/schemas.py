"""User DTOs (msgspec Structs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

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
