"""The job runner: delivers the outbox's mails and does the daily housekeeping.

One loop per runner: claim the due rows, send them through the configured sender, record
each outcome, then sleep until a commit in this process wakes it (in-process runner) or
``JOBS_POLL_SECONDS`` pass. On PostgreSQL rows are claimed with ``FOR UPDATE SKIP LOCKED``
and stay locked while they are sent, so any number of runners never send one mail twice;
on SQLite they are leased by one ``UPDATE`` (see :meth:`JobRunner._lease`).

A failed attempt is retried with exponential backoff and jitter until the row is
``MAIL_RETRY_HOURS`` old, then it is dead with its last error; a permanent refusal (an SMTP
5xx) is dead at once. A runner that cannot reach its database retries with backoff and logs
once per outage. Stopping lets the deliveries in flight finish (``JOBS_SHUTDOWN_SECONDS`` at
most); rows not claimed yet stay for the next runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiosmtplib
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from app import metrics
from app.jobs.models import DEAD, PENDING, SENT, OutboxMail
from app.jobs.outbox import register_waiter
from app.mail import messages

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from app.config import Settings
    from app.mail.senders import Mailer

    #: A housekeeping task: deletes what is over at ``now`` in the session, returns the count.
    Housekeeping = Callable[[AsyncSession, datetime], Awaitable[int]]
    #: Does what a non-mail row asks (``session``, its recipient, its params); the session is
    #: the resolver's own, which it commits (e.g. with the mail it wrote).
    Resolver = Callable[[AsyncSession, str, dict[str, Any]], Awaitable[object]]

logger = logging.getLogger("app.jobs")

#: Rows claimed (and sent concurrently) per round.
BATCH_SIZE = 10
#: SQLite: seconds a claimed row is hidden from other runners (longer than any send).
SQLITE_LEASE_SECONDS = 300
#: Longest wait between two attempts of a mail, in seconds.
MAX_RETRY_DELAY = 3600.0
#: First and longest waits between two tries to reach a lost database, in seconds.
FIRST_OUTAGE_DELAY = 0.5
MAX_OUTAGE_DELAY = 30.0
#: Delivered rows are kept this long (then housekeeping deletes them).
SENT_KEPT = timedelta(days=7)
#: Housekeeping runs this often.
HOUSEKEEPING_EVERY = timedelta(days=1)
#: Key of the PostgreSQL advisory lock under which one runner does the housekeeping.
HOUSEKEEPING_LOCK_KEY = 7_210_391_118


def retry_delay(attempt: int, base: float, jitter: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential (``base``, doubled per attempt, capped at :data:`MAX_RETRY_DELAY`), then
    scaled by a random factor in [0.5, 1) so that mails failed together do not retry together.

    Args:
        attempt: How many attempts failed so far.
        base: The first delay (``MAIL_RETRY_SECONDS``).
        jitter: A number in [0, 1) (random when omitted; tests pass one).

    Returns:
        The delay in seconds.
    """
    delay = min(base * 2 ** min(attempt - 1, 30), MAX_RETRY_DELAY)
    return delay * (0.5 + 0.5 * (random.random() if jitter is None else jitter))  # noqa: S311 - not a secret


def is_permanent(exc: BaseException) -> bool:
    """Whether a failed send must not be retried: the server refused the mail itself (5xx).

    An authentication refusal is a configuration problem of the whole service, not of this
    mail: it is retried (and every mail waits) until the operator fixes it.
    """
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return False
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(500 <= r.code < 600 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 500 <= exc.code < 600
    return isinstance(exc, KeyError | TypeError)  # an unknown kind or bad params never render


def _describe(exc: BaseException) -> str:
    """The error kept on the row: its type and message (SMTP replies carry no mail body)."""
    return f"{type(exc).__name__}: {exc}"[:500]


@dataclass(frozen=True, slots=True)
class Status:
    """What ``jobs status`` shows."""

    pending: int
    dead: int
    sent: int
    oldest_pending: datetime | None


@dataclass(frozen=True, slots=True)
class Backlog:
    """What ``/metrics`` shows of the outbox: the mails not delivered."""

    pending: int
    dead: int
    oldest_pending: datetime | None


class JobRunner:
    """Delivers outbox mails and runs housekeeping, for one process.

    Args:
        engine: The database engine (the runner opens its own short sessions).
        mailer: The sender (SMTP or the log).
        settings: The application settings.
        housekeeping: The daily cleanup tasks, by name.
        resolvers: What to do with rows that are requests rather than mails, by kind.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        mailer: Mailer,
        settings: Settings,
        *,
        housekeeping: Sequence[tuple[str, Housekeeping]] = (),
        resolvers: Mapping[str, Resolver] | None = None,
    ) -> None:
        """Configure the runner; nothing runs until :meth:`run` or :meth:`start`."""
        self.engine = engine
        self.mailer = mailer
        self.settings = settings
        self.housekeeping = [("delivered mails", purge_delivered), *housekeeping]
        self.resolvers = dict(resolvers or {})
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.is_postgres = engine.dialect.name == "postgresql"
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_housekeeping: datetime | None = None

    # ------------------------------------------------------------------ one round

    async def deliver_due(self) -> int:
        """Claim the due rows, send them, and record each outcome.

        Returns:
            How many rows were attempted (``0``: nothing was due).
        """
        now = datetime.now(UTC)
        due = (OutboxMail.status == PENDING, OutboxMail.next_attempt_at <= now)
        async with self.sessions() as session:
            if self.is_postgres:
                # Locked until this transaction commits the outcome: another runner skips them.
                statement = (
                    select(OutboxMail)
                    .where(*due)
                    .order_by(OutboxMail.next_attempt_at)
                    .limit(BATCH_SIZE)
                    .with_for_update(skip_locked=True)
                )
                rows = list(await session.scalars(statement))
            else:
                rows = await self._lease(session, now)
            if not rows:
                return 0
            outcomes = await asyncio.gather(*(self._send(row) for row in rows))
            finished = datetime.now(UTC)
            for row, error in zip(rows, outcomes, strict=True):
                self._record(row, error, finished)
            await session.commit()
        return len(rows)

    async def _lease(self, session: AsyncSession, now: datetime) -> list[OutboxMail]:
        """SQLite: claim due rows by moving them out of reach for a while, in one committed UPDATE.

        SQLite has no row locks (nor ``SKIP LOCKED``), but it runs one writer at a time: two
        runners (``WORKERS`` > 1) never claim one row. A runner that dies leaves its rows to the
        next one when the lease ends. The claim commits at once: a read transaction kept open
        across the sends could not become a writer after another commit.
        """
        due_ids = (
            select(OutboxMail.id)
            .where(OutboxMail.status == PENDING, OutboxMail.next_attempt_at <= now)
            .order_by(OutboxMail.next_attempt_at)
            .limit(BATCH_SIZE)
            .scalar_subquery()
        )
        claim = (
            update(OutboxMail)
            .where(
                OutboxMail.id.in_(due_ids), OutboxMail.status == PENDING, OutboxMail.next_attempt_at <= now
            )
            .values(next_attempt_at=now + timedelta(seconds=SQLITE_LEASE_SECONDS))
            .returning(OutboxMail)
        )
        rows = list(await session.scalars(claim, execution_options={"synchronize_session": False}))
        await session.commit()
        return rows

    async def _send(self, row: OutboxMail) -> BaseException | None:
        if (resolve := self.resolvers.get(row.kind)) is not None:
            try:
                async with self.sessions() as session:
                    await resolve(session, row.recipient, row.params)
            except Exception as exc:  # recorded on the row, retried like a mail
                return exc
            return None
        try:
            message = messages.build(self.settings, row.kind, to=row.recipient, params=row.params)
            # One Message-ID per row: a copy sent twice (a crash between send and commit)
            # is recognisable as the same mail.
            del message["Message-ID"]
            message["Message-ID"] = f"<{row.id}@contacts.local>"
            await self.mailer.send(message)
        except Exception as exc:  # recorded on the row; the runner goes on
            return exc
        return None

    def _record(self, row: OutboxMail, error: BaseException | None, now: datetime) -> None:
        row.attempts += 1
        row.updated_at = now
        if error is None:
            row.status, row.sent_at, row.last_error = SENT, now, None
            if row.kind in self.resolvers:
                # A done request keeps no address and no parameters: the mail it made (if any)
                # is a row of its own, and nothing needs to know who asked.
                row.recipient, row.params = "", {}
                logger.info("request %s (%s) done", row.id, row.kind)
                return
            metrics.mail_result(sent=True)
            logger.info("mail %s (%s) delivered after %d attempt(s)", row.id, row.kind, row.attempts)
            return
        row.last_error = _describe(error)
        deadline = row.created_at + timedelta(hours=self.settings.mail_retry_hours)
        if is_permanent(error) or now >= deadline:
            row.status = DEAD
            if row.kind not in self.resolvers:  # a request is not a mail
                metrics.mail_result(sent=False)
            logger.error(
                "mail %s (%s) is dead after %d attempt(s): %s", row.id, row.kind, row.attempts, row.last_error
            )
            return
        delay = retry_delay(row.attempts, self.settings.mail_retry_seconds)
        row.next_attempt_at = min(now + timedelta(seconds=delay), deadline)
        logger.warning(
            "mail %s (%s): attempt %d failed (%s), next in %.1fs",
            row.id,
            row.kind,
            row.attempts,
            type(error).__name__,
            (row.next_attempt_at - now).total_seconds(),
        )

    # ------------------------------------------------------------------ housekeeping

    async def housekeep(self, now: datetime | None = None) -> dict[str, int] | None:
        """Delete what is over: run every housekeeping task in one transaction.

        On PostgreSQL under an advisory lock: when another runner holds it, this one skips.

        Args:
            now: The reference time (tests pass one).

        Returns:
            Rows deleted per task, or ``None`` if another runner was doing it.
        """
        now = now or datetime.now(UTC)
        async with self.sessions() as session:
            if self.is_postgres:
                # Transaction-scoped: released by the commit, or by the connection's loss.
                locked = await session.scalar(select(func.pg_try_advisory_xact_lock(HOUSEKEEPING_LOCK_KEY)))
                if not locked:
                    return None
            counts = {name: await task(session, now) for name, task in self.housekeeping}
            await session.commit()
        logger.info("housekeeping: %s", ", ".join(f"{n} {name}" for name, n in counts.items()))
        return counts

    async def _housekeep_if_due(self) -> None:
        now = datetime.now(UTC)
        if self._next_housekeeping is not None and now < self._next_housekeeping:
            return
        await self.housekeep(now)
        self._next_housekeeping = now + HOUSEKEEPING_EVERY

    # ------------------------------------------------------------------ the loop

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll."""
        if self._wake is not None:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver and housekeep until ``stop`` is set; a round in progress finishes first.

        Args:
            stop: Set to stop after the current round.
        """
        self._wake = wake = asyncio.Event()
        register_waiter(wake)
        failures = 0
        while not stop.is_set():
            wake.clear()  # a commit from now on wakes the pause below
            try:
                await self._housekeep_if_due()
                busy = await self.deliver_due()
            except Exception as exc:  # the database (or anything else) failed: retry, log once
                failures += 1
                if failures == 1:
                    logger.warning("job runner: cannot reach the database (%s), retrying", _describe(exc))
                delay = min(FIRST_OUTAGE_DELAY * 2 ** min(failures - 1, 10), MAX_OUTAGE_DELAY)
                await _pause(stop, None, delay)
                continue
            if failures:
                logger.warning("job runner: the database is back after %d failed round(s)", failures)
                failures = 0
            if not busy:
                await _pause(stop, wake, self.settings.jobs_poll_seconds)

    async def start(self, _app: Any = None) -> None:
        """Run in the background of this process (an ``on_startup`` hook)."""
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.run(self._stop), name="job-runner")

    async def stop(self, _app: Any = None) -> None:
        """Stop, letting deliveries in flight finish within ``JOBS_SHUTDOWN_SECONDS`` (an ``on_shutdown`` hook).

        A round cut off by the limit is rolled back: its rows stay pending for the next runner.
        """
        task, self._task = self._task, None
        if task is None or self._stop is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(task, timeout=self.settings.jobs_shutdown_seconds)
        except TimeoutError:
            logger.warning(
                "job runner: deliveries still in flight after %.0fs were cut off; they stay pending",
                self.settings.jobs_shutdown_seconds,
            )

    async def close(self, _app: Any = None) -> None:
        """Close the runner's connection pool (an ``on_shutdown`` hook, after :meth:`stop`)."""
        await self.engine.dispose()

    # ------------------------------------------------------------------ the CLI's queries

    async def status(self) -> Status:
        """Counts of pending, dead and sent rows, and when the oldest pending one was written."""
        async with self.sessions() as session:
            rows = (
                await session.execute(select(OutboxMail.status, func.count()).group_by(OutboxMail.status))
            ).all()
            oldest = await session.scalar(
                select(func.min(OutboxMail.created_at)).where(OutboxMail.status == PENDING)
            )
        counts = {status: int(n) for status, n in rows}
        return Status(counts.get(PENDING, 0), counts.get(DEAD, 0), counts.get(SENT, 0), oldest)

    async def backlog(self) -> Backlog:
        """Counts of pending and dead rows and the oldest pending one's time, in one query.

        Delivered rows are not counted (up to 7 days of them): the status index answers this.
        """
        statement = (
            select(OutboxMail.status, func.count(), func.min(OutboxMail.created_at))
            .where(OutboxMail.status.in_((PENDING, DEAD)))
            .group_by(OutboxMail.status)
        )
        async with self.sessions() as session:
            found = {
                status: (int(n), oldest) for status, n, oldest in (await session.execute(statement)).all()
            }
        pending, oldest = found.get(PENDING, (0, None))
        return Backlog(pending, found.get(DEAD, (0, None))[0], oldest)

    async def retry_dead(self) -> int:
        """Make every dead row pending again, due now, with a fresh retry window.

        Returns:
            How many rows were revived.
        """
        now = datetime.now(UTC)
        async with self.sessions() as session:
            result = await session.execute(
                update(OutboxMail)
                .where(OutboxMail.status == DEAD)
                # created_at restarts the MAIL_RETRY_HOURS window; attempts keep their history.
                .values(status=PENDING, next_attempt_at=now, created_at=now, updated_at=now)
            )
            await session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]


async def purge_delivered(session: AsyncSession, now: datetime) -> int:
    """Delete outbox rows delivered more than 7 days before ``now``."""
    result = await session.execute(
        delete(OutboxMail).where(OutboxMail.status == SENT, OutboxMail.sent_at < now - SENT_KEPT)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def _pause(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` or ``wake`` is set."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
