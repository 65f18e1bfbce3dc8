"""Issue 19, items 8 and 12: only ``Bearer`` credentials open ``/api``, and the small leaks are
closed (file-system paths in 404s, cacheable personal data, no HSTS behind an HTTPS proxy,
world-readable database and key files)."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from app.config import load_settings
from app.db import make_db_config
from app.openapi_ui import STATIC_DIR
from app.security.headers import HSTS
from tests.conftest import SECRET
from tests.reliability.harness import serve

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


# --------------------------------------------------------------------------- item 12: file 404s


async def test_a_missing_static_or_media_path_is_a_plain_404(client, settings) -> None:
    (Path(settings.media_dir) / "folder").mkdir(parents=True, exist_ok=True)
    paths = [
        "/static/scalar",  # a directory: Litestar named its absolute path
        "/static/scalar/",
        "/static/no-such-file.css",
        "/media/folder",
        "/media/no-such-avatar.png",
        "/media/%2e%2e/app.py",
    ]
    for path in paths:
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"status_code": 404, "detail": "Not Found"}, (path, response.text)
        assert str(STATIC_DIR) not in response.text
        assert settings.media_dir not in response.text


# --------------------------------------------------------------------------- item 12: no-store


async def test_every_api_answer_with_personal_data_is_not_stored(client, user, admin) -> None:
    created = await client.post(
        "/api/contacts/",
        json={
            "first_name": "Ann",
            "last_name": "Private",
            "email": "ann@example.com",
            "phone_number": "+380501234567",
        },
        headers=user.headers,
    )
    assert created.status_code == 201, created.text
    contact = created.json()["id"]
    answers = {
        "me": await client.get("/api/users/me", headers=user.headers),
        "contacts": await client.get("/api/contacts/", headers=user.headers),
        "contact": await client.get(f"/api/contacts/{contact}", headers=user.headers),
        "created": created,
        "birthdays": await client.get("/api/contacts/birthdays", headers=user.headers),
        "vcard export": await client.get("/api/contacts/export", headers=user.headers),
        "csv export": await client.get("/api/contacts/export?format=csv", headers=user.headers),
        "users (admin)": await client.get("/api/users", headers=admin.headers),
        "login (tokens)": await client.post(
            "/api/auth/login", data={"username": user.email, "password": user.password}
        ),
        "401": await client.get("/api/users/me"),
        "404": await client.get(f"/api/contacts/{contact[:-4]}ffff", headers=user.headers),
    }
    for name, response in answers.items():
        assert response.status_code < 500, (name, response.text)
        assert response.headers.get_list("cache-control") == ["no-store"], name


# --------------------------------------------------------------------------- item 12: HSTS


async def test_hsts_only_when_the_request_came_over_https(settings) -> None:
    async with serve(settings) as client:
        plain = await client.get("/api/healthchecker")
        spoofed = await client.get("/api/healthchecker", headers={"X-Forwarded-Proto": "https"})
        direct = await client.get("https://testserver.local/api/healthchecker")
        page = await client.get("https://testserver.local/static/pages.css")
    assert "strict-transport-security" not in plain.headers
    assert "strict-transport-security" not in spoofed.headers, "only a trusted proxy may say https"
    for response in (direct, page):
        assert response.headers["strict-transport-security"] == HSTS
        assert int(HSTS.split("max-age=")[1].split(";")[0]) >= 365 * 86400


async def test_hsts_through_a_trusted_proxy_that_says_https(settings) -> None:
    behind_proxy = msgspec.structs.replace(settings, trusted_proxies=("10.0.0.0/8",))
    async with serve(behind_proxy, client_host="10.1.2.3") as client:
        https = await client.get("/api/healthchecker", headers={"X-Forwarded-Proto": "https"})
        http = await client.get("/api/healthchecker", headers={"X-Forwarded-Proto": "http"})
        # The client wrote the first entry, the proxy appended what it saw.
        client_said = await client.get("/api/healthchecker", headers={"X-Forwarded-Proto": "https, http"})
        nothing = await client.get("/api/healthchecker")
    assert https.headers["strict-transport-security"] == HSTS
    for response in (http, client_said, nothing):
        assert "strict-transport-security" not in response.headers
    async with serve(behind_proxy, client_host="192.0.2.7") as client:
        untrusted = await client.get("/api/healthchecker", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" not in untrusted.headers


# --------------------------------------------------------------------------- item 12: file modes


@pytest.fixture
def world_readable_umask() -> Iterator[None]:
    """The common umask (022), under which a plain ``open`` makes files readable by everyone."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("world_readable_umask")
async def test_the_sqlite_database_and_a_generated_secret_key_are_private(tmp_path: Path) -> None:
    database = tmp_path / "contacts.db"
    key_file = tmp_path / ".secret_key"
    settings = load_settings(
        {
            "APP_ENV": "development",
            "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "SECRET_KEY_FILE": str(key_file),
            "MEDIA_DIR": str(tmp_path / "media"),
            "BCRYPT_ROUNDS": "4",
        },
        env_file=None,
    )
    async with serve(settings) as client:  # migrates at start-up, as the README command does
        register = await client.post(
            "/api/auth/register",
            json={"username": "private", "email": "private@example.com", "password": "a fine passphrase 1"},
        )
        assert register.status_code == 201, register.text
    modes = _modes([database, key_file, *tmp_path.glob("contacts.db*")])  # noqa: ASYNC240 - a test's look
    assert modes == dict.fromkeys(modes, 0o600), {name: oct(mode) for name, mode in modes.items()}


def _modes(paths: list[Path]) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in paths}


@pytest.mark.usefixtures("world_readable_umask")
def test_an_existing_world_readable_database_is_made_private(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    database.write_bytes(b"")
    database.chmod(0o644)
    make_db_config(
        load_settings(
            {"DATABASE_URL": f"sqlite+aiosqlite:///{database}", "SECRET_KEY": SECRET}, env_file=None
        )
    )
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
