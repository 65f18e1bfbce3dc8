"""app.security.tokens: purpose, algorithm, expiry, audience and issuer are all enforced."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from app.security.tokens import (
    ALGORITHM,
    AUDIENCE,
    ISSUER,
    InvalidToken,
    Purpose,
    create_token,
    decode_token,
    fingerprint,
    token_hash,
)

KEY = "unit-test-key-" + "k" * 40


def claims(**overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "sub": "user-1",
        "pur": "access",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_round_trip_keeps_subject_purpose_and_extra_claims() -> None:
    token, expires = create_token(KEY, Purpose.REFRESH, "user-1", timedelta(minutes=5), sid="s-1")

    decoded = decode_token(KEY, token, Purpose.REFRESH)

    assert decoded["sub"] == "user-1"
    assert decoded["pur"] == "refresh"
    assert decoded["sid"] == "s-1"
    assert decoded["aud"] == AUDIENCE
    assert decoded["iss"] == ISSUER
    assert decoded["exp"] == int(expires.timestamp())
    assert jwt.get_unverified_header(token)["alg"] == ALGORITHM


def test_every_token_is_unique() -> None:
    tokens = {create_token(KEY, Purpose.ACCESS, "u", timedelta(minutes=1))[0] for _ in range(20)}
    assert len(tokens) == 20


@pytest.mark.parametrize(("made_for", "used_as"), list(itertools.permutations(Purpose, 2)))
def test_a_token_is_refused_for_any_other_purpose(made_for: Purpose, used_as: Purpose) -> None:
    token, _ = create_token(KEY, made_for, "user-1", timedelta(minutes=5))

    with pytest.raises(InvalidToken):
        decode_token(KEY, token, used_as)
    assert decode_token(KEY, token, made_for)["pur"] == made_for


@pytest.mark.parametrize(
    ("name", "token"),
    [
        (
            "expired",
            jwt.encode(claims(exp=datetime.now(UTC) - timedelta(seconds=1)), KEY, algorithm=ALGORITHM),
        ),
        (
            "not yet valid",
            jwt.encode(
                claims(nbf=datetime.now(UTC) + timedelta(days=1), exp=datetime.now(UTC) + timedelta(days=2)),
                KEY,
                algorithm=ALGORITHM,
            ),
        ),
        ("wrong key", jwt.encode(claims(), "another-key-" + "x" * 40, algorithm=ALGORITHM)),
        ("alg none", jwt.encode(claims(), key=None, algorithm="none")),
        ("HS512", jwt.encode(claims(), KEY, algorithm="HS512")),
        ("wrong audience", jwt.encode(claims(aud="someone-else"), KEY, algorithm=ALGORITHM)),
        ("audience list", jwt.encode(claims(aud=[AUDIENCE, "other"]), KEY, algorithm=ALGORITHM)),
        ("wrong issuer", jwt.encode(claims(iss="someone-else"), KEY, algorithm=ALGORITHM)),
        ("no exp", jwt.encode(claims(exp=None), KEY, algorithm=ALGORITHM)),
        ("no purpose", jwt.encode(claims(pur=None), KEY, algorithm=ALGORITHM)),
        ("no subject", jwt.encode(claims(sub=None), KEY, algorithm=ALGORITHM)),
        ("garbage", "not-a-token"),
        ("empty", ""),
    ],
)
def test_forged_or_broken_tokens_are_refused(name: str, token: str) -> None:
    with pytest.raises(InvalidToken):
        decode_token(KEY, token, Purpose.ACCESS)


def test_the_control_token_of_the_table_above_is_accepted() -> None:
    assert (
        decode_token(KEY, jwt.encode(claims(), KEY, algorithm=ALGORITHM), Purpose.ACCESS)["sub"] == "user-1"
    )


def test_fingerprint_changes_with_the_state() -> None:
    before = fingerprint("user-1", "$2b$hash", 0)

    assert fingerprint("user-1", "$2b$hash", 0) == before
    assert fingerprint("user-1", "$2b$hash", 1) != before
    assert fingerprint("user-1", "$2b$other", 0) != before
    assert len(before) == 32


def test_token_hash_is_sha256_hex_and_never_the_token() -> None:
    digest = token_hash("some.refresh.token")

    assert digest == token_hash("some.refresh.token")
    assert digest != token_hash("some.refresh.tokeN")
    assert len(digest) == 64
    assert "token" not in digest
