"""The account's data export: everything the service keeps about a user, as one zip.

The archive holds

* ``account.json``: the user, every session row (live and ended; never a token's hash) and
  the app passwords' names (never their secrets);
* ``contacts.vcf`` and ``contacts.csv``: the address book as ``GET /api/contacts/export``
  writes it (:func:`app.contacts.exchange.export_text`): the full cards, and the JSON fields;
* ``avatar.<ext>``: the avatar file when the service stores it (local files or S3); a Gravatar
  or Cloudinary avatar is a URL, shown in ``account.json``.

What is small (the account, the avatar) is read before the answer starts, so a failing
database or bucket is a clean error status; the contacts are then read a batch per statement
while the zip is sent (:mod:`app.export.archive`), so the memory an export holds does not grow
with the address book.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import inspect

from app.contacts import exchange
from app.export.archive import ZipStream, one

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from uuid import UUID

    from app.contacts.store import ContactStore
    from app.storage.adapters import AvatarStorage, StoredFile
    from app.users.app_passwords import AppPasswordService
    from app.users.models import UserSession
    from app.users.service import UserService

#: ``format`` of ``account.json``: bumped when its shape changes incompatibly.
FORMAT = "contacts-api-export/1"
#: The user's fields in ``account.json``.
USER_FIELDS = ("id", "username", "email", "role", "confirmed", "avatar_url", "created_at", "updated_at")

_encode = msgspec.json.Encoder().encode


#: Columns of a session row left out of the export: a secret's hash, and what the file says anyway.
_SESSION_LEFT_OUT = frozenset({"refresh_token_hash", "user_id"})


def _session_row(row: UserSession) -> dict[str, Any]:
    """A session row as exported: every mapped column (device, network, last use...) but the hash.

    Read from the mapping, so that a column added to sessions later is exported too; a column
    holding a secret must be named in :data:`_SESSION_LEFT_OUT`.
    """
    return {
        attribute.key: getattr(row, attribute.key)
        for attribute in inspect(type(row)).column_attrs
        if attribute.key not in _SESSION_LEFT_OUT and not attribute.key.startswith(("_", "sa_orm"))
    }


@dataclass
class AccountExport:
    """One prepared export: the small members read, the contacts still to stream."""

    #: The download's file name.
    filename: str
    #: ``account.json``.
    account: bytes
    #: The stored avatar file, if any.
    avatar: StoredFile | None
    #: Whose contacts.
    owner_id: UUID
    #: Where the contacts are read from.
    contacts: ContactStore
    #: When the export was made.
    made_at: datetime

    async def chunks(self) -> AsyncIterator[bytes]:
        """The zip, as it is produced."""
        archive = ZipStream(self.made_at)
        async for out in archive.member("account.json", one(self.account)):
            yield out
        for name, export_format in (("contacts.vcf", "vcard"), ("contacts.csv", "csv")):
            text = exchange.export_text(self.contacts, self.owner_id, export_format)
            async for out in archive.member(name, text, large=True):
                yield out
        if self.avatar is not None:
            extension = self.avatar.name.rpartition(".")[2]
            async for out in archive.member(f"avatar.{extension}", one(self.avatar.data)):
                yield out
        yield archive.finish()


class ExportService:
    """Prepares a user's data export."""

    def __init__(
        self,
        *,
        users: UserService,
        app_passwords: AppPasswordService,
        contacts: ContactStore,
        storage: AvatarStorage,
    ) -> None:
        """Configure the service.

        Args:
            users: The user service (the user, their sessions), on the request's database session.
            app_passwords: The app password service, on the same session.
            contacts: The contacts store.
            storage: The avatar storage chosen at start-up.
        """
        self.users = users
        self.app_passwords = app_passwords
        self.contacts = contacts
        self.storage = storage

    async def prepare(self, user_id: UUID) -> AccountExport:
        """Read the account and the avatar; the contacts follow while the zip is sent.

        Args:
            user_id: The user exporting their data.

        Returns:
            The export, ready to stream.

        Raises:
            NotFoundError: No such user.
            StorageError: The stored avatar could not be read.
        """
        now = datetime.now(UTC)
        user = await self.users.get(user_id)
        sessions = await self.users.sessions_of(user_id)
        app_passwords = await self.app_passwords.list_of(user_id)
        # Hand the connection back before the avatar's read (which may wait on a bucket).
        await self.users.repository.session.commit()
        avatar = await self.storage.read(user.avatar_url)
        document = {
            "format": FORMAT,
            "exported_at": now,
            "user": {name: getattr(user, name) for name in USER_FIELDS},
            "sessions": [_session_row(row) for row in sessions],
            "app_passwords": sorted(app_passwords, key=lambda p: (p.created_at, p.id)),
            "files": {
                "contacts.vcf": "every contact as a vCard 4.0",
                "contacts.csv": "every contact as CSV, the columns of GET /api/contacts/export?format=csv",
                **({f"avatar.{avatar.name.rpartition('.')[2]}": "the avatar"} if avatar else {}),
            },
        }
        return AccountExport(
            filename=f"contacts-api-export-{now:%Y-%m-%d}.zip",
            account=msgspec.json.format(_encode(document), indent=2),
            avatar=avatar,
            owner_id=user_id,
            contacts=self.contacts,
            made_at=now,
        )
