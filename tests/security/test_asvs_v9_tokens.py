"""OWASP ASVS 5.0 chapter 9 (self-contained tokens): the access token checks at the API.

Every forged token below names a real user and a live session, so the only thing wrong
with it is the property under test: a ``200`` would mean that property is not checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from app.security.tokens import ALGORITHM, AUDIENCE, ISSUER, Purpose
from tests.conftest import SECRET

ME = "/api/users/me"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(user, **overrides: Any) -> dict[str, Any]:
    """The claims of a valid access token of ``user``'s session, with ``overrides`` (None drops a claim)."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user.id),
        "sid": str(user.session_id),
        "pur": str(Purpose.ACCESS),
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": "forged",
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def raw_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes | None = None) -> str:
    """A JWS put together by hand; the signature defaults to HMAC-SHA256 with the real key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if signature is None:
        signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def assert_refused(client, token: str) -> None:
    response = await client.get(ME, headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert response.json()["status_code"] == 401


async def test_asvs_control_a_well_formed_token_is_accepted(client, user):
    """Baseline for every test below: the hand-made token with nothing wrong works."""
    response = await client.get(
        ME, headers=bearer(raw_token({"alg": "HS256", "typ": "JWT"}, claims_for(user)))
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == str(user.id)


# --------------------------------------------------------------------------- 9.1.1 signature


async def test_asvs_9_1_1_token_signed_with_another_key_is_refused(client, user):
    await assert_refused(client, jwt.encode(claims_for(user), "another-key-" + "y" * 40, algorithm=ALGORITHM))


async def test_asvs_9_1_1_tampered_claims_are_refused(client, user, admin):
    """Payload swapped to another user (the admin) while keeping the original signature."""
    good = raw_token({"alg": "HS256", "typ": "JWT"}, claims_for(user))
    header, _, signature = good.split(".")
    forged_claims = _b64(json.dumps(claims_for(admin)).encode())
    await assert_refused(client, f"{header}.{forged_claims}.{signature}")


@pytest.mark.parametrize("signature", [b"", b"\x00" * 32], ids=["empty", "zeros"])
async def test_asvs_9_1_1_missing_or_bogus_signature_is_refused(client, user, signature):
    await assert_refused(client, raw_token({"alg": "HS256", "typ": "JWT"}, claims_for(user), signature))


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b", "a.b.c", "Bearer", "." * 3, "é.é.é"])
async def test_asvs_9_1_1_malformed_tokens_are_refused_not_500(client, token):
    # Sent as raw bytes: a header is latin-1 on the wire, whatever a client library prefers.
    response = await client.get(ME, headers={"Authorization": f"Bearer {token}".encode("latin-1")})
    assert response.status_code == 401


# --------------------------------------------------------------------------- 9.1.2 algorithm allow-list


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_asvs_9_1_2_alg_none_is_refused(client, user, alg):
    await assert_refused(client, raw_token({"alg": alg, "typ": "JWT"}, claims_for(user), b""))


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
async def test_asvs_9_1_2_other_hmac_algorithms_are_refused_even_with_the_right_key(client, user, alg):
    await assert_refused(client, jwt.encode(claims_for(user), SECRET, algorithm=alg))


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "EdDSA"])
async def test_asvs_9_1_2_asymmetric_algorithm_confusion_is_refused(client, user, alg):
    """A header naming a public-key algorithm, signed by HMAC with the real key (key confusion)."""
    await assert_refused(client, raw_token({"alg": alg, "typ": "JWT"}, claims_for(user)))


async def test_asvs_9_1_2_embedded_key_headers_are_ignored(client, user):
    """``jwk``/``jku``/``kid`` in the header must not choose the verification key."""
    attacker_key = "attacker-key-" + "z" * 40
    header = {
        "alg": "HS256",
        "typ": "JWT",
        "kid": "../../../../dev/null",
        "jku": "http://127.0.0.1:1/jwks.json",
        "jwk": {"kty": "oct", "k": _b64(attacker_key.encode())},
    }
    claims = claims_for(user)
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(attacker_key.encode(), signing_input.encode(), hashlib.sha256).digest()
    await assert_refused(client, f"{signing_input}.{_b64(signature)}")


# --------------------------------------------------------------------------- 9.2.1 validity period


async def test_asvs_9_2_1_expired_token_is_refused(client, user):
    past = datetime.now(UTC) - timedelta(minutes=1)
    claims = claims_for(
        user, exp=int(past.timestamp()), iat=int((past - timedelta(minutes=15)).timestamp()), nbf=None
    )
    claims["nbf"] = claims["iat"]
    await assert_refused(client, jwt.encode(claims, SECRET, algorithm=ALGORITHM))


async def test_asvs_9_2_1_token_not_yet_valid_is_refused(client, user):
    future = datetime.now(UTC) + timedelta(minutes=10)
    claims = claims_for(
        user, nbf=int(future.timestamp()), exp=int((future + timedelta(minutes=5)).timestamp())
    )
    await assert_refused(client, jwt.encode(claims, SECRET, algorithm=ALGORITHM))


@pytest.mark.parametrize("claim", ["exp", "nbf", "sub", "sid", "pur"])
async def test_asvs_9_2_1_token_missing_a_required_claim_is_refused(client, user, claim):
    await assert_refused(client, jwt.encode(claims_for(user, **{claim: None}), SECRET, algorithm=ALGORITHM))


# --------------------------------------------------------------------------- 9.2.2 purpose


@pytest.mark.parametrize(
    "purpose",
    [Purpose.REFRESH, Purpose.CONFIRM_EMAIL, Purpose.RESET_PASSWORD, Purpose.EMAIL_CHANGE, "admin", ""],
)
async def test_asvs_9_2_2_token_of_another_purpose_is_refused_as_bearer(client, user, purpose):
    await assert_refused(client, jwt.encode(claims_for(user, pur=str(purpose)), SECRET, algorithm=ALGORITHM))


async def test_asvs_9_2_2_access_token_of_an_ended_session_is_refused(client, user):
    """A valid signature is not enough: the session named by ``sid`` must be live."""
    await assert_refused(
        client,
        jwt.encode(claims_for(user, sid="00000000-0000-0000-0000-000000000000"), SECRET, algorithm=ALGORITHM),
    )


# --------------------------------------------------------------------------- 9.2.3 audience


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("aud", "another-service"),
        ("aud", ["another-service"]),
        ("aud", None),
        ("iss", "someone-else"),
        ("iss", None),
    ],
    ids=["aud-other", "aud-list-other", "aud-missing", "iss-other", "iss-missing"],
)
async def test_asvs_9_2_3_token_for_another_audience_or_issuer_is_refused(client, user, claim, value):
    await assert_refused(client, jwt.encode(claims_for(user, **{claim: value}), SECRET, algorithm=ALGORITHM))
