"""``PATCH /api/users/avatar``: checks, both storages, and what the user sees afterwards."""

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cloudinary.uploader
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.config import Settings
from tests import images
from tests.conftest import TestUser

PATH = "/api/users/avatar"
GRAVATAR = "https://www.gravatar.com/avatar/x"
UserFactory = Callable[..., Awaitable[TestUser]]


def _upload(data: bytes, name: str = "avatar.png", ctype: str = "image/png", field: str = "file") -> Any:
    return {field: (name, data, ctype)}


def _media_files(settings: Settings) -> list[str]:
    return sorted(os.listdir(settings.media_dir))


async def _me(client: AsyncTestClient[Litestar], user: TestUser) -> dict[str, Any]:
    response = await client.get("/api/users/me", headers=user.headers)
    assert response.status_code == 200
    return response.json()


# --------------------------------------------------------------------------- local storage, for real


@pytest.mark.parametrize(
    ("data", "ext", "ctype"),
    [
        (images.png(64, 64), "png", "image/png"),
        (images.jpeg(64, 64), "jpg", "image/jpeg"),
        (images.webp_lossy(64, 64), "webp", "image/webp"),
        (images.gif(64, 64), "gif", "image/gif"),
    ],
)
async def test_upload_is_stored_served_and_shown(
    client: AsyncTestClient[Litestar], settings: Settings, admin: TestUser, data: bytes, ext: str, ctype: str
) -> None:
    assert (await _me(client, admin))["avatar_url"] == GRAVATAR  # warms the cache
    # The client's name and content type are ignored: only the bytes decide.
    response = await client.patch(
        PATH, files=_upload(data, name="../../evil.exe", ctype="text/plain"), headers=admin.headers
    )
    assert response.status_code == 200
    url = response.json()["avatar_url"]
    assert url.startswith(f"http://testserver.local/media/{admin.id}-")
    assert url.endswith(f".{ext}")
    [name] = _media_files(settings)
    assert url.endswith(name)
    assert (Path(settings.media_dir) / name).read_bytes() == data

    served = await client.get(url.removeprefix("http://testserver.local"))
    assert served.status_code == 200
    assert served.content == data
    assert served.headers["content-type"].startswith(ctype)
    # Visible on the very next request, not the cached snapshot.
    assert (await _me(client, admin))["avatar_url"] == url


async def test_replacing_removes_the_previous_file(
    client: AsyncTestClient[Litestar], settings: Settings, admin: TestUser
) -> None:
    first = (await client.patch(PATH, files=_upload(images.png()), headers=admin.headers)).json()[
        "avatar_url"
    ]
    second = (await client.patch(PATH, files=_upload(images.gif()), headers=admin.headers)).json()[
        "avatar_url"
    ]
    assert first != second
    assert _media_files(settings) == [second.rsplit("/", 1)[1]]
    assert (await client.get(first.removeprefix("http://testserver.local"))).status_code == 404
    assert (await client.get(second.removeprefix("http://testserver.local"))).status_code == 200


async def test_media_does_not_serve_outside_its_directory(
    client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    Path(settings.media_dir).parent.joinpath("secret.txt").write_text("no")
    for path in ("/media/../secret.txt", "/media/%2e%2e/secret.txt", "/media/nothing.png"):
        assert (await client.get(path)).status_code == 404


# --------------------------------------------------------------------------- who may upload


async def test_a_user_gets_403_and_nothing_is_stored(
    client: AsyncTestClient[Litestar], settings: Settings, user: TestUser
) -> None:
    response = await client.patch(PATH, files=_upload(images.png()), headers=user.headers)
    assert response.status_code == 403
    assert _media_files(settings) == []
    assert (await _me(client, user))["avatar_url"] == GRAVATAR


async def test_anonymous_gets_401(client: AsyncTestClient[Litestar]) -> None:
    response = await client.patch(PATH, files=_upload(images.png()))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# --------------------------------------------------------------------------- bad uploads


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"just some text, named avatar.png",
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        b"BM" + b"\x00" * 100,
        images.png()[:18],  # PNG magic with a cut header
    ],
)
async def test_not_an_image_is_415(
    client: AsyncTestClient[Litestar], settings: Settings, admin: TestUser, data: bytes
) -> None:
    response = await client.patch(PATH, files=_upload(data, ctype="image/png"), headers=admin.headers)
    assert response.status_code == 415
    assert _media_files(settings) == []
    assert (await _me(client, admin))["avatar_url"] == GRAVATAR


async def test_pixel_flood_is_refused(
    client: AsyncTestClient[Litestar], settings: Settings, admin: TestUser
) -> None:
    bomb = images.png(100_000, 100_000)  # a few dozen bytes claiming 10^10 pixels
    response = await client.patch(PATH, files=_upload(bomb), headers=admin.headers)
    assert response.status_code == 422
    assert "100000x100000" in response.json()["detail"]
    assert _media_files(settings) == []
    assert (await _me(client, admin))["avatar_url"] == GRAVATAR


async def test_pixel_limit_comes_from_settings(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: UserFactory
) -> None:
    async with make_client(avatar_max_pixels=100) as client:
        admin = await user_factory(role="admin")
        ok = await client.patch(PATH, files=_upload(images.png(10, 10)), headers=admin.headers)
        assert ok.status_code == 200
        too_big = await client.patch(PATH, files=_upload(images.png(10, 11)), headers=admin.headers)
        assert too_big.status_code == 422


async def test_over_the_size_limit_is_413(
    make_client: Callable[..., AsyncTestClient[Litestar]], settings: Settings, user_factory: UserFactory
) -> None:
    async with make_client(avatar_max_bytes=1000) as client:
        admin = await user_factory(role="admin")
        exact = images.png() + b"\x00" * (1000 - len(images.png()))
        assert (await client.patch(PATH, files=_upload(exact), headers=admin.headers)).status_code == 200
        # One byte over: the body fits the router's limit, the handler's check refuses it.
        response = await client.patch(PATH, files=_upload(exact + b"\x00"), headers=admin.headers)
        assert response.status_code == 413
        assert "1000 bytes" in response.json()["detail"]
        # Far over: refused by Litestar before the body is read.
        huge = await client.patch(PATH, files=_upload(exact * 100), headers=admin.headers)
        assert huge.status_code == 413
        assert len(_media_files(settings)) == 1


async def test_default_size_limit_is_5_mb(
    client: AsyncTestClient[Litestar], settings: Settings, admin: TestUser
) -> None:
    assert settings.avatar_max_bytes == 5 * 1024 * 1024
    data = images.png() + b"\x00" * (settings.avatar_max_bytes + 1 - len(images.png()))
    response = await client.patch(PATH, files=_upload(data), headers=admin.headers)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "kwargs",
    [
        {"files": {"image": ("a.png", images.png(), "image/png")}},
        {"files": {"avatar": ("a.png", images.png(), "image/png")}},
        {
            "files": {
                "file": ("a.png", images.png(), "image/png"),
                "other": ("b.png", images.png(), "image/png"),
            }
        },
        {"data": {"file": "not a file"}, "files": {"x": ("x", b"", "text/plain")}},
    ],
)
async def test_wrong_field_is_400(
    client: AsyncTestClient[Litestar], settings: Settings, admin: TestUser, kwargs: dict[str, Any]
) -> None:
    response = await client.patch(PATH, headers=admin.headers, **kwargs)
    assert response.status_code == 400
    assert response.json()["extra"]
    assert _media_files(settings) == []


async def test_broken_multipart_is_400(client: AsyncTestClient[Litestar], admin: TestUser) -> None:
    response = await client.patch(
        PATH,
        content=b"--xx\r\nbroken",
        headers={**admin.headers, "Content-Type": "multipart/form-data; boundary=xx"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"file": "aGVsbG8="}},
        {"content": images.png(), "headers": {"Content-Type": "image/png"}},
        {"content": b""},
    ],
)
async def test_not_multipart_is_415(
    client: AsyncTestClient[Litestar], admin: TestUser, kwargs: dict[str, Any]
) -> None:
    headers = {**admin.headers, **kwargs.pop("headers", {})}
    response = await client.patch(PATH, headers=headers, **kwargs)
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


# --------------------------------------------------------------------------- Cloudinary, at the SDK boundary


CLOUDINARY_URL = "cloudinary://1234:abcd@my-cloud"


async def test_cloudinary_upload(
    make_client: Callable[..., AsyncTestClient[Litestar]],
    settings: Settings,
    user_factory: UserFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_upload(file: Any, **options: Any) -> dict[str, Any]:
        calls.append({"file": file, **options})
        return {"secure_url": f"https://res.cloudinary.com/my-cloud/image/upload/v{len(calls)}/a.png"}

    monkeypatch.setattr(cloudinary.uploader, "upload", fake_upload)
    async with make_client(cloudinary_url=CLOUDINARY_URL) as client:
        admin = await user_factory(role="admin")
        data = images.png(32, 32)
        response = await client.patch(PATH, files=_upload(data), headers=admin.headers)
        assert response.status_code == 200
        assert response.json()["avatar_url"] == "https://res.cloudinary.com/my-cloud/image/upload/v1/a.png"
        [call] = calls
        assert call["file"] == data
        assert call["public_id"] == f"contacts-api/avatars/{admin.id}"
        assert call["overwrite"] is True
        assert (call["cloud_name"], call["api_key"], call["api_secret"]) == ("my-cloud", "1234", "abcd")
        me = (await client.get("/api/users/me", headers=admin.headers)).json()
        assert me["avatar_url"] == "https://res.cloudinary.com/my-cloud/image/upload/v1/a.png"

        # A second upload reuses the same public id (overwrite), and the new URL is stored.
        again = await client.patch(PATH, files=_upload(images.gif()), headers=admin.headers)
        assert again.json()["avatar_url"].endswith("/v2/a.png")
        assert calls[1]["public_id"] == calls[0]["public_id"]
        # Nothing goes to the local disk, and /media is not served.
        assert _media_files(settings) == []  # (the default client made the directory)
        assert (await client.get("/media/anything.png")).status_code == 404


async def test_cloudinary_failure_is_502_and_keeps_the_old_avatar(
    make_client: Callable[..., AsyncTestClient[Litestar]],
    user_factory: UserFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing_upload(_file: Any, **_options: Any) -> dict[str, Any]:
        raise cloudinary.exceptions.Error("Invalid Signature")

    monkeypatch.setattr(cloudinary.uploader, "upload", failing_upload)
    async with make_client(cloudinary_url=CLOUDINARY_URL) as client:
        admin = await user_factory(role="admin")
        response = await client.patch(PATH, files=_upload(images.png()), headers=admin.headers)
        assert response.status_code == 502
        assert "Invalid Signature" not in response.text  # the provider's message stays in the log
        assert (await client.get("/api/users/me", headers=admin.headers)).json()["avatar_url"] == GRAVATAR


async def test_openapi_documents_the_upload(client: AsyncTestClient[Litestar]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/api/users/avatar"]["patch"]
    assert "multipart/form-data" in operation["requestBody"]["content"]
    assert {"200", "400", "401", "403", "413", "415", "422"} <= set(operation["responses"])
