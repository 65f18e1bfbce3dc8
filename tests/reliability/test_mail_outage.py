"""Fault: the SMTP server is unreachable when a mail is due (real sockets, a real SMTP server)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from tests.conftest import PASSWORD
from tests.reliability.harness import capture_all_logs
from tests.reliability.services import SmtpSink, free_port


def _registration() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"username": f"mailfault_{tag}", "email": f"mailfault-{tag}@example.com", "password": PASSWORD}


async def test_smtp_unreachable_registration_still_201_mail_retried_and_failure_logged(serve_with):
    port = free_port()  # nothing listens there: every connection is refused
    async with serve_with(
        smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none", mail_attempts=3, mail_retry_seconds=0.05
    ) as client:
        with capture_all_logs() as logs:
            body = _registration()
            response = await client.post("/api/auth/register", json=body)
            assert response.status_code == 201, response.text
            assert response.json()["email"] == body["email"]
            for _ in range(100):  # the mail is a background task; give it its retries
                if any(r.levelno >= logging.ERROR and r.name.startswith("app.mail") for r in logs.records):
                    break
                await asyncio.sleep(0.05)
    mail_records = [r for r in logs.records if r.name.startswith("app.mail")]
    retries = [r for r in mail_records if r.levelno == logging.WARNING]
    failures = [r for r in mail_records if r.levelno >= logging.ERROR]
    assert len(retries) == 2, [r.getMessage() for r in mail_records]  # attempts 1 and 2 failed, then retried
    assert len(failures) == 1, [r.getMessage() for r in mail_records]
    assert "3 attempts" in failures[0].getMessage()


async def test_smtp_back_before_the_retry_delivers_the_mail(serve_with):
    sink = SmtpSink()  # its port is free: the first attempt is refused
    async with serve_with(
        smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="none", mail_attempts=3, mail_retry_seconds=1.0
    ) as client:

        async def server_comes_back() -> None:
            await asyncio.sleep(0.3)
            sink.start()

        comeback = asyncio.create_task(server_comes_back())
        try:
            with capture_all_logs() as logs:
                body = _registration()
                response = await client.post("/api/auth/register", json=body)
                assert response.status_code == 201, response.text
                await comeback
                await sink.wait_for(1, timeout=10)
        finally:
            sink.stop()
    assert sink.messages[0]["To"] == body["email"]
    mail_records = [r for r in logs.records if r.name.startswith("app.mail")]
    assert [r.levelno for r in mail_records].count(logging.WARNING) == 1  # the refused first attempt
    assert not [r for r in mail_records if r.levelno >= logging.ERROR]
