"""The ``users``, ``user_sessions`` and ``app_passwords`` tables."""

from __future__ import annotations

import uuid
from datetime import datetime

from advanced_alchemy.base import UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, Index, String, false, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

#: Roles a user can hold.
ROLES = ("user", "admin")


class User(UUIDv7AuditBase):
    """An account. Emails are stored lower-cased; usernames are unique case-insensitively."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    confirmed: Mapped[bool] = mapped_column(default=False, server_default=false())
    avatar_url: Mapped[str] = mapped_column(String(500))
    #: Bumped by every password change or reset: reset links made before it stop working.
    password_version: Mapped[int] = mapped_column(default=0, server_default="0")

    sessions: Mapped[list[UserSession]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True, lazy="noload"
    )

    __table_args__ = (Index("uq_users_username_lower", func.lower(username), unique=True),)


class UserSession(UUIDv7AuditBase):
    """One login: a refresh-token family. Access tokens name it in their ``sid`` claim.

    Only a hash of the current refresh token is stored; rotation replaces it, so an older
    token of the family no longer matches and its re-use is detected.
    """

    __tablename__ = "user_sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    refresh_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    user: Mapped[User] = relationship(back_populates="sessions", lazy="noload")


class AppPassword(UUIDv7AuditBase):
    """A password for one client that cannot log in with JWTs (a CardDAV address book).

    Only the SHA-256 of the secret is stored: it is 160 random bits, like a refresh token, so
    a fast hash is enough (nobody can guess it back from the digest) and it can be looked up
    by its digest. It works only as HTTP Basic credentials (see :mod:`app.users.app_passwords`).
    """

    __tablename__ = "app_passwords"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(50))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: When it last opened a request; written at most once a minute.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
