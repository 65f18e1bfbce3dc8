"""Small steps of the account flows, through the HTTP API, shared by the security tests."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from sqlalchemy import update

from app.users.models import User
from tests.reliability.services import SmtpSink

_LINK = re.compile(r"/api/auth/(confirmed_email|confirm_update_password)/([A-Za-z0-9._~%-]+)")


def new_account(password: str, **overrides: Any) -> dict[str, str]:
    """A registration body with a fresh username and email."""
    tag = uuid.uuid4().hex[:10]
    return {"username": f"sec_{tag}", "email": f"sec-{tag}@example.com", "password": password, **overrides}


async def register(client: Any, body: dict[str, str]) -> dict[str, Any]:
    """Register ``body`` and return the created user (asserts ``201``)."""
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def confirm_in_db(client: Any, email: str) -> None:
    """Mark an account confirmed directly (for tests that are not about confirmation)."""
    async with client.app.state.db_config.get_session() as session:
        await session.execute(update(User).where(User.email == email.lower()).values(confirmed=True))
        await session.commit()


async def login(client: Any, username: str, password: str) -> Any:
    """``POST /api/auth/login`` (form), the response."""
    return await client.post("/api/auth/login", data={"username": username, "password": password})


async def tokens(client: Any, username: str, password: str) -> dict[str, Any]:
    """Log in and return the tokens (asserts ``200``)."""
    response = await login(client, username, password)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(access_token: str) -> dict[str, str]:
    """The Authorization header for ``access_token``."""
    return {"Authorization": f"Bearer {access_token}"}


async def mailed_token(sink: SmtpSink, kind: str, to: str | None = None, timeout: float = 15.0) -> str:
    """The token of the next mailed link of ``kind`` (``confirmed_email`` or ``confirm_update_password``).

    The job runner sends mails after the answer: this waits for them. Each call takes the next
    such link in arrival order (per sink, kind and recipient), so two reset requests in a row
    give two different tokens.
    """
    # The links handed out so far live on the sink: a new sink (a new test) starts afresh.
    taken = sink.__dict__.setdefault("_mailed_tokens", {}).setdefault((kind, to), [])
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [token for message in sink.messages for token in _tokens_of(message, kind, to)]
        if len(found) > len(taken):
            taken.append(found[len(taken)])
            return taken[-1]
        if asyncio.get_running_loop().time() > deadline:
            msg = f"no mailed {kind} link (to {to}) within {timeout}s"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)


def _tokens_of(message: Any, kind: str, to: str | None) -> list[str]:
    if to is not None and message["To"] != to:
        return []
    for part in message.walk():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        text = payload.decode(part.get_content_charset() or "utf-8")
        found = [token for found_kind, token in _LINK.findall(text) if found_kind == kind]
        if found:
            return found[:1]  # the text and the HTML part carry the same link
    return []
