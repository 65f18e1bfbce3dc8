"""The verified-token map never serves an expired or a different token."""

import time
from datetime import timedelta

import pytest
from litestar.exceptions import NotAuthorizedException

from app.security.auth import VerifiedToken
from app.security.tokens import ALGORITHM, AUDIENCE, ISSUER, Purpose, create_token

SECRET = "s" * 40
KW = {"audience": [AUDIENCE], "issuer": [ISSUER], "strict_audience": True}


def decode(token: str, secret: str = SECRET) -> VerifiedToken:
    return VerifiedToken.decode(token, secret, ALGORITHM, **KW)


def test_a_cached_token_still_expires():
    token, _ = create_token(SECRET, Purpose.ACCESS, "u1", timedelta(seconds=1), sid="s")
    assert decode(token).sub == "u1"
    assert decode(token) is decode(token)  # served from the map
    time.sleep(1.1)
    with pytest.raises(NotAuthorizedException):
        decode(token)


def test_an_altered_or_foreign_token_is_verified_in_full():
    token, _ = create_token(SECRET, Purpose.ACCESS, "u1", timedelta(minutes=5), sid="s")
    decode(token)
    with pytest.raises(NotAuthorizedException):
        decode(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    with pytest.raises(NotAuthorizedException):
        decode(token, secret="o" * 40)
