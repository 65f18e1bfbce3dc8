"""Mail: the SMTP and log senders, the messages, and that a mail failure never fails the
request that caused it (the mail waits in the outbox)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from email.message import EmailMessage

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.config import Settings
from app.jobs.models import OutboxMail
from app.jobs.outbox import ACCOUNT_REQUEST
from app.mail import messages
from app.mail.senders import LogMailer, SmtpMailer, make_mailer
from tests.conftest import SmtpServer
from tests.outbox import wait_for_rows


def sample(to: str = "ada@example.com") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Contacts API <no-reply@contacts.local>"
    message["To"] = to
    message["Subject"] = "Hello"
    message.set_content("plain body http://example.com/x")
    message.add_alternative("<p>html body</p>", subtype="html")
    return message


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------- senders


def test_make_mailer_follows_the_settings(settings: Settings) -> None:
    assert isinstance(make_mailer(settings), LogMailer)
    smtp = make_mailer(
        msgspec.structs.replace(
            settings,
            smtp_host="mail.local",
            smtp_port=465,
            smtp_tls="ssl",
            smtp_username="u",
            smtp_password="p",
        )
    )
    assert isinstance(smtp, SmtpMailer)
    assert (smtp.host, smtp.port, smtp.tls, smtp.username, smtp.password) == (
        "mail.local",
        465,
        "ssl",
        "u",
        "p",
    )


def test_the_log_sender_in_production_warns(settings: Settings, mail_log: Records) -> None:
    assert isinstance(make_mailer(msgspec.structs.replace(settings, app_env="production")), LogMailer)
    (record,) = mail_log.records
    assert record.levelname == "WARNING"
    assert "SMTP_HOST" in record.getMessage()
    make_mailer(settings)
    assert len(mail_log.records) == 1  # not in development or tests


async def test_smtp_mailer_delivers_to_a_real_server(smtp_server: SmtpServer) -> None:
    mailer = SmtpMailer(smtp_server.host, smtp_server.port, tls="none")

    await mailer.send(sample())

    (received,) = await smtp_server.sink.wait_for(1)
    assert received["To"] == "ada@example.com"
    assert smtp_server.sink.text(received).startswith("plain body")
    assert smtp_server.sink.html(received).startswith("<p>html body")


async def test_smtp_mailer_raises_when_the_server_is_gone() -> None:
    mailer = SmtpMailer("127.0.0.1", closed_port(), tls="none", timeout=2)
    with pytest.raises(Exception):  # noqa: B017, PT011 - aiosmtplib's connection error
        await mailer.send(sample())


class Records(logging.Handler):
    """Collects the records of one logger (the app's loggers do not propagate)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def mail_log() -> Iterator[Records]:
    logger = logging.getLogger("app.mail")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_log_mailer_writes_the_mail_to_the_app_mail_logger(mail_log: Records) -> None:
    await LogMailer().send(sample())

    (record,) = mail_log.records
    assert record.levelno == logging.INFO
    assert "ada@example.com" in record.getMessage()
    assert "http://example.com/x" in record.getMessage()


@pytest.fixture
def jobs_log() -> Iterator[Records]:
    logger = logging.getLogger("app.jobs")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# --------------------------------------------------------------------------- outage
# Retries, backoff and dead mails are the job runner's: tests/unit/test_jobs.py.


async def test_a_mail_outage_never_fails_the_request(
    make_client: Callable[..., AsyncTestClient[Litestar]], jobs_log: Records, settings: Settings
) -> None:
    overrides = {"smtp_host": "127.0.0.1", "smtp_port": closed_port(), "smtp_tls": "none"}
    async with make_client(**overrides, mail_retry_seconds=60) as client:
        response = await client.post(
            "/api/auth/register",
            json={"username": "ada", "email": "ada@example.com", "password": "a long enough passphrase"},
        )
        assert response.status_code == 201
        again = await client.post("/api/auth/request_email", json={"email": "ada@example.com"})
        assert again.status_code == 202

        def mails(rows: list[OutboxMail]) -> list[OutboxMail]:
            return [r for r in rows if r.kind != ACCOUNT_REQUEST]  # the re-send request itself

        rows = mails(
            await wait_for_rows(
                settings, lambda rows: len(mails(rows)) == 2 and all(r.attempts for r in rows)
            )
        )

    # Both mails wait in the outbox for the server to come back; each failure was logged once.
    assert [(r.kind, r.status, r.recipient) for r in rows] == [
        ("confirm_email", "pending", "ada@example.com")
    ] * 2
    assert all("ConnectionRefused" in (r.last_error or "") or "connect" in (r.last_error or "") for r in rows)
    failures = [r.getMessage() for r in jobs_log.records if r.levelname == "WARNING"]
    assert len(failures) == 2
    assert all("attempt 1 failed" in message for message in failures)


# --------------------------------------------------------------------------- messages


def test_messages_have_text_and_html_with_public_links(settings: Settings) -> None:
    settings = msgspec.structs.replace(settings, public_base_url="https://contacts.example.org/")
    confirm = messages.confirm_email(settings, to="ada@example.com", username="ada", token="T0K")
    reset = messages.reset_password(settings, to="ada@example.com", username="ada", token="R3S")
    changed = messages.password_changed(settings, to="ada@example.com", username="ada")

    for mail in (confirm, reset, changed):
        assert mail["From"] == settings.mail_from
        assert mail["To"] == "ada@example.com"
        assert mail["Message-ID"]
        assert mail.get_body(("plain",)) is not None
        assert mail.get_body(("html",)) is not None
    confirm_link = "https://contacts.example.org/api/auth/confirmed_email/T0K"
    reset_link = "https://contacts.example.org/api/auth/confirm_update_password/R3S"
    assert confirm_link in confirm.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f'href="{confirm_link}"' in confirm.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert reset_link in reset.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "30 minutes" in reset.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_html_mails_escape_user_data(settings: Settings) -> None:
    mail = messages.confirm_email(settings, to="ada@example.com", username="<b>ada</b>", token="T")

    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<b>ada</b>" not in html
    assert "&lt;b&gt;ada&lt;/b&gt;" in html
