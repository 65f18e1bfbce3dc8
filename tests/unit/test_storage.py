import os
import uuid
from pathlib import Path
from typing import Any

import cloudinary.uploader
import pytest

from app.config import SettingsError, load_settings
from app.storage.adapters import CloudinaryStorage, LocalStorage, S3Storage, StorageError, make_avatar_storage
from app.storage.images import inspect_image
from tests import images

CLOUDINARY_URL = "cloudinary://123456:s3cr3t@demo-cloud"
USER_ID = uuid.UUID("0190e0a4-1111-7000-8000-000000000001")


def _settings(**env: str) -> Any:
    return load_settings({"SECRET_KEY": "k" * 40, **env}, env_file=None)


def test_chosen_by_settings(tmp_path: Path) -> None:
    assert isinstance(make_avatar_storage(_settings(CLOUDINARY_URL=CLOUDINARY_URL)), CloudinaryStorage)
    local = make_avatar_storage(_settings(MEDIA_DIR=str(tmp_path / "m")))
    assert isinstance(local, LocalStorage)
    assert (tmp_path / "m").is_dir()


async def test_cloudinary_upload_arguments_and_secure_url(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []

    def fake_upload(file: Any, **options: Any) -> dict[str, Any]:
        calls.append((file, options))
        return {
            "secure_url": "https://res.cloudinary.com/demo-cloud/image/upload/v2/x.png",
            "url": "http://x",
        }

    monkeypatch.setattr(cloudinary.uploader, "upload", fake_upload)
    data = images.png()
    url = await CloudinaryStorage(CLOUDINARY_URL).save(USER_ID, data, inspect_image(data, 100))
    assert url == "https://res.cloudinary.com/demo-cloud/image/upload/v2/x.png"
    [(file, options)] = calls
    assert file == data
    assert options["public_id"] == f"contacts-api/avatars/{USER_ID}"
    assert options["overwrite"] is True
    assert options["resource_type"] == "image"
    assert (options["cloud_name"], options["api_key"], options["api_secret"]) == (
        "demo-cloud",
        "123456",
        "s3cr3t",
    )


@pytest.mark.parametrize("outcome", [RuntimeError("network down"), {"error": "no url"}, "not a dict"])
async def test_cloudinary_failure_is_a_storage_error(monkeypatch: pytest.MonkeyPatch, outcome: Any) -> None:
    def fake_upload(_file: Any, **_options: Any) -> Any:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(cloudinary.uploader, "upload", fake_upload)
    data = images.png()
    with pytest.raises(StorageError):
        await CloudinaryStorage(CLOUDINARY_URL).save(USER_ID, data, inspect_image(data, 100))


async def test_cloudinary_discard_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cloudinary.uploader, "upload", None)  # any SDK call would fail
    await CloudinaryStorage(CLOUDINARY_URL).discard("https://res.cloudinary.com/x.png")


async def test_local_writes_a_server_named_file_and_discards_it(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://api.example.com/")
    data = images.gif()
    url = await storage.save(USER_ID, data, inspect_image(data, 100))
    assert url.startswith(f"http://api.example.com/media/{USER_ID}-")
    assert url.endswith(".gif")
    [name] = os.listdir(tmp_path)
    path = tmp_path / name
    assert path.read_bytes() == data
    assert storage.path_of(url) == path
    await storage.discard(url)
    assert os.listdir(tmp_path) == []
    await storage.discard(url)  # already gone: nothing to do


@pytest.mark.parametrize(
    "url",
    [
        "https://www.gravatar.com/avatar/abc",
        "http://api.example.com/media/../../etc/passwd",
        "http://api.example.com/media/notes.txt",
        f"http://api.example.com/media/{USER_ID}-0123456789abcdef.exe",
        f"http://api.example.com/other/{USER_ID}-0123456789abcdef.png",
    ],
)
async def test_local_never_touches_foreign_files(tmp_path: Path, url: str) -> None:
    storage = LocalStorage(tmp_path / "media", "http://api.example.com")
    bystander = tmp_path / "media" / "notes.txt"
    bystander.write_text("keep me")
    assert storage.path_of(url) is None
    await storage.discard(url)
    assert bystander.exists()


async def test_local_discard_survives_os_errors(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://x")
    name = f"{USER_ID}-0123456789abcdef.png"
    (tmp_path / name).mkdir()  # unlink of a directory fails
    await storage.discard(f"http://x/media/{name}")
    assert (tmp_path / name).is_dir()


S3_ENV = {"AVATAR_STORAGE": "s3", "S3_BUCKET": "contacts-avatars"}


def test_s3_chosen_by_avatar_storage_with_its_public_url() -> None:
    storage = make_avatar_storage(_settings(**S3_ENV, S3_ENDPOINT_URL="http://minio.local:9000/"))
    assert isinstance(storage, S3Storage)
    assert storage.base_url == "http://minio.local:9000/contacts-avatars/"
    aws = make_avatar_storage(_settings(**S3_ENV, S3_REGION="eu-west-1"))
    assert isinstance(aws, S3Storage)
    assert aws.base_url == "https://contacts-avatars.s3.eu-west-1.amazonaws.com/"
    cdn = make_avatar_storage(_settings(**S3_ENV, S3_PUBLIC_URL="https://cdn.example.com/a"))
    assert isinstance(cdn, S3Storage)
    assert cdn.base_url == "https://cdn.example.com/a/"
    # An explicit choice wins over CLOUDINARY_URL.
    local = make_avatar_storage(_settings(AVATAR_STORAGE="local", CLOUDINARY_URL=CLOUDINARY_URL))
    assert isinstance(local, LocalStorage)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AVATAR_STORAGE": "s3"}, "S3_BUCKET"),
        ({**S3_ENV, "S3_ENDPOINT_URL": "minio:9000"}, "S3_ENDPOINT_URL"),
        ({**S3_ENV, "S3_PUBLIC_URL": "cdn.example.com"}, "S3_PUBLIC_URL"),
        ({"AVATAR_STORAGE": "cloudinary"}, "CLOUDINARY_URL"),
        ({"AVATAR_STORAGE": "disk"}, "AVATAR_STORAGE"),
    ],
)
def test_bad_storage_settings_are_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        _settings(**env)


async def test_s3_discard_touches_only_its_own_objects() -> None:
    storage = make_avatar_storage(_settings(**S3_ENV, S3_ENDPOINT_URL="http://127.0.0.1:9"))
    assert isinstance(storage, S3Storage)
    base = storage.base_url
    assert storage.key_of(f"{base}avatars/{USER_ID}-0123456789abcdef.png") == (
        f"avatars/{USER_ID}-0123456789abcdef.png"
    )
    for url in (
        "https://www.gravatar.com/avatar/x",
        f"{base}avatars/../secrets.txt",
        f"{base}other/{USER_ID}-0123456789abcdef.png",
        f"http://elsewhere/contacts-avatars/avatars/{USER_ID}-0123456789abcdef.png",
    ):
        assert storage.key_of(url) is None
        await storage.discard(url)  # no request made: nothing listens on port 9 anyway


# --------------------------------------------------------------------------- reading (the data export)


async def test_local_reads_its_own_files_only(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "media", "http://x")
    data = images.png()
    url = await storage.save(USER_ID, data, inspect_image(data, 100))
    stored = await storage.read(url)
    assert stored is not None
    assert stored.data == data
    assert stored.name.endswith(".png")
    (tmp_path / "media" / "notes.txt").write_text("keep me")
    assert await storage.read("http://x/media/notes.txt") is None  # not a name this service makes
    assert await storage.read("https://www.gravatar.com/avatar/abc") is None
    await storage.discard(url)
    assert await storage.read(url) is None  # gone: nothing to export


async def test_local_read_failure_is_a_storage_error(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, "http://x")
    name = f"{USER_ID}-0123456789abcdef.png"
    (tmp_path / name).mkdir()  # reading a directory fails
    with pytest.raises(StorageError):
        await storage.read(f"http://x/media/{name}")


async def test_cloudinary_and_foreign_s3_urls_read_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cloudinary.uploader, "upload", None)  # any SDK call would fail
    assert await CloudinaryStorage(CLOUDINARY_URL).read("https://res.cloudinary.com/x.png") is None
    storage = make_avatar_storage(_settings(**S3_ENV, S3_ENDPOINT_URL="http://127.0.0.1:9"))
    assert await storage.read("https://www.gravatar.com/avatar/x") is None  # no request made


async def test_an_unreachable_bucket_is_a_storage_error() -> None:
    storage = make_avatar_storage(_settings(**S3_ENV, S3_ENDPOINT_URL="http://127.0.0.1:9"))
    assert isinstance(storage, S3Storage)
    with pytest.raises(StorageError):
        await storage.read(f"{storage.base_url}avatars/{USER_ID}-0123456789abcdef.png")
