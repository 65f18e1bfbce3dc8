"""``AVATAR_STORAGE=s3``: avatars in an S3-compatible bucket (moto's server standing in for it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from moto.server import ThreadedMotoServer

from tests import images, s3
from tests.conftest import TestUser
from tests.reliability.services import free_port

PATH = "/api/users/avatar"
GRAVATAR = "https://www.gravatar.com/avatar/x"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[ThreadedMotoServer]:
    """One moto server for the module; each test gets its own bucket."""
    yield from s3.serving()


@pytest.fixture
def bucket(moto_server: ThreadedMotoServer) -> s3.S3Bucket:
    """A fresh, publicly readable bucket."""
    return s3.new_bucket(moto_server)


@pytest.fixture
def make_s3_client(make_client: Callable[..., AsyncTestClient[Litestar]], bucket: s3.S3Bucket) -> Any:
    """``make_s3_client(**overrides)``: an app storing avatars in :func:`bucket`."""
    return lambda **overrides: make_client(**{**bucket.settings(), **overrides})


def _upload(data: bytes) -> Any:
    return {"file": ("avatar.png", data, "application/octet-stream")}


async def _fetch(url: str) -> httpx.Response:
    """``GET url`` as a browser would, without credentials."""
    async with httpx.AsyncClient() as http:
        return await http.get(url)


async def _me(client: AsyncTestClient[Litestar], user: TestUser) -> dict[str, Any]:
    response = await client.get("/api/users/me", headers=user.headers)
    assert response.status_code == 200
    return response.json()


async def test_upload_goes_to_the_bucket_and_is_readable_from_its_url(
    make_s3_client: Any, bucket: s3.S3Bucket, admin: TestUser
) -> None:
    data = images.jpeg(64, 64)
    async with make_s3_client() as client:
        assert (await _me(client, admin))["avatar_url"] == GRAVATAR  # warms the cache
        response = await client.patch(PATH, files=_upload(data), headers=admin.headers)
        assert response.status_code == 200, response.text
        url = response.json()["avatar_url"]
        assert url.startswith(f"{bucket.endpoint}/{bucket.name}/avatars/{admin.id}-")
        assert url.endswith(".jpg")
        assert (await _me(client, admin))["avatar_url"] == url
    [key] = bucket.object_keys()
    assert url.endswith(key)
    # Anyone reads it from the bucket's URL, with its type; nothing is on the replica's disk.
    served = await _fetch(url)
    assert served.status_code == 200
    assert served.content == data
    assert served.headers["content-type"] == "image/jpeg"


async def test_replacing_deletes_the_previous_object(
    make_s3_client: Any, bucket: s3.S3Bucket, admin: TestUser
) -> None:
    async with make_s3_client() as client:
        first = (await client.patch(PATH, files=_upload(images.png()), headers=admin.headers)).json()
        second = (await client.patch(PATH, files=_upload(images.gif()), headers=admin.headers)).json()
    assert first["avatar_url"] != second["avatar_url"]
    [key] = bucket.object_keys()
    assert second["avatar_url"].endswith(key)
    assert (await _fetch(first["avatar_url"])).status_code in (403, 404)
    assert (await _fetch(second["avatar_url"])).content == images.gif()


async def test_a_failing_bucket_is_502_and_keeps_the_old_avatar(
    make_s3_client: Any, bucket: s3.S3Bucket, admin: TestUser
) -> None:
    async with make_s3_client() as client:
        first = (await client.patch(PATH, files=_upload(images.png()), headers=admin.headers)).json()
    # The bucket is gone (deleted by its operator): S3 answers 404 NoSuchBucket to every write.
    async with make_s3_client(s3_bucket="no-such-bucket-here") as client:
        response = await client.patch(PATH, files=_upload(images.gif()), headers=admin.headers)
        assert response.status_code == 502
        assert response.json() == {"status_code": 502, "detail": "The avatar could not be stored"}
        assert (await _me(client, admin))["avatar_url"] == first["avatar_url"]
    assert (await _fetch(first["avatar_url"])).status_code == 200


async def test_an_unreachable_endpoint_is_502_within_seconds(make_s3_client: Any, admin: TestUser) -> None:
    async with make_s3_client(s3_endpoint_url=f"http://127.0.0.1:{free_port()}") as client:
        response = await client.patch(PATH, files=_upload(images.png()), headers=admin.headers)
        assert response.status_code == 502
        assert response.json()["detail"] == "The avatar could not be stored"
        assert (await _me(client, admin))["avatar_url"] == GRAVATAR
