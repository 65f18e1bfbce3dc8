"""OWASP ASVS 5.0 chapter 5 (file handling): the avatar upload (admins only).

The image type is judged from the bytes, the size and pixel count are capped before any
decoding, and the stored file gets a name made by the server.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.security.images import gif, png

AVATAR = "/api/users/avatar"


async def _upload(client, admin, data: bytes, name: str = "avatar.png", content_type: str = "image/png"):
    return await client.patch(AVATAR, files={"file": (name, data, content_type)}, headers=admin.headers)


def _files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")} if directory.exists() else set()


async def test_asvs_5_2_1_an_upload_over_the_size_limit_is_413(serve_with, user_factory):
    async with serve_with(avatar_max_bytes=2048) as client:
        admin = await user_factory(role="admin")
        padded = png(8, 8) + b"\x00" * 4096  # a real PNG, with trailing bytes past the limit
        response = await _upload(client, admin, padded)
        assert response.status_code == 413, response.text
        assert (
            (await client.get("/api/users/me", headers=admin.headers))
            .json()["avatar_url"]
            .startswith("https://www.gravatar.com/")
        )
        assert (await _upload(client, admin, png(8, 8))).status_code == 200


async def test_asvs_5_2_1_a_huge_body_is_refused_before_it_is_read(client, admin):
    response = await _upload(client, admin, b"\x89PNG\r\n\x1a\n" + b"\x00" * (6 * 1024 * 1024))
    assert response.status_code == 413, response.text[:200]


@pytest.mark.parametrize(
    ("data", "name", "content_type"),
    [
        (b"<?php system($_GET['c']); ?>", "avatar.png", "image/png"),
        (b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>", "avatar.svg", "image/svg+xml"),
        (b"<html><script>alert(1)</script></html>", "avatar.gif", "image/gif"),
        (b"%PDF-1.7\n", "avatar.jpg", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n", "avatar.png", "image/png"),  # a magic number and nothing else
        (b"", "avatar.png", "image/png"),
    ],
    ids=["php-as-png", "svg", "html-as-gif", "pdf-as-jpeg", "truncated-png", "empty"],
)
async def test_asvs_5_2_2_content_that_is_not_an_allowed_image_is_415(
    client, admin, data, name, content_type
):
    response = await _upload(client, admin, data, name, content_type)
    assert response.status_code == 415, response.text


async def test_asvs_5_2_2_the_type_comes_from_the_bytes_not_the_name_or_header(client, admin):
    response = await _upload(client, admin, gif(4, 4), "holiday.txt", "text/plain")
    assert response.status_code == 200, response.text
    assert response.json()["avatar_url"].endswith(".gif")


@pytest.mark.parametrize(
    "bomb", [png(50_000, 50_000, pixels=False), gif(65_535, 65_535)], ids=["png-50k-square", "gif-64k-square"]
)
async def test_asvs_5_2_6_pixel_flood_images_are_refused(client, admin, bomb):
    response = await _upload(client, admin, bomb, "bomb.png")
    assert response.status_code in (413, 422), response.text
    assert len(bomb) < 1024  # tiny on the wire: only the header is a lie


async def test_asvs_5_3_2_stored_files_get_server_made_names(client, admin, settings):
    media = Path(settings.media_dir)
    before = _files_under(media)
    hostile = "../../../../tmp/evil name;rm -rf.png"
    response = await _upload(client, admin, png(2, 2), hostile)
    assert response.status_code == 200, response.text
    url = response.json()["avatar_url"]
    name = os.path.basename(urlparse(url).path)
    assert "evil" not in url
    assert ".." not in url
    assert name.endswith(".png")
    new_files = _files_under(media) - before
    assert new_files == {name}, new_files
    assert not os.path.exists("/tmp/evil name;rm -rf.png")  # noqa: S108, ASYNC240 - the attacker's target
    served = await client.get(urlparse(url).path)
    assert served.status_code == 200
    assert served.content == png(2, 2)
    assert served.headers["x-content-type-options"] == "nosniff"


async def test_asvs_5_3_2_the_media_route_does_not_serve_outside_its_directory(client):
    for path in ("/media/../app/config.py", "/media/..%2f..%2fpyproject.toml", "/media/%2e%2e/.secret_key"):
        response = await client.get(path)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert "class Settings" not in response.text
        assert "[project]" not in response.text
