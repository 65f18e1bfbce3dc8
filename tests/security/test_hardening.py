"""Hardening: security headers on every response, CORS only from the settings, and no secret
in any log line of a whole account life cycle (ASVS 5.0 V3.4 headers, V3.4.2 CORS, V16.2.5 logs)."""

from __future__ import annotations

import logging

import jwt
from sqlalchemy import select

from app.users.models import User, UserSession
from tests.reliability.harness import capture_all_logs
from tests.security.flows import bearer, mailed_token, new_account, register, tokens

HTML = {"Accept": "text/html"}
#: Loggers of the test's own tools, not of the service: the HTTP client that drives it and the
#: SMTP server (aiosmtpd) that receives its mail, which logs what it receives at DEBUG.
TEST_SIDE_LOGGERS = ("httpx", "httpcore", "mail.log", "aiosmtpd")
#: Loggers whose DEBUG records trace the rows a database returns.
DRIVER_TRACES = ("sqlalchemy.engine", "aiosqlite", "asyncpg")


async def _sample_responses(client, user) -> list[tuple[str, object]]:
    """One response of every kind the service sends: JSON, errors, HTML pages, the API UI, files."""
    calls = [
        ("health 200", client.get("/api/healthchecker")),
        ("me 200", client.get("/api/users/me", headers=user.headers)),
        ("me 401", client.get("/api/users/me")),
        ("admin 403", client.get("/api/users", headers=user.headers)),
        ("unknown route 404", client.get("/api/nope")),
        ("wrong method 405", client.delete("/api/healthchecker")),
        (
            "broken json 400",
            client.post("/api/auth/register", content=b"{", headers={"Content-Type": "application/json"}),
        ),
        (
            "wrong content type 415",
            client.post("/api/auth/register", content=b"x", headers={"Content-Type": "text/plain"}),
        ),
        ("openapi json", client.get("/schema/openapi.json")),
        ("api ui html", client.get("/schema")),
        ("confirm page html", client.get("/api/auth/confirmed_email/not-a-token", headers=HTML)),
        ("reset page html", client.get("/api/auth/confirm_update_password/not-a-token", headers=HTML)),
        ("media 404", client.get("/media/nothing-here.png")),
    ]
    return [(name, await call) for name, call in calls]


async def test_asvs_3_4_security_headers_on_every_response(client, user):
    for name, response in await _sample_responses(client, user):
        headers = response.headers
        assert headers.get("x-content-type-options") == "nosniff", name
        assert headers.get("referrer-policy") in (
            "no-referrer",
            "strict-origin-when-cross-origin",
            "same-origin",
        ), name
        assert "content-security-policy" in headers, name
        if headers.get("content-type", "").startswith("text/html"):
            csp = headers["content-security-policy"]
            assert "default-src 'none'" in csp or "default-src 'self'" in csp, (name, csp)
            assert "frame-ancestors 'none'" in csp, (name, csp)
            assert "unsafe-eval" not in csp, (name, csp)
            assert "script-src *" not in csp, (name, csp)


async def test_asvs_3_4_html_pages_carry_a_csp_without_inline_script(client, user):
    responses = dict(await _sample_responses(client, user))
    for name in ("confirm page html", "reset page html", "api ui html"):
        response = responses[name]
        assert response.headers["content-type"].startswith("text/html"), name
        csp = response.headers["content-security-policy"]
        script = next((d for d in csp.split(";") if d.strip().startswith("script-src")), "")
        assert "'unsafe-inline'" not in script, (name, csp)


async def test_asvs_3_4_rate_limited_answers_carry_the_headers_and_retry_after(serve_with):
    async with serve_with(rate_limit_enabled=True, rate_limit_auth_per_minute=1) as client:
        form = {"username": "nobody@example.com", "password": "whatever-it-is"}
        first = await client.post("/api/auth/login", data=form)
        second = await client.post("/api/auth/login", data=form)
    assert first.status_code == 401
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) >= 1
    assert second.headers["x-content-type-options"] == "nosniff"


# --------------------------------------------------------------------------- CORS


async def _preflight(client, origin: str):
    return await client.options(
        "/api/users/me",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


async def test_asvs_3_4_2_no_cors_unless_configured(client, user):
    assert not client.app.state.settings.cors_origins
    preflight = await _preflight(client, "https://evil.example")
    assert "access-control-allow-origin" not in preflight.headers
    simple = await client.get("/api/users/me", headers={**user.headers, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


async def test_asvs_3_4_2_cors_allows_only_the_configured_origins(serve_with, user_factory):
    allowed = "https://app.example"
    async with serve_with(cors_origins=(allowed,)) as client:
        user = await user_factory()
        ok = await _preflight(client, allowed)
        assert ok.status_code in (200, 204), ok.text
        assert ok.headers["access-control-allow-origin"] == allowed
        evil = await _preflight(client, "https://evil.example")
        assert evil.headers.get("access-control-allow-origin") not in ("*", "https://evil.example")
        lookalike = await _preflight(client, "https://app.example.evil.example")
        assert lookalike.headers.get("access-control-allow-origin") != "https://app.example.evil.example"
        simple = await client.get("/api/users/me", headers={**user.headers, "Origin": "https://evil.example"})
        assert simple.headers.get("access-control-allow-origin") not in ("*", "https://evil.example")
        simple = await client.get("/api/users/me", headers={**user.headers, "Origin": allowed})
        assert simple.headers.get("access-control-allow-origin") == allowed


# --------------------------------------------------------------------------- logs


def _secrets_of_token(token: str) -> list[str]:
    # The whole token, and its signature alone (the header part is the same for every token).
    return [token, token.rsplit(".", 1)[-1]]


async def _hashes_of(client, email: str) -> list[str]:
    async with client.app.state.db_config.get_session() as session:
        user = await session.scalar(select(User).where(User.email == email))
        refresh_hashes = list(
            await session.scalars(
                select(UserSession.refresh_token_hash).where(UserSession.user_id == user.id)
            )
        )
    assert user is not None
    # The full bcrypt hash and its salt+digest part (without the "$2b$04$" prefix).
    return [user.password_hash, user.password_hash[7:], *refresh_hashes]


async def test_asvs_16_2_5_no_password_token_or_hash_in_any_log_of_a_whole_account_life(
    serve_with, smtp_sink
):
    """register -> confirm -> login -> refresh -> reset -> login, plus the usual mistakes, with
    every logger at DEBUG: the log must hold none of the passwords, tokens or hashes."""
    password, new_password = "first-Secret-pass-1234", "second-Secret-pass-5678"
    body = new_account(password)
    secrets: dict[str, str] = {"password": password, "new password": new_password}
    hashes: dict[str, str] = {}
    async with serve_with(
        smtp_host="127.0.0.1", smtp_port=smtp_sink.port, smtp_tls="none", log_level="DEBUG"
    ) as client:
        with capture_all_logs() as logs:
            await register(client, body)
            confirm = await mailed_token(smtp_sink, "confirmed_email", to=body["email"])
            assert (await client.get(f"/api/auth/confirmed_email/{confirm}")).status_code == 200
            assert (await client.get(f"/api/auth/confirmed_email/{confirm}", headers=HTML)).status_code == 200
            wrong = await client.post(
                "/api/auth/login", data={"username": body["email"], "password": password + "x"}
            )
            assert wrong.status_code == 401
            first = await tokens(client, body["username"], password)
            assert (
                await client.get("/api/users/me", headers=bearer(first["access_token"]))
            ).status_code == 200
            refreshed = await client.post(
                "/api/auth/refresh_token", json={"refresh_token": first["refresh_token"]}
            )
            assert refreshed.status_code == 200
            # Re-using the rotated token (theft detection) and a garbage token.
            assert (
                await client.post("/api/auth/refresh_token", json={"refresh_token": first["refresh_token"]})
            ).status_code == 401
            hashes_before = await _hashes_of(client, body["email"])
            assert (
                await client.post("/api/auth/update_password", json={"email": body["email"]})
            ).status_code == 202
            reset = await mailed_token(smtp_sink, "confirm_update_password", to=body["email"])
            assert (
                await client.get(f"/api/auth/confirm_update_password/{reset}", headers=HTML)
            ).status_code == 200
            too_short = await client.post(
                f"/api/auth/confirm_update_password/{reset}", json={"password": "short"}
            )
            assert too_short.status_code == 400
            done = await client.post(
                f"/api/auth/confirm_update_password/{reset}", json={"password": new_password}
            )
            assert done.status_code == 200
            assert (await client.get(f"/api/auth/confirm_update_password/{reset}")).status_code == 400
            last = await tokens(client, body["email"], new_password)
            change = await client.patch(
                "/api/users/me/password",
                json={"current_password": "not-" + new_password, "new_password": password + "!"},
                headers=bearer(last["access_token"]),
            )
            assert change.status_code == 400
            logout = await client.post(
                "/api/auth/logout",
                json={"refresh_token": last["refresh_token"]},
                headers=bearer(last["access_token"]),
            )
            assert logout.status_code == 204
            hashes_after = await _hashes_of(client, body["email"])

    secrets["rejected password"] = password + "x"
    secrets["rejected current password"] = "not-" + new_password
    for name, token in {
        "confirmation token": confirm,
        "reset token": reset,
        "first access token": first["access_token"],
        "first refresh token": first["refresh_token"],
        "rotated access token": refreshed.json()["access_token"],
        "rotated refresh token": refreshed.json()["refresh_token"],
        "last access token": last["access_token"],
        "last refresh token": last["refresh_token"],
    }.items():
        for i, part in enumerate(_secrets_of_token(token)):
            secrets[f"{name} ({'whole' if i == 0 else 'signature'})"] = part
    for i, value in enumerate(hashes_before + hashes_after):
        hashes[f"stored hash #{i}"] = value

    logs.ignore(*TEST_SIDE_LOGGERS)
    text = logs.text()
    assert len(logs.records) >= 10, "the capture saw nothing: the test would prove nothing"
    assert "/api/auth/confirmed_email/***" in text  # the request log did run, masking the tokens
    leaked = {name: sorted(logs.sources_of(value)) for name, value in secrets.items() if value in text}
    assert not leaked, leaked
    # Stored hashes: nowhere either, except in the database drivers' DEBUG traces of result rows,
    # which exist only to debug the database layer (and show whatever a row holds).
    text = logs.text(where=lambda r: not (r.levelno < logging.INFO and r.name.startswith(DRIVER_TRACES)))
    leaked = {name: sorted(logs.sources_of(value)) for name, value in hashes.items() if value in text}
    assert not leaked, leaked
    # Not even the decoded parts a log line could be tempted to print.
    for token in (confirm, reset):
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["jti"] not in text


def test_asvs_16_2_5_a_500_on_a_token_path_does_not_log_the_token():
    from litestar.testing import RequestFactory

    from app.errors import internal_error_handler

    request = RequestFactory().get("/api/auth/confirm_update_password/SECRET-TOKEN-123")
    with capture_all_logs() as logs:
        response = internal_error_handler(request, RuntimeError("boom"))
    assert response.status_code == 500
    assert "unhandled RuntimeError" in logs.text()
    assert "SECRET-TOKEN-123" not in logs.text()


async def test_a_token_in_a_cookie_is_not_a_credential(client, user):
    """Only the Authorization header authenticates: an ambient cookie would allow CSRF."""
    token = user.headers["Authorization"].partition(" ")[2]
    for cookie in (f"token={token}", f"token=Bearer {token}"):
        response = await client.get("/api/users/me", headers={"Cookie": cookie})
        assert response.status_code == 401, cookie
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200
