"""OWASP ASVS 5.0 chapter 7 (session management): new tokens per login, logout, ending sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import jwt
from sqlalchemy import update

from app.users.models import UserSession
from tests.security.flows import bearer, mailed_token, tokens

ME = "/api/users/me"
NEW_PASSWORD = "violet-harbour-lantern-7"


def _sid(access_token: str) -> str:
    return jwt.decode(access_token, options={"verify_signature": False})["sid"]


async def _refresh(client, refresh_token: str):
    return await client.post("/api/auth/refresh_token", json={"refresh_token": refresh_token})


async def test_asvs_7_2_4_every_login_makes_new_tokens_and_a_new_session(client, user):
    first = await tokens(client, user.email, user.password)
    second = await tokens(client, user.username, user.password)
    assert first["access_token"] != second["access_token"]
    assert first["refresh_token"] != second["refresh_token"]
    assert _sid(first["access_token"]) != _sid(second["access_token"])
    # Both sessions are live and independent.
    for pair in (first, second):
        assert (await client.get(ME, headers=bearer(pair["access_token"]))).status_code == 200


async def test_asvs_7_2_4_refresh_rotates_and_the_old_refresh_token_dies(client, user):
    first = await tokens(client, user.email, user.password)
    rotated = await _refresh(client, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["refresh_token"] != first["refresh_token"]
    # Re-use of the dead token is theft: it fails, and ends the whole family.
    assert (await _refresh(client, first["refresh_token"])).status_code == 401
    assert (await _refresh(client, rotated.json()["refresh_token"])).status_code == 401


async def test_asvs_7_4_1_logout_ends_that_session_at_once(client, user):
    ended = await tokens(client, user.email, user.password)
    other = await tokens(client, user.email, user.password)
    response = await client.post(
        "/api/auth/logout",
        json={"refresh_token": ended["refresh_token"]},
        headers=bearer(ended["access_token"]),
    )
    assert response.status_code == 204, response.text

    assert (await client.get(ME, headers=bearer(ended["access_token"]))).status_code == 401
    assert (await _refresh(client, ended["refresh_token"])).status_code == 401
    # Only that session: the other one goes on.
    assert (await client.get(ME, headers=bearer(other["access_token"]))).status_code == 200
    assert (await _refresh(client, other["refresh_token"])).status_code == 200


async def test_asvs_7_4_1_logout_cannot_end_another_users_session(client, user_factory):
    alice, bob = await user_factory(), await user_factory()
    alices = await tokens(client, alice.email, alice.password)
    bobs = await tokens(client, bob.email, bob.password)
    response = await client.post(
        "/api/auth/logout",
        json={"refresh_token": alices["refresh_token"]},
        headers=bearer(bobs["access_token"]),
    )
    assert response.status_code in (401, 404), response.text
    assert (await client.get(ME, headers=bearer(alices["access_token"]))).status_code == 200
    assert (await _refresh(client, alices["refresh_token"])).status_code == 200


async def test_asvs_7_4_3_password_change_ends_the_other_sessions_and_keeps_this_one(client, user):
    this = await tokens(client, user.email, user.password)
    other = await tokens(client, user.email, user.password)
    response = await client.patch(
        "/api/users/me/password",
        json={"current_password": user.password, "new_password": NEW_PASSWORD},
        headers=bearer(this["access_token"]),
    )
    assert response.status_code == 204, response.text

    assert (await client.get(ME, headers=bearer(other["access_token"]))).status_code == 401
    assert (await _refresh(client, other["refresh_token"])).status_code == 401
    assert (await client.get(ME, headers=user.headers)).status_code == 401  # the fixture's own session too
    assert (await client.get(ME, headers=bearer(this["access_token"]))).status_code == 200
    assert (await _refresh(client, this["refresh_token"])).status_code == 200


async def test_asvs_7_4_3_password_reset_ends_every_session(mail_client, smtp_sink, user_factory):
    user = await user_factory()
    live = await tokens(mail_client, user.email, user.password)
    assert (
        await mail_client.post("/api/auth/update_password", json={"email": user.email})
    ).status_code == 202
    token = await mailed_token(smtp_sink, "confirm_update_password", to=user.email)
    response = await mail_client.post(
        f"/api/auth/confirm_update_password/{token}", json={"password": NEW_PASSWORD}
    )
    assert response.status_code == 200, response.text

    for access in (live["access_token"], user.headers["Authorization"].split()[1]):
        assert (await mail_client.get(ME, headers=bearer(access))).status_code == 401
    assert (await _refresh(mail_client, live["refresh_token"])).status_code == 401
    # And the user is told.
    assert any(m["To"] == user.email and "was changed" in m["Subject"] for m in smtp_sink.messages)


async def test_asvs_7_4_1_logout_with_a_rotated_refresh_token_is_refused_and_changes_nothing(client, user):
    # Issue 19.9: an old, already rotated refresh token still ended the session (204).
    first = await tokens(client, user.email, user.password)
    rotated = await _refresh(client, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    current = rotated.json()
    response = await client.post(
        "/api/auth/logout",
        json={"refresh_token": first["refresh_token"]},
        headers=bearer(current["access_token"]),
    )
    assert response.status_code == 401, response.text
    # The session lives on with its current tokens.
    assert (await client.get(ME, headers=bearer(current["access_token"]))).status_code == 200
    assert (await _refresh(client, current["refresh_token"])).status_code == 200


async def test_asvs_7_4_1_logout_of_an_ended_session_is_refused(client, user):
    pair = await tokens(client, user.email, user.password)
    other = await tokens(client, user.email, user.password)
    body = {"refresh_token": pair["refresh_token"]}
    assert (
        await client.post("/api/auth/logout", json=body, headers=bearer(pair["access_token"]))
    ).status_code == 204
    again = await client.post("/api/auth/logout", json=body, headers=bearer(other["access_token"]))
    assert again.status_code == 401, again.text
    assert (await client.get(ME, headers=bearer(other["access_token"]))).status_code == 200


async def _session_started(client, session_id: str, started_at: datetime) -> None:
    """Move a session's start into the past, as if the clock had run on."""
    async with client.app.state.db_config.get_session() as session:
        await session.execute(
            update(UserSession).where(UserSession.id == UUID(session_id)).values(created_at=started_at)
        )
        await session.commit()


def _exp(token: str) -> datetime:
    return datetime.fromtimestamp(jwt.decode(token, options={"verify_signature": False})["exp"], UTC)


async def test_asvs_7_3_2_a_session_ends_by_age_however_often_it_is_refreshed(client, user):
    # Issue 19.10: every rotation gave the same session 7 more days, so an active session never ended.
    pair = await tokens(client, user.email, user.password)
    await _session_started(
        client, _sid(pair["access_token"]), datetime.now(UTC) - timedelta(days=30, seconds=1)
    )
    response = await _refresh(client, pair["refresh_token"])
    assert response.status_code == 401, response.text
    # The session is over: its access token stops too, and the user logs in again.
    assert (await client.get(ME, headers=bearer(pair["access_token"]))).status_code == 401
    assert (
        await client.get(
            ME, headers=bearer((await tokens(client, user.email, user.password))["access_token"])
        )
    ).status_code == 200


async def test_asvs_7_3_2_no_token_outlives_its_session(client, user):
    pair = await tokens(client, user.email, user.password)
    started = datetime.now(UTC) - timedelta(days=30) + timedelta(hours=1)
    await _session_started(client, _sid(pair["access_token"]), started)
    response = await _refresh(client, pair["refresh_token"])
    assert response.status_code == 200, response.text
    end = started + timedelta(days=30)
    renewed = response.json()
    # A second of slack: JWT expiries are whole seconds.
    assert _exp(renewed["refresh_token"]) <= end + timedelta(seconds=1)
    assert _exp(renewed["access_token"]) <= end + timedelta(seconds=1)
    assert renewed["expires_in"] <= 15 * 60


async def test_asvs_7_3_2_a_short_session_lifetime_bounds_the_first_refresh_token(serve_with, user_factory):
    async with serve_with(session_max_days=1) as short:
        user = await user_factory()
        pair = await tokens(short, user.email, user.password)
        assert _exp(pair["refresh_token"]) <= datetime.now(UTC) + timedelta(days=1, seconds=1)
