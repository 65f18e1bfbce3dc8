"""The job runner against the test database: delivery, backoff, dead mails, races, housekeeping."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import aiosmtplib
import msgspec
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from app.config import Settings
from app.db import make_db_config
from app.jobs.models import DEAD, PENDING, SENT, OutboxMail
from app.jobs.outbox import add_mail
from app.jobs.runner import MAX_RETRY_DELAY, JobRunner, is_permanent, retry_delay
from app.users.models import User, UserSession
from app.users.repository import delete_finished_sessions
from tests.conftest import ON_POSTGRES, PASSWORD_HASH


class Recorder:
    """A sender that records what it sends and fails as told (``errors`` are raised in turn)."""

    def __init__(self, *errors: BaseException, delay: float = 0.0) -> None:
        self.errors = list(errors)
        self.delay = delay
        self.sent: list[EmailMessage] = []
        self.got_one = asyncio.Event()

    async def send(self, message: EmailMessage) -> None:
        await asyncio.sleep(self.delay)
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append(message)
        self.got_one.set()


@pytest.fixture
def job_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, mail_retry_seconds=10.0, mail_retry_hours=24.0)


@pytest.fixture
async def runners(job_settings: Settings) -> AsyncIterator[list[JobRunner]]:
    """Runners made with :func:`runner`; their engines are closed at the end."""
    made: list[JobRunner] = []
    yield made
    for made_runner in made:
        await made_runner.close()


def runner(made: list[JobRunner], settings: Settings, mailer: Recorder) -> JobRunner:
    job_runner = JobRunner(
        make_db_config(settings).get_engine(),
        mailer,
        settings,
        housekeeping=[("sessions", delete_finished_sessions)],
    )
    made.append(job_runner)
    return job_runner


async def queue(job_runner: JobRunner, count: int = 1, **row: object) -> list[uuid.UUID]:
    """Write ``count`` reset mails to the outbox (with ``row`` overrides), committed."""
    async with job_runner.sessions() as session:
        rows = [
            add_mail(session, "reset_password", f"ada{i}@example.com", username="ada", token=f"T{i}")
            for i in range(count)
        ]
        for item in rows:
            for name, value in row.items():
                setattr(item, name, value)
        await session.commit()
        return [item.id for item in rows]


async def rows(job_runner: JobRunner) -> list[OutboxMail]:
    async with job_runner.sessions() as session:
        return list(await session.scalars(select(OutboxMail).order_by(OutboxMail.recipient)))


async def make_due(job_runner: JobRunner) -> None:
    async with job_runner.sessions() as session:
        await session.execute(
            update(OutboxMail).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()


@pytest.fixture
def jobs_log() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("app.jobs")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


# --------------------------------------------------------------------------- rules


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    assert [retry_delay(n, 2.0, jitter=0.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert [retry_delay(n, 2.0, jitter=0.999999) for n in range(1, 4)] == pytest.approx([2.0, 4.0, 8.0])
    assert retry_delay(40, 2.0, jitter=0.999999) == pytest.approx(MAX_RETRY_DELAY)
    assert retry_delay(10_000, 2.0, jitter=0.0) == MAX_RETRY_DELAY / 2
    delays = {retry_delay(3, 2.0) for _ in range(50)}
    assert len(delays) > 1  # two mails failed together do not retry together
    assert all(4.0 <= d < 8.0 for d in delays)


def test_only_a_refusal_of_the_mail_itself_is_permanent() -> None:
    assert is_permanent(aiosmtplib.SMTPResponseException(550, "no such user"))
    assert is_permanent(aiosmtplib.SMTPDataError(554, "rejected"))
    assert is_permanent(
        aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "unknown", "x@example.com")])
    )
    assert not is_permanent(aiosmtplib.SMTPResponseException(451, "try later"))
    assert not is_permanent(aiosmtplib.SMTPAuthenticationError(535, "bad credentials"))  # our config
    assert not is_permanent(aiosmtplib.SMTPConnectError("refused"))
    assert not is_permanent(ConnectionRefusedError())


# --------------------------------------------------------------------------- delivery


async def test_a_due_mail_is_rendered_sent_and_marked_sent(
    job_settings: Settings, runners: list[JobRunner]
) -> None:
    mailer = Recorder()
    job_runner = runner(runners, job_settings, mailer)
    (row_id,) = await queue(job_runner)

    assert await job_runner.deliver_due() == 1
    assert await job_runner.deliver_due() == 0

    (message,) = mailer.sent
    assert message["To"] == "ada0@example.com"
    assert message["Message-ID"] == f"<{row_id}@contacts.local>"
    assert "/api/auth/confirm_update_password/T0" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    (row,) = await rows(job_runner)
    assert (row.status, row.attempts, row.last_error) == (SENT, 1, None)
    assert row.sent_at is not None


async def test_a_failed_attempt_is_retried_after_the_backoff(
    job_settings: Settings, runners: list[JobRunner], jobs_log: list[logging.LogRecord]
) -> None:
    mailer = Recorder(ConnectionRefusedError("down"), aiosmtplib.SMTPResponseException(421, "busy"))
    job_runner = runner(runners, job_settings, mailer)
    await queue(job_runner)

    before = datetime.now(UTC)
    await job_runner.deliver_due()
    (row,) = await rows(job_runner)
    assert (row.status, row.attempts) == (PENDING, 1)
    assert "ConnectionRefusedError" in (row.last_error or "")
    wait = (row.next_attempt_at - before).total_seconds()
    assert 5.0 <= wait <= 10.5  # MAIL_RETRY_SECONDS=10, jitter in [0.5, 1)
    assert await job_runner.deliver_due() == 0  # not due yet

    await make_due(job_runner)
    await job_runner.deliver_due()
    (row,) = await rows(job_runner)
    assert (row.status, row.attempts) == (PENDING, 2)
    assert 10.0 <= (row.next_attempt_at - datetime.now(UTC)).total_seconds() <= 20.5  # doubled

    await make_due(job_runner)
    await job_runner.deliver_due()
    (row,) = await rows(job_runner)
    assert (row.status, row.attempts) == (SENT, 3)
    assert len(mailer.sent) == 1
    warnings = [r.getMessage() for r in jobs_log if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert not any("ada0@example.com" in m or "T0" in m for m in warnings)  # no address, no token


async def test_a_permanent_refusal_is_dead_at_once(job_settings: Settings, runners: list[JobRunner]) -> None:
    mailer = Recorder(
        aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "x")])
    )
    job_runner = runner(runners, job_settings, mailer)
    await queue(job_runner, 2)

    await job_runner.deliver_due()

    first, second = await rows(job_runner)
    assert (first.status, first.attempts) == (DEAD, 1)
    assert "550" in (first.last_error or "")
    assert second.status == SENT  # an undeliverable address does not hold the others back


async def test_a_mail_still_failing_after_the_retry_window_is_dead(
    job_settings: Settings, runners: list[JobRunner]
) -> None:
    mailer = Recorder(ConnectionRefusedError("down"), ConnectionRefusedError("down"))
    job_runner = runner(runners, job_settings, mailer)
    await queue(job_runner, created_at=datetime.now(UTC) - timedelta(hours=23, minutes=59, seconds=58))

    await job_runner.deliver_due()
    (row,) = await rows(job_runner)
    assert row.status == PENDING
    assert row.next_attempt_at <= row.created_at + timedelta(hours=24)  # one last try at the deadline

    await asyncio.sleep(max(0.0, (row.next_attempt_at - datetime.now(UTC)).total_seconds()) + 0.05)
    await job_runner.deliver_due()
    (row,) = await rows(job_runner)
    assert (row.status, row.attempts) == (DEAD, 2)
    assert "ConnectionRefusedError" in (row.last_error or "")


async def test_status_and_retry_dead(job_settings: Settings, runners: list[JobRunner]) -> None:
    mailer = Recorder(aiosmtplib.SMTPResponseException(554, "no"))
    job_runner = runner(runners, job_settings, mailer)
    assert await job_runner.status() == (await job_runner.status())  # empty is fine
    empty = await job_runner.status()
    assert (empty.pending, empty.dead, empty.oldest_pending) == (0, 0, None)

    await queue(job_runner, 1)
    await job_runner.deliver_due()  # dead
    await queue(job_runner, 2, next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
    found = await job_runner.status()
    assert (found.pending, found.dead, found.sent) == (2, 1, 0)
    assert found.oldest_pending is not None

    assert await job_runner.retry_dead() == 1
    assert await job_runner.retry_dead() == 0
    await job_runner.deliver_due()
    found = await job_runner.status()
    assert (found.pending, found.dead, found.sent) == (2, 0, 1)


async def test_retry_dead_gives_the_mails_a_fresh_retry_window(
    job_settings: Settings, runners: list[JobRunner]
) -> None:
    mailer = Recorder(ConnectionRefusedError("down"), ConnectionRefusedError("still down"))
    job_runner = runner(runners, job_settings, mailer)
    await queue(job_runner, created_at=datetime.now(UTC) - timedelta(hours=25))
    await job_runner.deliver_due()
    (row,) = await rows(job_runner)
    assert (row.status, row.attempts) == (DEAD, 1)  # its MAIL_RETRY_HOURS were over

    revived_at = datetime.now(UTC)
    assert await job_runner.retry_dead() == 1
    status = await job_runner.status()
    assert status.oldest_pending is not None and status.oldest_pending >= revived_at - timedelta(seconds=1)
    await job_runner.deliver_due()  # fails again: retried later, not dead at once
    (row,) = await rows(job_runner)
    assert (row.status, row.attempts) == (PENDING, 2)
    assert row.next_attempt_at > revived_at
    assert row.created_at + timedelta(hours=job_settings.mail_retry_hours) > datetime.now(UTC) + timedelta(
        hours=23
    )

    await make_due(job_runner)
    await job_runner.deliver_due()
    (row,) = await rows(job_runner)
    assert (row.status, row.attempts) == (SENT, 3)
    assert [m["To"] for m in mailer.sent] == ["ada0@example.com"]


async def test_three_runners_racing_send_each_mail_once(
    job_settings: Settings, runners: list[JobRunner]
) -> None:
    mailers = [Recorder(delay=0.05) for _ in range(3)]
    racing = [runner(runners, job_settings, m) for m in mailers]
    ids = await queue(racing[0], 45)
    for job_runner in racing:  # connected before the race: a slow first connect sat it out
        await job_runner.status()

    async def drain(job_runner: JobRunner) -> None:
        while await job_runner.deliver_due():
            pass

    await asyncio.gather(*(drain(r) for r in racing))

    sent = [m["Message-ID"] for mailer in mailers for m in mailer.sent]
    assert sorted(sent) == sorted(f"<{i}@contacts.local>" for i in ids)  # each once, none twice
    assert all(mailer.sent for mailer in mailers)  # they really raced
    assert {r.status for r in await rows(racing[0])} == {SENT}


async def test_the_loop_wakes_on_a_commit_and_survives_a_lost_database(
    job_settings: Settings,
    runners: list[JobRunner],
    jobs_log: list[logging.LogRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.jobs.runner.FIRST_OUTAGE_DELAY", 0.01)
    settings = msgspec.structs.replace(job_settings, jobs_poll_seconds=30.0)  # only the wake-up is fast
    mailer = Recorder()
    job_runner = runner(runners, settings, mailer)
    await job_runner.start()
    try:
        await asyncio.sleep(0.3)  # its first round found nothing: it now waits for 30 s or a commit
        started = asyncio.get_running_loop().time()
        await queue(job_runner)
        await asyncio.wait_for(mailer.got_one.wait(), timeout=10)
        assert asyncio.get_running_loop().time() - started < 2.0

        broken = 0

        async def lost(*_args: object) -> int:
            nonlocal broken
            broken += 1
            raise OperationalError("SELECT", {}, ConnectionRefusedError("gone"))

        working = job_runner.deliver_due
        job_runner.deliver_due = lost  # type: ignore[method-assign]
        job_runner.wake()
        for _ in range(200):
            if broken >= 4:
                break
            await asyncio.sleep(0.05)
        job_runner.deliver_due = working  # type: ignore[method-assign]
        await queue(job_runner)
        for _ in range(200):
            if len(mailer.sent) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(mailer.sent) == 2  # back at work once the database answers
        await asyncio.sleep(0.1)  # the round that sent it logs the recovery as it ends
        messages = [r.getMessage() for r in jobs_log]
        assert len([m for m in messages if "cannot reach the database" in m]) == 1  # once per outage
        assert len([m for m in messages if "database is back" in m]) == 1
    finally:
        await job_runner.stop()


# --------------------------------------------------------------------------- housekeeping


async def test_housekeeping_deletes_only_what_is_over(
    job_settings: Settings, runners: list[JobRunner]
) -> None:
    job_runner = runner(runners, job_settings, Recorder())
    now = datetime.now(UTC)
    async with job_runner.sessions() as session:
        user = User(
            username="keeper",
            email="keeper@example.com",
            password_hash=PASSWORD_HASH,
            avatar_url="x",
            confirmed=True,
        )
        session.add(user)
        await session.flush()

        def login(expires: timedelta, revoked: timedelta | None = None) -> UserSession:
            row = UserSession(
                user_id=user.id,
                refresh_token_hash=uuid.uuid4().hex,
                expires_at=now + expires,
                revoked_at=None if revoked is None else now + revoked,
            )
            session.add(row)
            return row

        live = login(timedelta(days=1))
        login(timedelta(seconds=-1))  # expired
        login(timedelta(days=1), revoked=timedelta(minutes=-5))  # logged out
        old_sent = add_mail(session, "password_changed", "a@example.com", username="a")
        old_sent.status, old_sent.sent_at = SENT, now - timedelta(days=7, minutes=1)
        recent_sent = add_mail(session, "password_changed", "b@example.com", username="b")
        recent_sent.status, recent_sent.sent_at = SENT, now - timedelta(days=6)
        old_pending = add_mail(session, "password_changed", "c@example.com", username="c")
        old_pending.created_at = now - timedelta(days=30)
        old_dead = add_mail(session, "password_changed", "d@example.com", username="d")
        old_dead.status, old_dead.created_at = DEAD, now - timedelta(days=30)
        await session.commit()

    counts = await job_runner.housekeep()

    assert counts == {"delivered mails": 1, "sessions": 2}
    async with job_runner.sessions() as session:
        assert list(await session.scalars(select(UserSession.id))) == [live.id]
        kept = set(await session.scalars(select(OutboxMail.recipient)))
    assert kept == {"b@example.com", "c@example.com", "d@example.com"}
    assert await job_runner.housekeep() == {"delivered mails": 0, "sessions": 0}


@pytest.mark.skipif(not ON_POSTGRES, reason="the advisory lock is PostgreSQL's")
async def test_one_runner_housekeeps_at_a_time(job_settings: Settings, runners: list[JobRunner]) -> None:
    first, second = runner(runners, job_settings, Recorder()), runner(runners, job_settings, Recorder())
    async with first.sessions() as session:
        from sqlalchemy import func

        from app.jobs.runner import HOUSEKEEPING_LOCK_KEY

        assert await session.scalar(select(func.pg_try_advisory_xact_lock(HOUSEKEEPING_LOCK_KEY)))
        assert await second.housekeep() is None  # the lock is taken: it skips
    assert await second.housekeep() is not None
