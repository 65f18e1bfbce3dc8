"""One log format: every line a server prints is one JSON object with the expected fields, no token."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import httpx
import pytest

from app.logs import configure_logging
from tests.conftest import SmtpServer
from tests.integration.test_server_command import (  # noqa: F401
    NEW_PASSWORD,
    _account_life,
    readme_run_command,
    serve,
    server_env,
)

FIELDS = {"time", "level", "logger", "message"}


def _json_lines(output: str) -> list[dict]:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the server printed nothing"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(record, dict), line
        assert record.keys() >= FIELDS, line
        assert record["time"].endswith("Z") and "T" in record["time"], line
        records.append(record)
    return records


def _contacts_flow(base_url: str, email: str, password: str) -> list[str]:
    """Log in and use the contacts API; return the tokens seen."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        login = http.post("/api/auth/login", data={"username": email, "password": password})
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = http.post(
            "/api/contacts/",
            json={
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "ada@example.com",
                "phone_number": "+380501234567",
                "birthday": "1815-12-10",
            },
            headers=headers,
        )
        assert created.status_code == 201, created.text
        assert http.get(f"/api/contacts/{created.json()['id']}", headers=headers).status_code == 200
        assert http.get("/api/contacts/", params={"q": "ada"}, headers=headers).status_code == 200
        assert http.get("/api/users/me", headers=headers).status_code == 200
        assert http.get("/api/contacts/", headers={"Authorization": "Bearer nope"}).status_code == 401
    return [login.json()["access_token"], login.json()["refresh_token"]]


@pytest.mark.parametrize("how", ["readme", "bare uvicorn"])
def test_every_line_of_an_account_life_is_json_without_tokens(
    how: str,
    server_env: dict[str, str],  # noqa: F811
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    port = int(server_env["PORT"])
    command = (
        readme_run_command()
        if how == "readme"
        else [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    )
    with serve(command, server_env, port, tmp_path) as server:
        secrets = _account_life(server, smtp_server)
        secrets += _contacts_flow(server.base_url, "reader@example.com", NEW_PASSWORD)
    output = server.log()
    records = _json_lines(output)
    loggers = {r["logger"] for r in records}
    assert "uvicorn.error" in loggers  # the server's own lines: "Started server process" ...
    access_logger = "app.access" if how == "readme" else "uvicorn.access"
    access = [r for r in records if r["logger"] == access_logger]
    assert any("/api/contacts" in r["message"] for r in access)
    if how == "readme":
        for line in access:
            assert line["request_id"] and line["status"] and line["method"] and line["path"], line
            assert isinstance(line["duration_ms"], float | int)
        paths = {line["path"] for line in access}
        assert "/api/auth/confirm_update_password/***" in paths
    for secret in [*secrets, NEW_PASSWORD, "correct horse battery staple"]:
        assert secret not in output


def test_log_lines_inside_a_request_carry_its_id(
    server_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    port = int(server_env["PORT"])
    server_env["LOG_LEVEL"] = "DEBUG"
    with serve(readme_run_command(), server_env, port, tmp_path) as server:
        answer = httpx.post(
            f"{server.base_url}/api/auth/login",
            data={"username": "nobody@example.com", "password": "wrong password 1"},
            headers={"X-Request-ID": "trace-me-42"},
        )
        assert answer.status_code == 401
    records = _json_lines(server.log())
    mine = [r for r in records if r.get("request_id") == "trace-me-42"]
    assert {r["logger"] for r in mine} >= {"app.access"}
    # Lines outside any request have no id.
    assert any("request_id" not in r for r in records if r["logger"] == "uvicorn.error")


def test_console_format_is_readable(
    server_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    port = int(server_env["PORT"])
    server_env["LOG_FORMAT"] = "console"
    with serve(readme_run_command(), server_env, port, tmp_path) as server:
        httpx.get(f"{server.base_url}/api/healthchecker", headers={"X-Request-ID": "look-here"})
    line = next(line for line in server.log().splitlines() if "look-here" in line)
    assert not line.startswith("{")
    assert " INFO " in line and "app.access [look-here] GET /api/healthchecker 200" in line


@pytest.mark.parametrize("name", ["sqlalchemy.engine", "asyncpg", "app.mail", "aiosmtplib", "litestar"])
def test_library_loggers_share_the_format_and_the_masking(name: str, capsys: pytest.CaptureFixture) -> None:
    configure_logging("INFO", "json")
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    logging.getLogger(name).warning(
        "failed on /api/auth/confirmed_email/%s with %s", "abc.def-ghi", token, exc_info=ValueError(token)
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    record = json.loads(line)
    assert record["logger"] == name
    assert record["level"] == "WARNING"
    assert record["message"] == "failed on /api/auth/confirmed_email/*** with ***"
    assert token not in line and "abc.def-ghi" not in line
    assert "ValueError" in record["exception"]


def test_the_development_mail_log_keeps_its_links(capsys: pytest.CaptureFixture) -> None:
    from app.logs import UNMASKED

    configure_logging("INFO", "json")
    logging.getLogger("app.mail").info(
        "mail to a@b: link http://x/api/auth/confirmed_email/T0K3N", extra=UNMASKED
    )
    assert "T0K3N" in json.loads(capsys.readouterr().err)["message"]


async def test_answers_of_the_auth_middleware_and_the_router_are_logged_with_an_id(
    make_client, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="app.access")
    form = {"username": "nobody@example.com", "password": "wrong password 1"}
    requests = [
        ("POST", "/api/auth/login", 401),
        ("POST", "/api/auth/login", 429),  # the rate limit middleware's answer
        ("GET", "/api/users/me", 401),  # the auth middleware's answer
        ("GET", "/api/nowhere", 404),  # the router's answer
    ]
    async with make_client(rate_limit_enabled=True, rate_limit_auth_per_minute=1) as client:
        for n, (method, path, status) in enumerate(requests):
            response = await client.request(method, path, data=form, headers={"X-Request-ID": f"id-{n}"})
            assert response.status_code == status
            assert response.headers.get("x-request-id") == f"id-{n}", path
    access = [r.fields for r in caplog.records if r.name == "app.access"]
    assert [(a["method"], a["path"], a["status"]) for a in access] == requests
