"""The security audit log through a whole account life (issue 16, item 5).

Every security event of API.md's flows leaves one ``app.audit`` line with the account's id and
the request's id, and no line ever carries a password, a token or a link.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.audit import EVENTS, audit
from app.logs import JsonFormatter
from tests.conftest import SmtpServer

P1, P2, P3 = "first good passphrase", "second good passphrase", "third good passphrase"


def _bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def _login(
    client: AsyncTestClient[Litestar], login: str, password: str, status: int = 200
) -> dict[str, Any]:
    response = await client.post("/api/auth/login", data={"username": login, "password": password})
    assert response.status_code == status, response.text
    return response.json()


def _current_sid(sessions: list[dict[str, Any]]) -> str:
    return next(s["id"] for s in sessions if s["current"])


async def test_a_whole_account_life_is_audited_without_a_secret(
    make_client: Callable[..., AsyncTestClient[Litestar]],
    smtp_server: SmtpServer,
    user_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.audit")
    secrets: list[str] = [P1, P2, P3]
    sink = smtp_server.sink
    async with make_client(**smtp_server.settings) as client:
        admin = await user_factory(role="admin")
        bystander = await user_factory()
        registered = await client.post(
            "/api/auth/register", json={"username": "ada", "email": "ada@example.com", "password": P1}
        )
        assert registered.status_code == 201
        ada = registered.json()["id"]
        [confirm_mail] = await sink.wait_for(1)
        [confirm_link] = sink.links(confirm_mail)
        secrets.append(confirm_link.rsplit("/", 1)[1])
        assert (await client.get(confirm_link)).status_code == 200

        await _login(client, "ada", "not the password", 401)
        await _login(client, "nobody@example.com", P1, 401)
        first = await _login(client, "ada", P1)
        second = await _login(client, "ada@example.com", P1)
        changed = await client.patch(
            "/api/users/me/password",
            json={"current_password": P1, "new_password": P2},
            headers=_bearer(first),
        )
        assert changed.status_code == 204

        third = await _login(client, "ada", P2)
        third_sid = _current_sid((await client.get("/api/users/me/sessions", headers=_bearer(third))).json())
        ended = await client.delete(f"/api/users/me/sessions/{third_sid}", headers=_bearer(first))
        assert ended.status_code == 204
        fourth = await _login(client, "ada", P2)
        assert (await client.delete("/api/users/me/sessions", headers=_bearer(first))).status_code == 204

        assert (
            await client.post("/api/auth/update_password", json={"email": "ada@example.com"})
        ).status_code == 202
        reset_mail = (await sink.wait_for(3))[-1]  # the notice of the change, then the reset link
        [reset_link] = [link for link in sink.links(reset_mail) if "confirm_update_password" in link]
        secrets.append(reset_link.rsplit("/", 1)[1])
        assert (await client.post(reset_link, json={"password": P3})).status_code == 200

        for role in ("admin", "user"):
            response = await client.patch(
                f"/api/users/{ada}/role", json={"role": role}, headers=admin.headers
            )
            assert response.status_code == 200
        last = await _login(client, "ada", P3)
        deleted = await client.request(
            "DELETE", "/api/users/me", json={"password": P3}, headers=_bearer(last)
        )
        assert deleted.status_code == 204
        assert (await client.delete(f"/api/users/{bystander.id}", headers=admin.headers)).status_code == 204
    for tokens in (first, second, third, fourth, last):
        secrets += [tokens["access_token"], tokens["refresh_token"]]

    records = [r for r in caplog.records if r.name == "app.audit"]
    lines = [(r.fields["event"], r.fields["user_id"], r.fields) for r in records]
    events = [event for event, _, _ in lines]
    assert events == [
        "login_failed",  # wrong password
        "login_failed",  # unknown user
        "login",
        "login",
        "password_changed",
        "login",
        "session_ended",
        "login",
        "sessions_ended",
        "password_reset",
        "role_changed",
        "role_changed",
        "login",
        "account_deleted",
        "account_deleted",
    ], lines
    owners = [user_id for _, user_id, _ in lines]
    assert owners[1] is None  # no account matched
    assert set(owners[:1] + owners[2:-1]) == {ada}
    assert owners[-1] == str(bystander.id)
    fields = [f for _, _, f in lines]
    assert fields[0]["reason"] == "password"
    assert fields[6]["session_id"] == third_sid
    assert fields[8]["count"] == "1"
    assert [f["role"] for f in fields[10:12]] == ["admin", "user"]
    assert {f["by"] for f in fields[10:12]} == {str(admin.id)}
    assert fields[13]["by"] == ada  # by the owner
    assert fields[14]["by"] == str(admin.id)
    # Each line carries the id of the request that caused it, and request ids differ.
    request_ids = [r.request_id for r in records]
    assert all(request_ids), request_ids
    assert len(set(request_ids)) == len(records)  # one event per request in this life
    formatter = JsonFormatter()
    for record in records:
        line = formatter.format(record)
        assert f'"request_id":"{record.request_id}"' in line
        for secret in secrets:
            assert secret not in line
        assert not re.search(r"eyJ[\w-]+\.[\w-]+\.[\w-]+", line), line  # no JWT of any kind


def test_an_unknown_event_is_refused_so_the_documented_list_stays_whole() -> None:
    with pytest.raises(ValueError, match="unknown audit event"):
        audit("logged_in", None)
    assert {"login", "login_failed", "account_deleted", "session_ended", "sessions_ended"} <= EVENTS


def test_outside_a_request_a_line_has_no_request_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.audit")
    audit("role_changed", "0190b7a4-0000-7000-8000-000000000000", role="admin", by=None)
    [record] = caplog.records
    assert record.fields == {
        "event": "role_changed",
        "user_id": "0190b7a4-0000-7000-8000-000000000000",
        "role": "admin",
        "by": None,
    }
    assert record.request_id is None
