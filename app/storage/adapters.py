"""Avatar storage adapters, chosen once by :func:`make_avatar_storage` in ``create_app``.

* :class:`CloudinaryStorage` when ``CLOUDINARY_URL`` is set: one public id per user, uploaded
  with ``overwrite=True``, so a new avatar replaces the old one in place; the secure URL
  Cloudinary returns (versioned, so caches see the change) is what the user record keeps.
* :class:`S3Storage` with ``AVATAR_STORAGE=s3``: objects in an S3-compatible bucket (AWS, MinIO,
  Ceph, R2...) under server-made names, read by clients straight from the bucket's public URL;
  the previous object is deleted once the new URL is saved. Nothing is kept on the replicas'
  disks, so any number of them can serve.
* :class:`LocalStorage` otherwise: files under ``MEDIA_DIR`` with server-made names, served at
  ``/media``; the previous file of the user is removed once the new URL is saved.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import urlparse

import cloudinary.uploader
import obstore
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_502_BAD_GATEWAY
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from app.errors import AppError, file_not_found_handler
from app.storage.images import FORMATS

if TYPE_CHECKING:
    from uuid import UUID

    from litestar import Router

    from app.config import Settings
    from app.storage.images import ImageInfo

logger = logging.getLogger(__name__)

#: URL path under which local avatars are served.
MEDIA_PATH = "/media"
#: Folder (public id prefix) of avatars on Cloudinary.
CLOUDINARY_FOLDER = "contacts-api/avatars"

# Names this service gives local files: "<user uuid>-<16 hex>.<ext>". Anything else in a URL
# is never turned into a path, so a stored URL cannot make us delete an arbitrary file.
_LOCAL_NAME = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-[0-9a-f]{16}\.(png|jpg|webp|gif)"
)


#: Key prefix of avatars in an S3 bucket.
S3_PREFIX = "avatars/"


class AvatarStorage(Protocol):
    """Where avatars are kept."""

    async def save(self, user_id: UUID, data: bytes, image: ImageInfo) -> str:
        """Store ``data`` as the avatar of ``user_id`` and return its public URL."""
        ...

    async def discard(self, url: str) -> None:
        """Forget a previous avatar URL (remove the file if this storage owns it)."""
        ...

    async def read(self, url: str) -> StoredFile | None:
        """The file behind an avatar URL if this storage keeps it (``None``: not ours, or gone)."""
        ...


class StoredFile(NamedTuple):
    """An avatar file this service keeps: its server-made name and its bytes."""

    name: str
    data: bytes


class StorageError(AppError):
    """The storage backend failed to keep the file: ``502``."""

    status_code = HTTP_502_BAD_GATEWAY


class CloudinaryStorage:
    """Avatars on Cloudinary, one public id per user."""

    def __init__(self, cloudinary_url: str) -> None:
        """Read the credentials from a ``cloudinary://api_key:api_secret@cloud_name`` URL.

        They are passed on every call rather than through the SDK's global config, so that
        nothing process-wide depends on the environment.

        Args:
            cloudinary_url: The ``CLOUDINARY_URL`` setting.
        """
        parsed = urlparse(cloudinary_url)
        self._credentials: dict[str, Any] = {
            "cloud_name": parsed.hostname,
            "api_key": parsed.username,
            "api_secret": parsed.password,
        }

    @staticmethod
    def public_id(user_id: UUID) -> str:
        """The Cloudinary public id of a user's avatar."""
        return f"{CLOUDINARY_FOLDER}/{user_id}"

    async def save(self, user_id: UUID, data: bytes, image: ImageInfo) -> str:
        """Upload the image (the SDK blocks, so off the event loop) and return its secure URL.

        Raises:
            StorageError: Cloudinary refused the upload or could not be reached.
        """
        try:
            result = await asyncio.to_thread(
                cloudinary.uploader.upload,
                data,
                public_id=self.public_id(user_id),
                overwrite=True,
                invalidate=True,
                resource_type="image",
                **self._credentials,
            )
        except Exception as exc:
            logger.warning("cloudinary upload failed (%s)", type(exc).__name__)
            raise StorageError("The avatar could not be stored") from exc
        url = result.get("secure_url") if isinstance(result, dict) else None
        if not url:
            raise StorageError("The avatar could not be stored")
        return str(url)

    async def discard(self, url: str) -> None:
        """Nothing to do: the upload overwrote the same public id."""

    async def read(self, url: str) -> StoredFile | None:
        """Nothing: Cloudinary serves the image itself (its URL is in the user record)."""
        return None


class LocalStorage:
    """Avatars as files under ``MEDIA_DIR``, served at ``/media``."""

    def __init__(self, media_dir: str | Path, public_base_url: str) -> None:
        """Create the directory if needed.

        Args:
            media_dir: Where the files go.
            public_base_url: The service's external URL; avatar URLs are absolute like Gravatar's.
        """
        self.directory = Path(media_dir)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.base_url = f"{public_base_url.rstrip('/')}{MEDIA_PATH}/"

    async def save(self, user_id: UUID, data: bytes, image: ImageInfo) -> str:
        """Write the file under a fresh server-made name and return its URL."""
        name = f"{user_id}-{secrets.token_hex(8)}.{image.extension}"
        await asyncio.to_thread(self._write, self.directory / name, data)
        return self.base_url + name

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        # Write aside and rename, so /media never serves a half-written file.
        partial = path.with_suffix(path.suffix + ".part")
        partial.write_bytes(data)
        partial.replace(path)

    def path_of(self, url: str) -> Path | None:
        """The file behind one of our URLs, or ``None`` for any other URL (Gravatar, Cloudinary...)."""
        path = urlparse(url).path
        if not path.startswith(f"{MEDIA_PATH}/"):
            return None
        name = path.removeprefix(f"{MEDIA_PATH}/")
        if not _LOCAL_NAME.fullmatch(name):
            return None
        return self.directory / name

    async def discard(self, url: str) -> None:
        """Remove the file behind a previous avatar URL, if it is one of ours."""
        path = self.path_of(url)
        if path is None:
            return
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:  # a leftover file is not worth failing the request for
            logger.warning("could not remove old avatar %s (%s)", path.name, type(exc).__name__)

    async def read(self, url: str) -> StoredFile | None:
        """The file behind one of our URLs (``None`` for another URL or a missing file).

        Raises:
            StorageError: The file is there but cannot be read.
        """
        path = self.path_of(url)
        if path is None:
            return None
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("could not read avatar %s (%s)", path.name, type(exc).__name__)
            raise StorageError("The avatar could not be read") from exc
        return StoredFile(path.name, data)


class S3Storage:
    """Avatars as objects in an S3-compatible bucket, read from the bucket's public URL.

    Uses obstore (Rust ``object_store``): native async calls, no thread per upload, and short
    timeouts with a bounded retry so an unreachable bucket answers ``502`` within seconds.
    """

    def __init__(self, settings: Settings) -> None:
        """Configure the client (no network I/O here; credentials may also come from ``AWS_*``).

        Args:
            settings: The ``S3_*`` settings (bucket, endpoint, keys, region, public URL).
        """
        if not settings.s3_bucket:  # load_settings refuses this; Settings built in code may not
            msg = "S3_BUCKET: required when AVATAR_STORAGE=s3"
            raise ValueError(msg)
        config: dict[str, Any] = {"region": settings.s3_region}
        if settings.s3_endpoint_url:
            # Self-hosted endpoints (MinIO, Ceph...) address buckets by path, not by host name.
            config.update(endpoint=settings.s3_endpoint_url, virtual_hosted_style_request=False)
        if settings.s3_access_key_id and settings.s3_secret_access_key:
            config.update(
                access_key_id=settings.s3_access_key_id, secret_access_key=settings.s3_secret_access_key
            )
        self.store = S3Store(
            settings.s3_bucket,
            client_options={
                "allow_http": bool(
                    settings.s3_endpoint_url and settings.s3_endpoint_url.startswith("http://")
                ),
                "connect_timeout": "3s",
                "timeout": "20s",
            },
            retry_config={
                "max_retries": 2,
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=1),
                    "base": 2,
                },
                "retry_timeout": timedelta(seconds=10),
            },
            **config,
        )
        self.base_url = f"{s3_public_url(settings).rstrip('/')}/"

    async def save(self, user_id: UUID, data: bytes, image: ImageInfo) -> str:
        """Put the object under a fresh server-made name and return its public URL.

        Raises:
            StorageError: The bucket refused the object or could not be reached.
        """
        key = f"{S3_PREFIX}{user_id}-{secrets.token_hex(8)}.{image.extension}"
        try:
            await obstore.put_async(
                self.store,
                key,
                data,
                # A new avatar gets a new name, so an object never changes: cache it for long.
                attributes={"Content-Type": FORMATS[image.kind][1], "Cache-Control": "public, max-age=86400"},
            )
        except Exception as exc:
            logger.warning("s3 upload failed (%s: %s)", type(exc).__name__, str(exc).split("\n", 1)[0][:200])
            raise StorageError("The avatar could not be stored") from exc
        return self.base_url + key

    def key_of(self, url: str) -> str | None:
        """The object behind one of our URLs, or ``None`` for any other URL (Gravatar...)."""
        if not url.startswith(self.base_url):
            return None
        key = url.removeprefix(self.base_url)
        if not key.startswith(S3_PREFIX) or not _LOCAL_NAME.fullmatch(key.removeprefix(S3_PREFIX)):
            return None
        return key

    async def discard(self, url: str) -> None:
        """Delete the object behind a previous avatar URL, if it is one of ours."""
        key = self.key_of(url)
        if key is None:
            return
        try:
            await obstore.delete_async(self.store, key)
        except Exception as exc:  # a leftover object is not worth failing the request for
            logger.warning("could not remove old avatar %s (%s)", key, type(exc).__name__)

    async def read(self, url: str) -> StoredFile | None:
        """The object behind one of our URLs (``None`` for another URL or a missing object).

        Raises:
            StorageError: The bucket could not be reached or refused the read.
        """
        key = self.key_of(url)
        if key is None:
            return None
        try:
            result = await obstore.get_async(self.store, key)
            data = await result.bytes_async()
        except NotFoundError:
            return None
        except Exception as exc:
            logger.warning("s3 read failed (%s: %s)", type(exc).__name__, str(exc).split("\n", 1)[0][:200])
            raise StorageError("The avatar could not be read") from exc
        return StoredFile(key.removeprefix(S3_PREFIX), bytes(data))


def s3_public_url(settings: Settings) -> str:
    """Where clients read the bucket's objects: ``S3_PUBLIC_URL``, else the endpoint's path-style URL.

    Args:
        settings: The ``S3_*`` settings.

    Returns:
        A base URL; an object's URL is this, ``/`` and its key.
    """
    if settings.s3_public_url:
        return settings.s3_public_url
    if settings.s3_endpoint_url:
        return f"{settings.s3_endpoint_url.rstrip('/')}/{settings.s3_bucket}"
    return f"https://{settings.s3_bucket}.s3.{settings.s3_region}.amazonaws.com"


def make_avatar_storage(settings: Settings) -> AvatarStorage:
    """Choose the avatar storage for the settings.

    Args:
        settings: The application settings.

    Returns:
        S3 with ``AVATAR_STORAGE=s3``; Cloudinary when ``CLOUDINARY_URL`` is set; local files otherwise.
    """
    if settings.avatar_storage == "s3":
        return S3Storage(settings)
    if settings.avatar_storage == "local":
        return LocalStorage(settings.media_dir, settings.public_base_url)
    if settings.cloudinary_url:
        return CloudinaryStorage(settings.cloudinary_url)
    return LocalStorage(settings.media_dir, settings.public_base_url)


def media_route_handlers(storage: AvatarStorage) -> list[Router]:
    """The ``/media`` file route when avatars are stored locally (none for Cloudinary).

    Names are server-made and unguessable, so the files are public like Gravatar's images;
    a new avatar gets a new name, so they can be cached for long.

    Args:
        storage: The chosen avatar storage.

    Returns:
        A list with the static files router, or an empty list.
    """
    if not isinstance(storage, LocalStorage):
        return []
    return [
        create_static_files_router(
            path=MEDIA_PATH,
            directories=[storage.directory],
            name="media",
            opt={"exclude_from_auth": True},
            cache_control=CacheControlHeader(max_age=86_400, public=True),
            exception_handlers={NotFoundException: file_not_found_handler},
        )
    ]
