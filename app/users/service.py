"""The rules about users: creation, lookup, login sessions, and every write (which invalidates the cache).

This is the one service for users and the only owner of their tables (``users`` and
``user_sessions``). Every change to a user or to their sessions is written through
:meth:`UserService.save`, which commits and then drops the user's cached snapshot, so the
change is visible on the very next request.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.filters import LimitOffset
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar.status_codes import HTTP_409_CONFLICT
from sqlalchemy.orm.attributes import set_committed_value

from app.errors import AppError
from app.input import normalize_email, normalize_username
from app.security.passwords import hash_password
from app.users.app_passwords import revoke_all_app_passwords
from app.users.current import drop_committed, invalidate_user
from app.users.models import User, UserSession
from app.users.repository import MAX_OFFSET, UserRepository, UserSessionRepository

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    from litestar.stores.base import Store
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.storage.adapters import AvatarStorage
    from app.storage.images import ImageInfo

#: Gravatar image served when the email has no Gravatar of its own.
GRAVATAR_DEFAULT = "identicon"


class UserExistsError(AppError):
    """The email or the username is already used by another account (``409``)."""

    status_code = HTTP_409_CONFLICT

    def __init__(self, field: str) -> None:
        """Name the taken ``field``: ``"email"`` or ``"username"``."""
        super().__init__(f"This {field} is already taken", field=field)


class LastAdminError(AppError):
    """The change would leave the service without an admin (``409``)."""

    status_code = HTTP_409_CONFLICT
    detail = "The last admin cannot be demoted"


def gravatar_url(email: str) -> str:
    """The Gravatar URL of ``email`` (SHA-256 of the trimmed, lower-cased address).

    Args:
        email: An email address.

    Returns:
        An HTTPS URL of the avatar image.
    """
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    return f"https://www.gravatar.com/avatar/{digest}?d={GRAVATAR_DEFAULT}"


class UserService(SQLAlchemyAsyncRepositoryService[User, UserRepository]):
    """Users and their login sessions."""

    #: The repository of the ``users`` table.
    Repo = UserRepository
    repository_type = Repo

    def __init__(
        self, session: AsyncSession, *, user_cache: Store, bcrypt_rounds: int = 12, **kwargs: Any
    ) -> None:
        """Configure the service.

        Args:
            session: The database session of the unit of work.
            user_cache: The ``user_cache`` store whose entries writes invalidate.
            bcrypt_rounds: Cost factor of new password hashes.
            **kwargs: Passed to :class:`SQLAlchemyAsyncRepositoryService`.
        """
        super().__init__(session, **kwargs)
        self.user_cache = user_cache
        self.bcrypt_rounds = bcrypt_rounds
        #: The ``user_sessions`` table, on the same database session.
        self.sessions = UserSessionRepository(session=session)

    # ------------------------------------------------------------------ writes

    async def save(self, *user_ids: UUID) -> None:
        """Commit pending changes and drop the cached snapshot of every user they touch.

        Every write to a user or to their sessions ends here; the cache is invalidated after
        the commit, so a concurrent request cannot re-cache the old row.

        Args:
            *user_ids: The users whose rows or sessions changed.
        """
        await self.repository.session.commit()
        for user_id in user_ids:
            await invalidate_user(self.user_cache, user_id)
        await drop_committed(self.repository.session, self.user_cache)

    async def create_user(self, *, username: str, email: str, password: str, commit: bool = True) -> User:
        """Create an unconfirmed account with the ``user`` role.

        Args:
            username: The username (a valid one: see :func:`app.input.normalize_username`).
            email: The email address (a valid one; stored normalised by :func:`app.input.normalize_email`).
            password: The plain password (already checked against the policy).
            commit: ``False`` leaves the commit (:meth:`save`) to the caller, who adds to the
                same transaction (the confirmation mail).

        Returns:
            The new user.

        Raises:
            UserExistsError: The email or the username is taken (case-insensitively).
        """
        # Already checked by the API's schema or the CLI; applied again here, where both meet,
        # so that the stored form is the one login compares with (app.input.login_key).
        email, username = normalize_email(email), normalize_username(username)
        email_taken, username_taken = await self.repository.taken(email, username)
        if email_taken:
            raise UserExistsError("email")
        if username_taken:
            raise UserExistsError("username")
        user = User(
            username=username,
            email=email,
            password_hash=await hash_password(password, self.bcrypt_rounds),
            role="user",
            confirmed=False,
            avatar_url=gravatar_url(email),
            password_version=0,
        )
        # A concurrent registration of the same name loses on the unique indexes and the
        # repository raises DuplicateKeyError (409 centrally).
        user = await self.repository.add(user)
        if commit:
            await self.save(user.id)
        return user

    async def confirm(self, user: User) -> None:
        """Mark the user's email as confirmed.

        Args:
            user: The user, loaded in this service's session.
        """
        user.confirmed = True
        await self.save(user.id)

    async def set_password(
        self, user: User, password: str, *, keep_session: UUID | None = None, commit: bool = True
    ) -> None:
        """Replace the password, end sessions, revoke every app password and kill outstanding reset links.

        Args:
            user: The user, loaded in this service's session.
            password: The new plain password (already checked against the policy).
            keep_session: The session that made the change, kept alive; ``None`` ends them all.
            commit: ``False`` leaves the commit (:meth:`save`) to the caller, who adds to the
                same transaction (the "password changed" mail).
        """
        user.password_hash = await hash_password(password, self.bcrypt_rounds)
        user.password_version += 1  # reset tokens carry a fingerprint of the old state
        await self.sessions.revoke(user.id, keep=keep_session)
        await revoke_all_app_passwords(self.repository.session, user.id)
        if commit:
            await self.save(user.id)

    async def set_role(self, user_id: UUID, role: str) -> User:
        """Give a user a role; demoting the last admin is refused.

        Args:
            user_id: The user.
            role: ``user`` or ``admin``.

        Returns:
            The updated user.

        Raises:
            NotFoundError: No such user.
            LastAdminError: The user is the only admin and ``role`` is not ``admin``.
        """
        user = await self.repository.get(user_id)
        if user.role == role:
            return user
        if user.role == "admin":
            if not await self.repository.demote_admin(user.id, role):
                raise LastAdminError
            set_committed_value(user, "role", role)  # written by the UPDATE above
        else:
            user.role = role
        await self.save(user.id)
        return user

    async def promote(self, email: str) -> tuple[User, bool]:
        """Make the user with ``email`` an admin (the CLI's ``promote``).

        Args:
            email: The user's email address (any case).

        Returns:
            The user and whether the role changed (``False`` if already an admin).

        Raises:
            NotFoundError: No user has that email.
        """
        user = await self.repository.get_by_email(email)
        if user is None:
            raise NotFoundError(f"No user with email {email.strip().lower()}")
        changed = user.role != "admin"
        return await self.set_role(user.id, "admin"), changed

    async def create_admin(self, *, username: str, email: str, password: str) -> User:
        """Create a confirmed admin (the CLI's ``create-admin``; admins never register).

        Args:
            username: The username.
            email: The email address.
            password: The plain password (already checked against the policy).

        Returns:
            The new admin.

        Raises:
            UserExistsError: The email or the username is taken.
        """
        user = await self.create_user(username=username, email=email, password=password)
        user.role = "admin"
        user.confirmed = True
        await self.save(user.id)
        return user

    async def set_avatar(self, user_id: UUID, data: bytes, image: ImageInfo, storage: AvatarStorage) -> User:
        """Store a new avatar, point the user at it, then drop the previous one.

        Args:
            user_id: The user.
            data: The image bytes (already checked).
            image: What the header says about them.
            storage: The avatar storage chosen at start-up.

        Returns:
            The updated user.

        Raises:
            NotFoundError: No such user.
            StorageError: The storage could not keep the file.
        """
        user = await self.repository.get(user_id)
        previous = user.avatar_url
        url = await storage.save(user.id, data, image)
        user.avatar_url = url
        try:
            await self.save(user.id)
        except Exception:
            await storage.discard(url)  # the row still names the old file: keep that one
            raise
        if previous != url:
            await storage.discard(previous)
        return user

    async def list_page(self, *, limit: int, offset: int) -> tuple[list[User], int]:
        """One page of users, oldest first, with the total count.

        Args:
            limit: Page size.
            offset: Users to skip.

        Returns:
            ``(users, total)``.
        """
        if offset > MAX_OFFSET:
            # Past any possible table, and past a 64-bit SQL integer: an empty page, as for contacts.
            return [], await self.repository.count()
        # A count, then the page: a windowed count would say 0 for a page past the end.
        users, total = await self.repository.list_and_count(
            LimitOffset(limit=limit, offset=offset),
            order_by=[("created_at", False), ("id", False)],
            count_with_window_function=False,
        )
        return list(users), total

    # ------------------------------------------------------------------ sessions

    async def open_session(
        self, user_id: UUID, session_id: UUID, refresh_hash: str, expires_at: datetime, started_at: datetime
    ) -> None:
        """Record a new login session and commit.

        The cached snapshot is kept: a new session only adds to the user's live sessions, and
        a token whose session the snapshot lacks makes it be read again
        (:func:`app.users.current.load_request_user`). Dropping it would send every in-flight
        request of this user to the database at once, on every login.

        Args:
            user_id: The user.
            session_id: The new session's id (the ``sid`` of its tokens).
            refresh_hash: The hash of its first refresh token.
            expires_at: When its refresh token expires.
            started_at: When it started (its age counts from here: ``SESSION_MAX_DAYS``).
        """
        await self.sessions.add(
            UserSession(
                id=session_id,
                user_id=user_id,
                refresh_token_hash=refresh_hash,
                expires_at=expires_at,
                created_at=started_at,
            )
        )
        await self.repository.session.commit()

    async def get_session(self, session_id: UUID, user_id: UUID) -> UserSession | None:
        """The session ``session_id`` of ``user_id`` (live or not), or ``None``."""
        return await self.sessions.get_one_or_none(id=session_id, user_id=user_id)

    async def rotate_session(
        self, session_id: UUID, old_hash: str, new_hash: str, expires_at: datetime
    ) -> bool:
        """Replace a live session's refresh-token hash if it still is ``old_hash``, and commit.

        Returns:
            Whether this call rotated it (``False``: a concurrent rotation won, or it is over;
            nothing is written).
        """
        if not await self.sessions.rotate(session_id, old_hash, new_hash, expires_at):
            await self.repository.session.rollback()
            return False
        await self.repository.session.commit()  # same session id: the cached snapshot still holds
        return True

    async def end_sessions(self, user_id: UUID, **which: Any) -> int:
        """End live sessions of a user and :meth:`save` (nothing is written when none ended).

        Args:
            user_id: The owner of the sessions.
            **which: ``only``, ``keep`` or ``refresh_hash``, as :meth:`UserSessionRepository.revoke` takes them.

        Returns:
            How many sessions were ended.
        """
        ended = await self.sessions.revoke(user_id, **which)
        if ended:
            await self.save(user_id)
        else:
            await self.repository.session.rollback()
        return ended

    # ------------------------------------------------------------------ reads

    async def get_by_login(self, login: str) -> User | None:
        """The user whose email or username is ``login`` (case-insensitive), or ``None``."""
        return await self.repository.get_by_login(login)

    async def get_by_email(self, email: str) -> User | None:
        """The user with ``email`` (case-insensitive), or ``None``."""
        return await self.repository.get_by_email(email)
