"""OWASP ASVS 5.0 chapter 6 (authentication): password policy, no enumeration, recovery tokens."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from app.security.tokens import ALGORITHM
from tests.conftest import PASSWORD, SECRET
from tests.security.flows import (
    bearer,
    confirm_in_db,
    login,
    mailed_token,
    new_account,
    register,
    tokens,
)

STRONG = "plum-orbit-canvas-42"
#: Seconds the slow mail server takes per mail.
SLOW_MAIL = 0.3


def _field_named(response, name: str) -> bool:
    return name in str(response.json().get("extra"))


# --------------------------------------------------------------------------- 6.2.x password policy


@pytest.mark.parametrize("length", [0, 1, 7])
async def test_asvs_6_2_1_passwords_shorter_than_8_are_refused(client, length):
    response = await client.post("/api/auth/register", json=new_account("k" * length))
    assert response.status_code == 400, response.text
    assert _field_named(response, "password")


@pytest.mark.parametrize("length", [8, 64, 128])
async def test_asvs_6_2_1_and_6_2_9_passwords_of_8_to_128_are_accepted(client, length):
    password = ("Zq7!" * 40)[:length]
    body = new_account(password)
    await register(client, body)
    await confirm_in_db(client, body["email"])
    assert (await login(client, body["email"], password)).status_code == 200


async def test_asvs_6_2_1_passwords_longer_than_128_are_refused(client):
    response = await client.post("/api/auth/register", json=new_account("Zq7!" * 32 + "x"))
    assert response.status_code == 400, response.text
    assert _field_named(response, "password")


@pytest.mark.parametrize(
    "password",
    [
        "12345678",
        "password",
        "qwertyuiop",
        "iloveyou",
        "Sunshine",
        "PASSWORD1",
        "trustno1",
        "Blink182",
        "Qwaszx12",
        "Stranger",
    ],
)
async def test_asvs_6_2_4_common_passwords_are_refused_whatever_their_case(client, password):
    response = await client.post("/api/auth/register", json=new_account(password))
    assert response.status_code == 400, response.text
    assert _field_named(response, "password")


async def test_asvs_6_2_4_common_passwords_are_refused_on_change_too(client, user):
    response = await client.patch(
        "/api/users/me/password",
        json={"current_password": user.password, "new_password": "password1"},
        headers=user.headers,
    )
    assert response.status_code == 400, response.text


async def test_asvs_6_2_8_no_truncation_passwords_differing_after_byte_72_are_different(client):
    password = "a" * 72 + "-the-part-bcrypt-would-drop"
    body = new_account(password)
    await register(client, body)
    await confirm_in_db(client, body["email"])
    assert (await login(client, body["email"], "a" * 72)).status_code == 401
    assert (await login(client, body["email"], "a" * 72 + "-the-part-bcrypt-would-DROP")).status_code == 401
    assert (await login(client, body["email"], password)).status_code == 200


async def test_asvs_6_2_8_multibyte_passwords_are_not_truncated_at_72_bytes(client):
    password = "ключ" * 10 + "A"  # 41 characters, 81 bytes in UTF-8
    body = new_account(password)
    await register(client, body)
    await confirm_in_db(client, body["email"])
    assert (await login(client, body["email"], "ключ" * 10 + "B")).status_code == 401
    assert (await login(client, body["email"], password)).status_code == 200


async def test_asvs_6_2_8_password_is_verified_exactly_as_received(client):
    password = "  Mixed Case With Spaces  "
    body = new_account(password)
    await register(client, body)
    await confirm_in_db(client, body["email"])
    for variant in (password.strip(), password.lower(), password.upper()):
        assert (await login(client, body["email"], variant)).status_code == 401, variant
    assert (await login(client, body["email"], password)).status_code == 200


async def test_asvs_6_2_3_password_change_needs_the_current_password(client, user):
    response = await client.patch(
        "/api/users/me/password",
        json={"current_password": "not the password", "new_password": STRONG},
        headers=user.headers,
    )
    assert response.status_code == 400, response.text
    assert _field_named(response, "current_password")
    assert (await login(client, user.email, user.password)).status_code == 200
    assert (await login(client, user.email, STRONG)).status_code == 401


# --------------------------------------------------------------------------- 6.3.8 no enumeration


async def _timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    response = await call()
    return time.perf_counter() - started, response


async def _interleaved_medians(calls: dict[str, object], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            seconds, _ = await _timed(call)
            samples[name].append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


async def test_asvs_6_3_8_login_same_answer_and_time_for_unknown_user_and_wrong_password(live_with):
    # A realistic cost, so that skipping the hash for unknown users would show plainly.
    async with live_with(bcrypt_rounds=10) as client:
        body = new_account(STRONG)
        await register(client, body)
        await confirm_in_db(client, body["email"])

        wrong = await login(client, body["email"], "wrong-" + STRONG)
        unknown = await login(client, "nobody-" + body["email"], STRONG)
        unknown_name = await login(client, "nobody_at_all", STRONG)
        assert wrong.status_code == unknown.status_code == unknown_name.status_code == 401
        assert wrong.json() == unknown.json() == unknown_name.json()
        assert wrong.headers.get("www-authenticate") == unknown.headers.get("www-authenticate")

        medians = await _interleaved_medians(
            {
                "wrong password": lambda: login(client, body["email"], "wrong-" + STRONG),
                "unknown user": lambda: login(client, "nobody-" + body["email"], STRONG),
            },
            rounds=7,
        )
    fast, slow = sorted(medians.values())
    assert slow / fast < 1.5, medians


@pytest.fixture
def slow_mail_server(smtp_sink):
    """The SMTP sink, taking 0.3 s per mail: a mail sent before answering would show in the timing."""
    smtp_sink.delay = SLOW_MAIL
    return smtp_sink


async def test_asvs_6_3_8_request_email_same_answer_and_time_whatever_the_account(
    live_with, slow_mail_server, user_factory
):
    unconfirmed = await user_factory(confirmed=False)
    confirmed = await user_factory()
    async with live_with(smtp_host="127.0.0.1", smtp_port=slow_mail_server.port, smtp_tls="none") as client:
        answers = [
            await client.post("/api/auth/request_email", json={"email": email})
            for email in (unconfirmed.email, confirmed.email, "nobody@example.com")
        ]
        assert {r.status_code for r in answers} == {202}
        assert answers[0].json() == answers[1].json() == answers[2].json()

        medians = await _interleaved_medians(
            {
                "unconfirmed": lambda: client.post(
                    "/api/auth/request_email", json={"email": unconfirmed.email}
                ),
                "unknown": lambda: client.post(
                    "/api/auth/request_email", json={"email": "nobody@example.com"}
                ),
            },
            rounds=5,
        )
        await slow_mail_server.wait_for(6)  # the mails did go out, after the answers
    assert abs(medians["unconfirmed"] - medians["unknown"]) < SLOW_MAIL / 3, medians
    assert {m["To"] for m in slow_mail_server.messages} == {unconfirmed.email}


async def test_asvs_6_3_8_update_password_same_answer_and_time_for_unknown_emails(
    live_with, slow_mail_server, user_factory
):
    user = await user_factory()
    async with live_with(smtp_host="127.0.0.1", smtp_port=slow_mail_server.port, smtp_tls="none") as client:
        known = await client.post("/api/auth/update_password", json={"email": user.email})
        unknown = await client.post("/api/auth/update_password", json={"email": "nobody@example.com"})
        assert known.status_code == unknown.status_code == 202
        assert known.json() == unknown.json()

        medians = await _interleaved_medians(
            {
                "known": lambda: client.post("/api/auth/update_password", json={"email": user.email}),
                "unknown": lambda: client.post(
                    "/api/auth/update_password", json={"email": "nobody@example.com"}
                ),
            },
            rounds=5,
        )
        await slow_mail_server.wait_for(6)
    assert abs(medians["known"] - medians["unknown"]) < SLOW_MAIL / 3, medians
    assert {m["To"] for m in slow_mail_server.messages} == {user.email}


# --------------------------------------------------------------------------- 6.4.1 recovery tokens


async def _reset_token(client, sink, email: str) -> str:
    response = await client.post("/api/auth/update_password", json={"email": email})
    assert response.status_code == 202
    return await mailed_token(sink, "confirm_update_password", to=email)


async def test_asvs_6_4_1_reset_token_works_once(mail_client, smtp_sink, user_factory):
    user = await user_factory()
    token = await _reset_token(mail_client, smtp_sink, user.email)
    path = f"/api/auth/confirm_update_password/{token}"
    assert (await mail_client.get(path)).status_code == 200

    assert (await mail_client.post(path, json={"password": STRONG})).status_code == 200
    assert (await mail_client.post(path, json={"password": STRONG + "-again"})).status_code == 400
    assert (await mail_client.get(path)).status_code == 400
    assert (await login(mail_client, user.email, STRONG)).status_code == 200
    assert (await login(mail_client, user.email, STRONG + "-again")).status_code == 401


def _expired_copy(claims: dict) -> str:
    """The same token, expired a minute ago (re-signed with the real key: only the times differ)."""
    past = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
    return jwt.encode(
        {**claims, "exp": past, "iat": past - 600, "nbf": past - 600}, SECRET, algorithm=ALGORITHM
    )


async def test_asvs_6_4_1_reset_token_expires_within_an_hour(mail_client, smtp_sink, user_factory):
    user = await user_factory()
    token = await _reset_token(mail_client, smtp_sink, user.email)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] <= 3600

    expired = _expired_copy(claims)
    path = f"/api/auth/confirm_update_password/{expired}"
    assert (await mail_client.get(path)).status_code == 400
    assert (await mail_client.post(path, json={"password": STRONG})).status_code == 400
    assert (await login(mail_client, user.email, user.password)).status_code == 200


async def test_asvs_6_4_1_reset_token_dies_when_the_password_changes(mail_client, smtp_sink, user_factory):
    user = await user_factory()
    token = await _reset_token(mail_client, smtp_sink, user.email)
    changed = await mail_client.patch(
        "/api/users/me/password",
        json={"current_password": user.password, "new_password": STRONG},
        headers=user.headers,
    )
    assert changed.status_code == 204, changed.text
    path = f"/api/auth/confirm_update_password/{token}"
    assert (await mail_client.get(path)).status_code == 400
    assert (await mail_client.post(path, json={"password": "another-" + STRONG})).status_code == 400


async def test_asvs_6_4_1_an_older_reset_token_dies_when_a_newer_one_is_used(
    mail_client, smtp_sink, user_factory
):
    user = await user_factory()
    first = await _reset_token(mail_client, smtp_sink, user.email)
    await asyncio.sleep(1.1)  # a distinct iat, so the two links differ
    second = await _reset_token(mail_client, smtp_sink, user.email)
    assert first != second
    assert (
        await mail_client.post(f"/api/auth/confirm_update_password/{second}", json={"password": STRONG})
    ).status_code == 200
    assert (
        await mail_client.post(f"/api/auth/confirm_update_password/{first}", json={"password": "x-" + STRONG})
    ).status_code == 400


async def test_asvs_6_4_1_confirmation_token_expires_and_is_bound_to_its_purpose(mail_client, smtp_sink):
    body = new_account(STRONG)
    await register(mail_client, body)
    token = await mailed_token(smtp_sink, "confirmed_email", to=body["email"])
    claims = jwt.decode(token, options={"verify_signature": False})

    expired = _expired_copy(claims)
    assert (await mail_client.get(f"/api/auth/confirmed_email/{expired}")).status_code == 400
    # A confirmation token is not a reset token, and the reverse.
    assert (await mail_client.get(f"/api/auth/confirm_update_password/{token}")).status_code == 400
    assert (await login(mail_client, body["email"], STRONG)).status_code == 403  # still unconfirmed

    assert (await mail_client.get(f"/api/auth/confirmed_email/{token}")).status_code == 200
    assert (await login(mail_client, body["email"], STRONG)).status_code == 200


async def test_asvs_6_4_1_recovery_tokens_are_refused_as_bearer_and_at_refresh(
    mail_client, smtp_sink, user_factory
):
    user = await user_factory()
    token = await _reset_token(mail_client, smtp_sink, user.email)
    assert (await mail_client.get("/api/users/me", headers=bearer(token))).status_code == 401
    assert (
        await mail_client.post("/api/auth/refresh_token", json={"refresh_token": token})
    ).status_code == 401


async def test_asvs_6_2_2_reset_sets_a_working_password(mail_client, smtp_sink, user_factory):
    user = await user_factory()
    token = await _reset_token(mail_client, smtp_sink, user.email)
    response = await mail_client.post(f"/api/auth/confirm_update_password/{token}", json={"password": STRONG})
    assert response.status_code == 200, response.text
    assert (await tokens(mail_client, user.email, STRONG))["token_type"] == "bearer"
    assert (await login(mail_client, user.email, PASSWORD)).status_code == 401
