"""Fixtures of the security tests: the reliability suite's in-loop client, and a client whose
mails go to a real SMTP server (so tests read links from mails, as a user would)."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.reliability.conftest import client, in_app_loop, live_with, serve_with, smtp_sink
from tests.reliability.harness import AppClient
from tests.reliability.services import SmtpSink

__all__ = ["client", "in_app_loop", "live_with", "mail_client", "serve_with", "smtp_sink"]


@pytest.fixture
async def mail_client(serve_with: Any, smtp_sink: SmtpSink) -> AsyncIterator[AppClient]:
    """A client of an app that sends its mails to :func:`smtp_sink`."""
    async with serve_with(
        smtp_host="127.0.0.1", smtp_port=smtp_sink.port, smtp_tls="none", mail_retry_seconds=0.05
    ) as c:
        yield c
