"""The lean access record renders like any record, in every formatter."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime
from typing import Any

import pytest

from app import logs
from app.logs import AccessRecord, JsonFormatter, RequestLogMiddleware, configure_logging, mask_tokens


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


async def _serve(middleware: Any, path: str, request_id: str) -> None:
    async def app(_scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_message: Any) -> None:
        return None

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [(b"x-request-id", request_id.encode())],
    }
    await middleware.__class__(app)(scope, receive, send)


async def test_alone_on_stderr_the_access_lines_are_written_together_and_read_like_records(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging("INFO", "json")
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
    # What production has: our handler alone (pytest's capture handlers taken away here).
    monkeypatch.setattr(root, "handlers", ours)
    queued: list[logs.AccessEntry] = []
    add = logs._access_lines.add
    monkeypatch.setattr(logs._access_lines, "add", lambda entry: (queued.append(entry), add(entry)))
    capsys.readouterr()
    await asyncio.gather(*(_serve(RequestLogMiddleware(None), f"/api/x/{n}", f"req-{n}") for n in range(3)))
    assert capsys.readouterr().err == ""  # queued, not written yet
    await asyncio.sleep(logs.ACCESS_FLUSH_SECONDS * 2)  # then written together
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["request_id"] for line in lines] == ["req-0", "req-1", "req-2"]
    assert [json.loads(logs._access_json(*entry)) for entry in queued] == lines  # by the batch, not a handler
    slow = json.loads(JsonFormatter().format(AccessRecord("GET", "/api/x/0", 204, 0.0)))
    for line in lines:
        assert line.keys() == slow.keys() | {"request_id"}
        assert (line["logger"], line["level"], line["status"]) == ("app.access", "INFO", 204)
        assert line["message"] == f"GET {line['path']} 204"
    # A JWT-shaped path is masked on this path too.
    await _serve(RequestLogMiddleware(None), "/eyJhbGciOi.eyJzdWIiOi.c2ln", "req-jwt")
    await logs.flush_access_lines()  # what shutdown does: nothing queued is lost
    written = capsys.readouterr().err
    assert json.loads(written)["request_id"] == "req-jwt"
    assert "eyJ" not in written


async def test_anything_else_listening_gets_the_access_record(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging("INFO", "json")
    caplog.set_level(logging.INFO, logger="app.access")
    await _serve(RequestLogMiddleware(None), "/api/y", "req-y")
    assert not logs._access_lines.entries
    (record,) = [r for r in caplog.records if r.name == "app.access"]
    assert isinstance(record, AccessRecord)
    assert record.fields["path"] == "/api/y"
