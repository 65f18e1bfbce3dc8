"""The audit log writes one structured line per event and knows only its documented events."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from app.audit import audit
from app.logs import JsonFormatter


def test_an_audit_line_carries_the_event_and_the_user(caplog: pytest.LogCaptureFixture) -> None:
    user_id = uuid.uuid4()
    session_id = uuid.uuid4()
    with caplog.at_level(logging.INFO, logger="app.audit"):
        audit("session_ended", user_id, session_id=session_id)
    (record,) = [r for r in caplog.records if r.name == "app.audit"]
    line = json.loads(JsonFormatter().format(record))
    assert line["logger"] == "app.audit"
    assert line["event"] == "session_ended"
    assert line["user_id"] == str(user_id)
    assert line["session_id"] == str(session_id)


def test_an_unknown_event_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        audit("password_was", None)
