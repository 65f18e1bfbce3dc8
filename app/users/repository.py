"""Queries on users and their sessions. Repositories know SQL, never HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import delete, func, or_, select, update

from app.input import login_key
from app.users.models import User, UserSession

if TYPE_CHECKING:
    from uuid import UUID

    from sqlalchemy.ext.asyncio import AsyncSession


#: Offsets beyond this match nothing (and would overflow a 64-bit SQL integer).
MAX_OFFSET = 2**62


class UserRepository(SQLAlchemyAsyncRepository[User]):
    """The ``users`` table."""

    model_type = User

    async def get_by_login(self, login: str) -> User | None:
        """The user whose email or username is ``login``, compared as registration stored them.

        ``login`` goes through :func:`app.input.login_key` (the registration rules): a value no
        account could have been registered with matches nothing, without a query. Usernames
        cannot contain ``@``, so one value never matches two users.

        Args:
            login: An email address or a username.

        Returns:
            The user, or ``None``.
        """
        key = login_key(login)
        if key is None:
            return None
        kind, value = key
        # Emails are stored normalised; usernames keep their case and match through lower().
        condition = User.email == value if kind == "email" else func.lower(User.username) == value
        return await self.session.scalar(select(User).where(condition))

    async def get_by_email(self, email: str) -> User | None:
        """The user with ``email`` (case-insensitive), or ``None``."""
        return await self.session.scalar(select(User).where(User.email == email.strip().lower()))

    async def taken(self, email: str, username: str) -> tuple[bool, bool]:
        """Whether ``email`` and ``username`` are already used (case-insensitive).

        Args:
            email: A lower-cased email address.
            username: A username.

        Returns:
            ``(email_taken, username_taken)``.
        """
        rows = await self.session.execute(
            select(User.email, func.lower(User.username)).where(
                or_(User.email == email, func.lower(User.username) == username.lower())
            )
        )
        found = rows.all()
        return (
            any(row[0] == email for row in found),
            any(row[1] == username.lower() for row in found),
        )

    async def demote_admin(self, user_id: UUID, role: str) -> bool:
        """Give an admin another role unless they are the last admin, atomically.

        PostgreSQL: the admins' rows are locked first, so two admins demoting each other at
        once queue, and the second one's count sees the first one's change. SQLite ignores
        ``FOR UPDATE``, but its single writer runs the conditional ``UPDATE`` (check and write
        in one statement) alone.

        Args:
            user_id: The admin.
            role: The new role.

        Returns:
            Whether the role changed (``False``: they are the last admin).
        """
        await self.session.execute(select(User.id).where(User.role == "admin").with_for_update())
        admins = select(func.count()).select_from(User).where(User.role == "admin").scalar_subquery()
        result = await self.session.execute(
            update(User)
            .where(User.id == user_id, User.role == "admin", admins > 1)
            .values(role=role, updated_at=datetime.now(UTC))
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    async def delete_unless_last_admin(self, user_id: UUID) -> bool:
        """Delete a user (the database cascades to every row that refers to it), unless they are the last admin.

        Locks the admins' rows first, as :meth:`demote_admin` does, so two admins deleting each
        other at once queue and the second one's count sees the first deletion.

        Args:
            user_id: The user.

        Returns:
            Whether the row was deleted (``False``: they are the last admin, or gone already).
        """
        await self.session.execute(select(User.id).where(User.role == "admin").with_for_update())
        admins = select(func.count()).select_from(User).where(User.role == "admin").scalar_subquery()
        result = await self.session.execute(
            delete(User)
            .where(User.id == user_id, or_(User.role != "admin", admins > 1))
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


class UserSessionRepository(SQLAlchemyAsyncRepository[UserSession]):
    """The ``user_sessions`` table: one row per login (refresh-token family)."""

    model_type = UserSession

    async def rotate(
        self, session_id: UUID, old_hash: str, new_hash: str, expires_at: datetime, ip: str | None = None
    ) -> bool:
        """Replace the refresh-token hash of a live session, only if it still is ``old_hash``.

        The condition makes concurrent refreshes with one token safe: the database lets one
        ``UPDATE`` match, every other one sees no row.

        Args:
            session_id: The session.
            old_hash: The hash the caller presented.
            new_hash: The hash of the new refresh token.
            expires_at: The new expiry of the session.
            ip: The client's network now (kept as it was when ``None``).

        Returns:
            Whether this call rotated the session.
        """
        now = datetime.now(UTC)
        values: dict[str, object] = {
            "refresh_token_hash": new_hash,
            "expires_at": expires_at,
            "updated_at": now,
            "last_used_at": now,
        }
        if ip is not None:
            values["ip"] = ip
        result = await self.session.execute(
            update(UserSession)
            .where(
                UserSession.id == session_id,
                UserSession.refresh_token_hash == old_hash,
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > now,
            )
            .values(values)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined]

    async def live(self, user_id: UUID) -> list[UserSession]:
        """The live sessions of a user (not ended, not expired), newest first."""
        now = datetime.now(UTC)
        rows = await self.session.scalars(
            select(UserSession)
            .where(
                UserSession.user_id == user_id, UserSession.revoked_at.is_(None), UserSession.expires_at > now
            )
            .order_by(UserSession.created_at.desc(), UserSession.id.desc())
        )
        return list(rows)

    async def touch(self, session_id: UUID, now: datetime, every: float) -> None:
        """Set a session's ``last_used_at`` to ``now`` unless it was set less than ``every`` seconds ago.

        ``updated_at`` is left alone: using a session does not change it.
        """
        await self.session.execute(
            update(UserSession)
            .where(
                UserSession.id == session_id,
                or_(
                    UserSession.last_used_at.is_(None),
                    UserSession.last_used_at < now - timedelta(seconds=every),
                ),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )

    async def revoke(
        self,
        user_id: UUID,
        *,
        only: UUID | None = None,
        keep: UUID | None = None,
        refresh_hash: str | None = None,
    ) -> int:
        """End live sessions of a user.

        Args:
            user_id: The owner of the sessions.
            only: End just this session.
            keep: End every session but this one.
            refresh_hash: End it only while this is its current refresh-token hash (a rotated
                token of the family no longer matches).

        Returns:
            How many sessions were ended.
        """
        now = datetime.now(UTC)
        statement = (
            update(UserSession)
            .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
            .values(revoked_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if only is not None:
            statement = statement.where(UserSession.id == only)
        if keep is not None:
            statement = statement.where(UserSession.id != keep)
        if refresh_hash is not None:
            statement = statement.where(UserSession.refresh_token_hash == refresh_hash)
        result = await self.session.execute(statement)
        return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_finished_sessions(session: AsyncSession, now: datetime) -> int:
    """Delete the sessions that can never be used again: expired at ``now``, or ended (revoked).

    A housekeeping task of the job runner. A deleted session's refresh token is refused
    exactly as a revoked one's was (no row, no session).

    Args:
        session: The runner's database session (the caller commits).
        now: The reference time.

    Returns:
        How many rows were deleted.
    """
    result = await session.execute(
        delete(UserSession).where(or_(UserSession.expires_at < now, UserSession.revoked_at.is_not(None)))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
