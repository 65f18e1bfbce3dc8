"""Issue 19, items 8 and 12: only ``Bearer`` credentials open ``/api``, and the small leaks are
closed (file-system paths in 404s, cacheable personal data, no HSTS behind an HTTPS proxy,
world-readable database and key files)."""

from __future__ import annotations

import base64

import pytest

# --------------------------------------------------------------------------- item 8: the scheme


def _token(user) -> str:
    return user.headers["Authorization"].removeprefix("Bearer ")


@pytest.mark.parametrize(
    "credentials",
    [
        "Basic {token}",
        "Basic {basic}",
        "Token {token}",
        "JWT {token}",
        "Digest {token}",
        "{token}",
        " {token}",
        "Bearer",
        "Bearer ",
        "Bearer{token}",
    ],
)
async def test_credentials_other_than_bearer_are_refused(client, user, credentials: str) -> None:
    basic = base64.b64encode(f"{user.email}:{_token(user)}".encode()).decode()
    header = credentials.format(token=_token(user), basic=basic)
    response = await client.get("/api/users/me", headers={"Authorization": header})
    assert response.status_code == 401, (header[:12], response.text)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert user.email not in response.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_the_bearer_scheme_name_is_case_insensitive(client, user, scheme: str) -> None:
    response = await client.get("/api/users/me", headers={"Authorization": f"{scheme} {_token(user)}"})
    assert response.status_code == 200, response.text
    assert response.json()["email"] == user.email
