"""The rules of accounts: registration, login sessions, confirmation and password reset.

This service owns no table: users and their login sessions (``user_sessions``, one row per
login holding only the SHA-256 of the current refresh token) are written through
:class:`UserService`, whose ``save()`` commits and invalidates the cached user, so every
change shows on the next request.

Its errors are :class:`app.errors.AppError` subclasses carrying their answer (status, detail,
field); the routes that serve a browser turn some of them into an HTML page.

Mails are not sent here: each is a row of the outbox (:func:`app.jobs.outbox.add_mail`) written
in the transaction of the change that causes it, and delivered by the job runner.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from litestar.status_codes import HTTP_401_UNAUTHORIZED, HTTP_403_FORBIDDEN
from uuid_utils.compat import uuid7

from app.audit import audit
from app.auth.schemas import Tokens
from app.errors import AppError
from app.jobs.outbox import ACCOUNT_REQUEST, add_mail
from app.security.password_policy import password_problem
from app.security.passwords import hash_password, verify_password
from app.security.tokens import (
    InvalidToken,
    Purpose,
    create_token,
    decode_token,
    fingerprint,
    token_claims,
    token_hash,
)
from app.users.models import User

if TYPE_CHECKING:
    from app.config import Settings
    from app.users.service import UserService

logger = logging.getLogger(__name__)

#: The mails an account request (:meth:`AuthService.queue_account_request`) may ask for.
CONFIRM_EMAIL = "confirm_email"
RESET_PASSWORD = "reset_password"  # noqa: S105 - a mail kind, not a password
#: The link of an email change, written as an account request: the job runner mails it to the new
#: address only if no account has that address (:meth:`AuthService.resolve_email_change`).
CONFIRM_EMAIL_CHANGE = "confirm_email_change"


class AuthError(AppError):
    """A request the account rules refuse; the detail is safe to show."""


class InvalidCredentials(AuthError):
    """Unknown user or wrong password (never says which): ``401``."""

    status_code = HTTP_401_UNAUTHORIZED
    detail = "Incorrect username or password"


class NotConfirmed(AuthError):
    """The password is right but the email is not confirmed yet: ``403``."""

    status_code = HTTP_403_FORBIDDEN
    detail = "Email not confirmed: follow the link we mailed you (or ask for a new one)"


class InvalidRefreshToken(AuthError):
    """The refresh token is forged, expired, of another purpose, or its session is over: ``401``."""

    status_code = HTTP_401_UNAUTHORIZED
    detail = "Invalid or expired refresh token"


class InvalidLink(AuthError):
    """A confirmation or reset token that is invalid, expired, used or of another purpose: ``400``."""

    detail = "This link is invalid or has expired."


class InvalidConfirmationLink(InvalidLink):
    """A confirmation link that cannot be used."""

    detail = "This confirmation link is invalid or has expired."


class InvalidResetLink(InvalidLink):
    """A password reset link that cannot be used."""

    detail = "This password reset link is invalid, expired or already used."


class InvalidEmailChangeLink(InvalidLink):
    """An email change link that cannot be used (used, expired, or the password changed since)."""

    detail = "This email change link is invalid, expired or already used."


class WeakPassword(AuthError):
    """The new password breaks the policy: ``400`` naming the body field."""

    field = "password"

    def __init__(self, message: str, field: str = "password") -> None:
        """Say what is wrong (``message``) with which body ``field``."""
        super().__init__(message, field=field)


class WrongPassword(AuthError):
    """The current password given for a change is wrong: ``400`` on ``current_password``."""

    detail = "The current password is wrong"
    field = "current_password"


class SameEmail(AuthError):
    """An email change to the address the account already has: ``400`` on ``new_email``."""

    detail = "This is already your email address"
    field = "new_email"


#: The error of an unusable link token, by the token's purpose.
_INVALID_LINK: dict[Purpose, type[InvalidLink]] = {
    Purpose.CONFIRM_EMAIL: InvalidConfirmationLink,
    Purpose.RESET_PASSWORD: InvalidResetLink,
    Purpose.EMAIL_CHANGE: InvalidEmailChangeLink,
}


_dummy_hashes: dict[int, str] = {}
_dummy_lock = asyncio.Lock()


async def dummy_hash(rounds: int) -> str:
    """A bcrypt hash of the configured cost, checked when the user is unknown.

    Verifying it costs the same time as verifying a real user's hash, so a login reveals
    nothing through its duration. Made once per process and cost.

    Args:
        rounds: The bcrypt cost factor in use.

    Returns:
        The hash.
    """
    if rounds not in _dummy_hashes:
        async with _dummy_lock:
            if rounds not in _dummy_hashes:
                _dummy_hashes[rounds] = await hash_password(uuid7().hex, rounds)
    return _dummy_hashes[rounds]


def reset_state(user: User) -> str:
    """The fingerprint bound into reset tokens: changes whenever the password or the email does.

    The email counts so that a reset link mailed to an address the account has left stops working.
    """
    return fingerprint(user.id, user.password_hash, user.password_version, user.email)


def email_change_state(user: User) -> str:
    """The fingerprint bound into email change tokens: changes with the email and with the password.

    A link stops working once any email change is confirmed (single use) or the password changes
    (the owner's way to cancel a change they did not ask for).
    """
    return fingerprint(Purpose.EMAIL_CHANGE, user.id, user.email, user.password_hash, user.password_version)


def check_password(password: str, field: str = "password") -> None:
    """Apply the password policy.

    Args:
        password: The proposed password.
        field: The body field named in the error.

    Raises:
        WeakPassword: The password is refused.
    """
    problem = password_problem(password)
    if problem is not None:
        raise WeakPassword(problem, field)


class AuthService:
    """The account flows built on tokens: registration, login sessions, confirmation, passwords."""

    def __init__(self, *, users: UserService, settings: Settings) -> None:
        """Configure the service.

        Args:
            users: The user service (every write to users and their sessions, on the unit of
                work's database session).
            settings: The application settings (keys, lifetimes).
        """
        self.users = users
        self.settings = settings
        #: The unit of work's database session (the outbox rows join its transaction).
        self.session = users.repository.session

    # ------------------------------------------------------------------ tokens

    def _token(self, purpose: Purpose, user_id: UUID, ttl: timedelta, **claims: Any) -> tuple[str, Any]:
        return create_token(self.settings.secret_key, purpose, str(user_id), ttl, **claims)

    def _decode(self, token: str, purpose: Purpose) -> dict[str, Any]:
        return decode_token(self.settings.secret_key, token, purpose)

    def session_end(self, started_at: datetime) -> datetime:
        """When a session started at ``started_at`` ends, however often it is refreshed."""
        return started_at + timedelta(days=self.settings.session_max_days)

    def _tokens(self, user_id: UUID, session_id: UUID, ends_at: datetime) -> tuple[Tokens, str, datetime]:
        """New access and refresh tokens for a session, with the refresh token's hash and expiry.

        Neither token outlives the session: near its end they get the time that is left.
        """
        left = ends_at - datetime.now(UTC)
        access_ttl = min(timedelta(minutes=self.settings.access_token_minutes), left)
        access, _ = self._token(Purpose.ACCESS, user_id, access_ttl, sid=str(session_id))
        refresh, expires = self._token(
            Purpose.REFRESH,
            user_id,
            min(timedelta(days=self.settings.refresh_token_days), left),
            sid=str(session_id),
        )
        tokens = Tokens(
            access_token=access,
            refresh_token=refresh,
            expires_in=int(access_ttl.total_seconds()),
        )
        return tokens, token_hash(refresh), min(expires, ends_at)

    def confirmation_mail(self, user: User) -> None:
        """Queue the confirmation mail of ``user`` (a token bound to the email it confirms).

        The outbox row joins the session's transaction: the caller commits.
        """
        claims = token_claims(
            Purpose.CONFIRM_EMAIL,
            str(user.id),
            timedelta(hours=self.settings.confirm_token_hours),
            em=user.email,
        )
        add_mail(self.session, CONFIRM_EMAIL, user.email, username=user.username, claims=claims)

    def reset_mail(self, user: User) -> None:
        """Queue the password reset mail of ``user`` (a single-use token bound to the password)."""
        claims = token_claims(
            Purpose.RESET_PASSWORD,
            str(user.id),
            timedelta(minutes=self.settings.reset_token_minutes),
            st=reset_state(user),
        )
        add_mail(self.session, RESET_PASSWORD, user.email, username=user.username, claims=claims)

    def password_changed_mail(self, user: User) -> None:
        """Queue the "your password was changed" notice."""
        add_mail(self.session, "password_changed", user.email, username=user.username)

    def email_change_request(self, user: User, new_email: str, keep_session: UUID | None) -> None:
        """Queue the email change link for ``new_email`` (as an account request) and the notice to the current address.

        The link is an account request row, not a mail: the job runner mails it only if no
        account has ``new_email`` by then (:meth:`resolve_email_change`), so the request itself
        does the same work whether the address is taken or not.
        """
        claims = token_claims(
            Purpose.EMAIL_CHANGE,
            str(user.id),
            timedelta(hours=self.settings.email_change_token_hours),
            ne=new_email,
            st=email_change_state(user),
            ks=str(keep_session) if keep_session else None,
        )
        add_mail(
            self.session,
            ACCOUNT_REQUEST,
            new_email,
            mail=CONFIRM_EMAIL_CHANGE,
            username=user.username,
            claims=claims,
        )
        add_mail(
            self.session, "email_change_requested", user.email, username=user.username, new_email=new_email
        )

    # ------------------------------------------------------------------ registration

    async def register(self, *, username: str, email: str, password: str) -> User:
        """Create an account and its confirmation mail, in one transaction.

        Args:
            username: The username.
            email: The email address.
            password: The plain password.

        Returns:
            The new user.

        Raises:
            WeakPassword: The password is refused.
            UserExistsError: The email or username is taken.
        """
        check_password(password)
        user = await self.users.create_user(username=username, email=email, password=password, commit=False)
        self.confirmation_mail(user)
        await self.users.save(user.id)
        return user

    async def confirm_email(self, token: str) -> tuple[User, bool]:
        """Confirm the email a confirmation token was made for.

        Args:
            token: The token from the mail.

        Returns:
            The user, and whether it was already confirmed.

        Raises:
            InvalidLink: The token is unusable, or the account's email changed since.
        """
        user, claims = await self._user_of(token, Purpose.CONFIRM_EMAIL)
        if claims.get("em") != user.email:
            raise InvalidConfirmationLink
        if user.confirmed:
            return user, True
        await self.users.confirm(user)
        return user, False

    async def queue_account_request(self, mail: str, email: str) -> None:
        """Write a request for ``mail`` (a confirmation or a reset) to ``email`` in the outbox.

        The same one row for a known, an unconfirmed and an unknown address, so the request's
        duration tells nothing about which accounts exist; the job runner looks the account up
        (:meth:`resolve_account_request`). Committed before the answer: it cannot be lost.

        Args:
            mail: :data:`CONFIRM_EMAIL` or :data:`RESET_PASSWORD`.
            email: The address the client sent.
        """
        add_mail(self.session, ACCOUNT_REQUEST, email, mail=mail)
        await self.session.commit()

    async def resolve_account_request(self, email: str, params: dict[str, Any]) -> bool:
        """Queue the mail an account request asked for, if the account calls for it; whether it did.

        Args:
            email: The address the request names.
            params: The row's params: ``mail`` (which mail), and what that mail needs.
        """
        mail = params["mail"]
        if mail == RESET_PASSWORD:
            return await self.request_reset(email)
        if mail == CONFIRM_EMAIL_CHANGE:
            return await self.resolve_email_change(email, params["username"], params["claims"])
        return await self.request_confirmation(email)

    async def request_confirmation(self, email: str) -> bool:
        """Queue a new confirmation mail if the account exists and is unconfirmed; whether it did."""
        user = await self.users.get_by_email(email)
        if user is None or user.confirmed:
            return False
        self.confirmation_mail(user)
        await self.session.commit()
        return True

    # ------------------------------------------------------------------ sessions

    async def login(
        self, login: str, password: str, *, user_agent: str | None = None, ip: str | None = None
    ) -> Tokens:
        """Check the credentials and open a session; audited (``login`` or ``login_failed``).

        The password is always verified against a bcrypt hash of the same cost — the user's
        or a dummy one — so an unknown user and a wrong password take the same time.

        Args:
            login: The email or the username.
            password: The plain password.
            user_agent: The client's ``User-Agent``, kept with the session (already cleaned).
            ip: The client's network, kept with the session (already truncated).

        Returns:
            The session's tokens.

        Raises:
            InvalidCredentials: Unknown user or wrong password.
            NotConfirmed: Right password, unconfirmed email.
        """
        user = await self.users.get_by_login(login)
        # Hand the connection back before hashing (~0.25 s): holding it through bcrypt drained
        # the pool under concurrent logins. expire_on_commit=False keeps `user` loaded.
        await self.session.commit()
        hashed = user.password_hash if user is not None else await dummy_hash(self.settings.bcrypt_rounds)
        valid = await verify_password(password, hashed)
        if user is None or not valid:
            audit(
                "login_failed",
                user.id if user else None,
                reason="unknown_user" if user is None else "password",
            )
            raise InvalidCredentials
        if not user.confirmed:
            audit("login_failed", user.id, reason="not_confirmed")
            raise NotConfirmed
        session_id, started_at = uuid7(), datetime.now(UTC)
        tokens, refresh_hash, expires = self._tokens(user.id, session_id, self.session_end(started_at))
        await self.users.open_session(
            user.id, session_id, refresh_hash, expires, started_at, user_agent=user_agent, ip=ip
        )
        audit("login", user.id, session_id=session_id, ip=ip)
        return tokens

    async def refresh(self, refresh_token: str, *, ip: str | None = None) -> Tokens:
        """Rotate a refresh token: new tokens for the same session, the old token dead.

        Presenting a refresh token that is no longer the session's current one means it was
        copied: every session of the user is ended. A session older than ``SESSION_MAX_DAYS``
        is over whatever its token says: the user logs in again.

        Args:
            refresh_token: The current refresh token of a live session.
            ip: The client's network (already truncated), recorded with the session.

        Returns:
            New tokens.

        Raises:
            InvalidRefreshToken: Any reason the token cannot be used.
        """
        try:
            claims = self._decode(refresh_token, Purpose.REFRESH)
            session_id, user_id = UUID(str(claims.get("sid"))), UUID(claims["sub"])
        except (InvalidToken, ValueError):
            raise InvalidRefreshToken from None
        row = await self.users.get_session(session_id, user_id)
        if row is None or row.revoked_at is not None:
            raise InvalidRefreshToken
        presented = token_hash(refresh_token)
        if row.refresh_token_hash != presented:
            revoked = await self.users.end_sessions(user_id)
            logger.warning("refresh token re-used: ended %d session(s) of user %s", revoked, user_id)
            if revoked:
                audit("sessions_ended", user_id, count=revoked, reason="refresh_token_reused")
            raise InvalidRefreshToken
        ends_at = self.session_end(row.created_at)
        if ends_at <= datetime.now(UTC):
            # Over by age: end it, so its access tokens stop too (rows made before the limit
            # existed may carry a later expiry).
            await self.users.end_sessions(user_id, only=session_id)
            raise InvalidRefreshToken
        tokens, new_hash, expires = self._tokens(user_id, session_id, ends_at)
        if not await self.users.rotate_session(session_id, presented, new_hash, expires, ip):
            # A concurrent refresh with the same token won the race (or the session just
            # expired): this one fails; the winner's session lives on.
            raise InvalidRefreshToken
        return tokens

    async def logout(self, user_id: UUID, refresh_token: str) -> None:
        """End the session whose current refresh token this is.

        A rotated (older) token of the session, or one of an ended session, is dead: it is
        refused and the session is left as it is.

        Args:
            user_id: The authenticated user (the token must be theirs).
            refresh_token: The current refresh token of the session to end.

        Raises:
            InvalidRefreshToken: The token is unusable, dead, or not the user's.
        """
        try:
            claims = self._decode(refresh_token, Purpose.REFRESH)
            session_id = UUID(str(claims.get("sid")))
        except (InvalidToken, ValueError):
            raise InvalidRefreshToken from None
        if claims["sub"] != str(user_id):
            raise InvalidRefreshToken
        if not await self.users.end_sessions(
            user_id, only=session_id, refresh_hash=token_hash(refresh_token)
        ):
            raise InvalidRefreshToken
        audit("session_ended", user_id, session_id=session_id, reason="logout")

    # ------------------------------------------------------------------ passwords

    async def request_reset(self, email: str) -> bool:
        """Queue a reset mail if an account has this email; whether it did."""
        user = await self.users.get_by_email(email)
        if user is None:
            return False
        self.reset_mail(user)
        await self.session.commit()
        return True

    async def check_reset_token(self, token: str) -> User:
        """The user a reset token is valid for.

        Args:
            token: The token from the mail.

        Returns:
            The user.

        Raises:
            InvalidLink: Invalid, expired, already used, or the password changed since.
        """
        user, claims = await self._user_of(token, Purpose.RESET_PASSWORD)
        if claims.get("st") != reset_state(user):
            raise InvalidResetLink
        return user

    async def reset_password(self, token: str, password: str, password_confirm: str | None = None) -> None:
        """Set a new password from a reset link; every session ends and a notice is queued.

        Args:
            token: The token from the mail.
            password: The new plain password.
            password_confirm: The HTML form's repeat field, when sent: it must equal ``password``
                (the form's typo guard, never required).

        Raises:
            InvalidLink: The token cannot be used.
            WeakPassword: The password is refused, or the repeat differs.
        """
        if password_confirm is not None and password != password_confirm:
            raise WeakPassword("The two passwords differ", "password_confirm")
        user = await self.check_reset_token(token)
        check_password(password)
        await self.users.set_password(user, password, commit=False)
        self.password_changed_mail(user)
        await self.users.save(user.id)
        audit("password_reset", user.id)

    async def change_password(
        self, user_id: UUID, session_id: UUID | None, current_password: str, new_password: str
    ) -> None:
        """Change the password of a logged-in user, keeping only their current session; a notice is queued.

        Args:
            user_id: The user.
            session_id: The session making the change (kept alive).
            current_password: The password they have now.
            new_password: The new password.

        Raises:
            WrongPassword: ``current_password`` is wrong.
            WeakPassword: The new password is refused.
        """
        user = await self.users.get(user_id)
        if not await verify_password(current_password, user.password_hash):
            raise WrongPassword
        check_password(new_password, "new_password")
        await self.users.set_password(user, new_password, keep_session=session_id, commit=False)
        self.password_changed_mail(user)
        await self.users.save(user.id)
        audit("password_changed", user.id, session_id=session_id)

    # ------------------------------------------------------------------ email change

    async def request_email_change(
        self, user_id: UUID, session_id: UUID | None, password: str, new_email: str
    ) -> None:
        """Start an email change: the link to ``new_email`` and a notice to the current address.

        The answer is the same whether ``new_email`` is taken: the link is written as an
        account request that the job runner resolves (:meth:`resolve_email_change`), so this
        request never looks the address up.

        Args:
            user_id: The logged-in user.
            session_id: The session asking (kept alive when the change is confirmed).
            password: The account password, checked again.
            new_email: The new address (normalised by the request schema).

        Raises:
            WrongPassword: ``password`` is wrong (``400`` on ``password``).
            SameEmail: ``new_email`` is the account's address already.
        """
        user = await self.users.get(user_id)
        # Hand the connection back during bcrypt, as login does.
        await self.session.commit()
        if not await verify_password(password, user.password_hash):
            raise WrongPassword("The password is wrong", field="password")
        if new_email == user.email:
            raise SameEmail
        self.email_change_request(user, new_email, session_id)
        await self.session.commit()
        audit("email_change_requested", user.id)

    async def resolve_email_change(self, email: str, username: str, claims: dict[str, Any]) -> bool:
        """Mail the email change link to ``email`` unless an account has that address; whether it did.

        Nothing goes to a taken address: its owner did not ask for anything, and the requester
        learns nothing either way. A request whose link is dead already (the user is gone, or
        changed their email or password since) sends nothing.
        """
        if await self.users.get_by_email(email) is not None:
            return False
        user = await self.users.get_one_or_none(id=UUID(claims["sub"]))
        if user is None or claims.get("st") != email_change_state(user):
            return False
        add_mail(
            self.session, "confirm_email_change", email, username=username, new_email=email, claims=claims
        )
        await self.session.commit()
        return True

    async def check_email_change_token(self, token: str) -> tuple[User, str]:
        """The user an email change token is valid for, and the address it changes to.

        Args:
            token: The token from the mail.

        Returns:
            The user and the new address.

        Raises:
            InvalidLink: Invalid, expired, of another purpose, already used (the email changed
                since), or the password changed since.
        """
        user, claims = await self._email_change_of(token)
        return user, claims["ne"]

    async def confirm_email_change(self, token: str) -> User:
        """Change the email to the one an email change token names; other sessions end.

        The session that asked for the change stays; every other one ends at once (the cached
        user is dropped by :meth:`UserService.save`). The former address gets a notice.

        Args:
            token: The token from the mail.

        Returns:
            The user, with the new email.

        Raises:
            InvalidLink: The token cannot be used.
            UserExistsError: Another account took the address since the link was sent (``409``).
        """
        user, claims = await self._email_change_of(token)
        try:
            keep = UUID(str(claims["ks"])) if claims.get("ks") else None
        except ValueError:
            keep = None
        old_email = user.email
        ended = await self.users.change_email(user, claims["ne"], keep_session=keep)
        add_mail(self.session, "email_changed", old_email, username=user.username, new_email=user.email)
        await self.users.save(user.id)
        audit("email_changed", user.id, sessions_ended=ended)
        return user

    async def _email_change_of(self, token: str) -> tuple[User, dict[str, Any]]:
        """The user of a live email change token and its claims (``ne``: a string)."""
        user, claims = await self._user_of(token, Purpose.EMAIL_CHANGE)
        if claims.get("st") != email_change_state(user) or not isinstance(claims.get("ne"), str):
            raise InvalidEmailChangeLink
        return user, claims

    # ------------------------------------------------------------------ helpers

    async def _user_of(self, token: str, purpose: Purpose) -> tuple[User, dict[str, Any]]:
        """The existing user a single-purpose link token names, and the token's claims."""
        try:
            claims = self._decode(token, purpose)
            user_id = UUID(claims["sub"])
        except (InvalidToken, ValueError):
            raise _INVALID_LINK[purpose] from None
        user = await self.users.get_one_or_none(id=user_id)
        if user is None:
            raise _INVALID_LINK[purpose]
        return user, claims
