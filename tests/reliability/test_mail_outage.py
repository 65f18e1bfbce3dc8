"""Fault: the SMTP server is unreachable when a mail is due (real sockets, a real SMTP server).

Mails wait in the outbox (a database row) while the server is down: nothing is lost, the
request is answered as usual, and each mail goes out exactly once when the server returns.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from tests.conftest import PASSWORD
from tests.outbox import wait_for_rows
from tests.reliability.harness import capture_all_logs
from tests.reliability.services import SmtpSink, free_port


def _registration() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"username": f"mailfault_{tag}", "email": f"mailfault-{tag}@example.com", "password": PASSWORD}


async def test_smtp_unreachable_registration_still_201_mail_kept_pending_and_failures_logged(
    serve_with, settings
):
    port = free_port()  # nothing listens there: every connection is refused
    async with serve_with(
        smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none", mail_retry_seconds=0.05
    ) as client:
        with capture_all_logs() as logs:
            body = _registration()
            response = await client.post("/api/auth/register", json=body)
            assert response.status_code == 201, response.text
            assert response.json()["email"] == body["email"]
            (row,) = await wait_for_rows(settings, lambda rows: len(rows) == 1 and rows[0].attempts >= 3)
    assert (row.recipient, row.status) == (body["email"], "pending")  # retried, never given up
    assert row.last_error
    job_records = [r for r in logs.records if r.name.startswith("app.jobs")]
    retries = [r for r in job_records if r.levelno == logging.WARNING and "attempt" in r.getMessage()]
    assert len(retries) >= 3, [r.getMessage() for r in job_records]
    assert not [r for r in job_records if r.levelno >= logging.ERROR]
    assert all(body["email"] not in r.getMessage() for r in job_records)  # ids and kinds, not addresses


async def test_smtp_back_after_the_outage_delivers_each_mail_once(serve_with, settings):
    sink = SmtpSink()  # its port is free: the first attempts are refused
    async with serve_with(
        smtp_host="127.0.0.1", smtp_port=sink.port, smtp_tls="none", mail_retry_seconds=0.2
    ) as client:
        try:
            with capture_all_logs() as logs:
                bodies = [_registration() for _ in range(3)]
                for body in bodies:
                    response = await client.post("/api/auth/register", json=body)
                    assert response.status_code == 201, response.text
                await wait_for_rows(settings, lambda rows: len(rows) == 3 and all(r.attempts for r in rows))
                sink.start()
                await sink.wait_for(3, timeout=15)
                rows = await wait_for_rows(settings, lambda rows: all(r.status == "sent" for r in rows))
                await asyncio.sleep(1.0)  # long enough for a duplicate to show up
        finally:
            sink.stop()
    assert sorted(m["To"] for m in sink.messages) == sorted(b["email"] for b in bodies)
    assert len({m["Message-ID"] for m in sink.messages}) == 3
    assert all(r.sent_at is not None for r in rows)
    job_records = [r for r in logs.records if r.name.startswith("app.jobs")]
    assert not [r for r in job_records if r.levelno >= logging.ERROR]
