"""The lean access record renders like any record, in every formatter."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime

from app.logs import AccessRecord, JsonFormatter, mask_tokens


def test_the_access_record_renders_in_our_format_and_in_a_standard_one() -> None:
    before = time.time()
    record = AccessRecord("GET", "/api/users/me", 200, 0.001234)
    line = json.loads(JsonFormatter().format(record))
    assert line["logger"] == "app.access"
    assert line["level"] == "INFO"
    assert line["message"] == "GET /api/users/me 200"
    assert (line["method"], line["path"], line["status"], line["duration_ms"]) == (
        "GET",
        "/api/users/me",
        200,
        1.23,
    )
    stamp = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert stamp.tzinfo is not None
    assert abs(stamp.timestamp() - before) < 2
    # pytest's and the standard formatters read every attribute from the record's dict.
    standard = logging.Formatter("%(asctime)s %(levelname)s %(name)s:%(filename)s:%(lineno)d %(message)s")
    assert standard.format(record).endswith("INFO app.access:logs.py:0 GET /api/users/me 200")


def test_the_time_text_keeps_milliseconds_across_seconds() -> None:
    from app.logs import _utc_time

    assert _utc_time(1_700_000_000.9996) == "2023-11-14T22:13:20.999Z"
    assert _utc_time(1_700_000_001.0) == "2023-11-14T22:13:21.000Z"
    assert _utc_time(1_700_000_001.042) == "2023-11-14T22:13:21.042Z"


def test_paths_without_a_token_are_left_alone_and_link_tokens_are_masked() -> None:
    assert mask_tokens("/api/contacts/") == "/api/contacts/"
    assert mask_tokens("/api/auth/confirm_email_change/abc.def") == "/api/auth/confirm_email_change/***"
    assert mask_tokens("/api/auth/confirmed_email/abc") == "/api/auth/confirmed_email/***"
