"""Writing mails to the outbox, and waking the in-process runner once they are committed.

A service calls :func:`add_mail` on the session of the change that causes the mail, before
that change commits: the row and the change are one transaction, so a failed change sends
nothing and a committed one cannot lose its mail.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, event, func
from sqlalchemy.orm import Session

from app.jobs.models import PENDING, OutboxMail

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

#: The kind of a row that is not a mail but a request for one: the job runner hands it to the
#: resolver the application registered for it (:class:`app.jobs.runner.JobRunner`), which looks
#: the account up and writes the mail, if any, as a row of its own.
ACCOUNT_REQUEST = "account_request"

#: ``Session.info`` flag: this transaction wrote outbox rows.
_WROTE_MAIL = "outbox_wrote_mail"

#: Wake-up events of the runners of this process, with their loops.
_waiters: weakref.WeakKeyDictionary[asyncio.Event, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()


def add_mail(session: AsyncSession, kind: str, recipient: str, **params: Any) -> OutboxMail:
    """Add a mail to the outbox in ``session``'s transaction (the caller commits).

    Args:
        session: The session of the change that causes the mail.
        kind: The mail's template (a key of :data:`app.mail.messages.KINDS`).
        recipient: The address it goes to.
        **params: The values it is rendered from (JSON-serialisable).

    Returns:
        The pending row.
    """
    row = OutboxMail(
        kind=kind, recipient=recipient, params=params, status=PENDING, next_attempt_at=datetime.now(UTC)
    )
    session.add(row)
    session.info[_WROTE_MAIL] = True
    return row


async def drop_pending_mail(session: AsyncSession, recipient: str) -> int:
    """Delete the mails (and account requests) still waiting to go to ``recipient``, in ``session``'s transaction.

    An erased account's pending mails must not reach it afterwards (a reset link, a notice);
    delivered rows are kept until housekeeping removes them, like everyone else's.

    Args:
        session: The session of the erasure (the caller commits).
        recipient: The address, compared case-insensitively.

    Returns:
        How many rows were deleted.
    """
    result = await session.execute(
        delete(OutboxMail).where(
            OutboxMail.status == PENDING, func.lower(OutboxMail.recipient) == recipient.strip().lower()
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def register_waiter(wake: asyncio.Event) -> None:
    """Set ``wake`` (in its loop) whenever a transaction of this process commits a mail."""
    _waiters[wake] = asyncio.get_running_loop()


def wake_runners() -> None:
    """Wake every runner of this process (thread-safe)."""
    for wake, loop in list(_waiters.items()):
        if not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_WROTE_MAIL, False):
        wake_runners()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_WROTE_MAIL, None)
