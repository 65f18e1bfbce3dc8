"""A stand-in for the cards store API (``app.contacts.cards`` / ``ContactStore`` card methods).

Temporary: it lets the CardDAV layer be built and tested before the ``cards`` branch lands,
to the interface agreed in the brief. It is deleted when that branch is merged, and the
handler imports the real names instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID, uuid4

import msgspec
import vobject
from litestar.status_codes import (
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_410_GONE,
    HTTP_412_PRECONDITION_FAILED,
)

from app.errors import AppError


class CardError(AppError):
    """Not a card."""


class NotACardError(CardError):
    """Not a vCard."""


class CardWithoutNameError(CardError):
    """No FN or N."""


class CardTooLargeError(CardError):
    """Too large."""

    status_code = 413


class ContactNotFoundError(AppError):
    """Missing."""

    status_code = HTTP_404_NOT_FOUND


class StaleContactError(AppError):
    """If-Match failed."""

    status_code = HTTP_412_PRECONDITION_FAILED


class SyncTokenExpiredError(AppError):
    """Token too old."""

    status_code = HTTP_410_GONE


class UidConflictError(AppError):
    """UID taken."""

    status_code = HTTP_409_CONFLICT

    def __init__(self, href_name: str) -> None:
        """Name the card holding the UID."""
        super().__init__("UID taken")
        self.href_name = href_name


class StoredCard(msgspec.Struct):
    """A stored card."""

    id: UUID
    name: str
    uid: str
    etag: str
    card: str
    sync_seq: int


@dataclass
class Deleted:
    """A tombstone."""

    id: UUID
    name: str


@dataclass
class Changes:
    """A page of changes."""

    changed: list[StoredCard]
    deleted: list[Deleted]
    next: int
    more: bool


def serialize_card(text: str, version: Literal["3.0", "4.0"]) -> str:
    """The card with its VERSION set (the stand-in converts nothing else)."""
    card = vobject.readOne(text)
    card.version.value = version
    return card.serialize()


def _parse(text: str) -> Any:
    try:
        card = vobject.readOne(text)
    except Exception:
        raise NotACardError("Not a vCard") from None
    if card.name != "VCARD":
        raise NotACardError("Not a vCard")
    if not (card.contents.get("fn") or card.contents.get("n")):
        raise CardWithoutNameError("A card needs a name")
    return card


@dataclass
class _Book:
    cards: dict[str, StoredCard] = field(default_factory=dict)
    deleted: dict[str, tuple[Deleted, int]] = field(default_factory=dict)
    seq: int = 0
    oldest: int = 0


class StandInStore:
    """In-memory books, one per owner."""

    def __init__(self) -> None:
        """Start empty."""
        self.books: dict[UUID, _Book] = {}

    def _book(self, owner_id: UUID) -> _Book:
        return self.books.setdefault(owner_id, _Book())

    async def card_by_name(self, owner_id: UUID, name: str) -> StoredCard | None:
        """One card."""
        return self._book(owner_id).cards.get(name)

    async def cards_by_names(self, owner_id: UUID, names: Sequence[str]) -> list[StoredCard]:
        """Several cards."""
        book = self._book(owner_id)
        return [book.cards[name] for name in names if name in book.cards]

    async def iter_cards(self, owner_id: UUID, batch: int = 500) -> AsyncIterator[StoredCard]:
        """Every card."""
        del batch
        for card in list(self._book(owner_id).cards.values()):
            yield card

    async def put_card(
        self, owner_id: UUID, name: str, text: str, *, if_match: str | None, if_none_match_any: bool
    ) -> tuple[StoredCard, bool]:
        """Create or replace."""
        if len(text.encode()) > 1024 * 1024:
            raise CardTooLargeError("too large")
        parsed = _parse(text)
        if if_match is not None and if_match.strip() == "*":
            if_match = None
        book = self._book(owner_id)
        old = book.cards.get(name)
        if (old is not None and if_none_match_any) or (
            if_match is not None and (old is None or old.etag not in if_match)
        ):
            raise StaleContactError("stale")
        uid = parsed.uid.value if "uid" in parsed.contents else str(uuid4())
        for other in book.cards.values():
            if other.uid == uid and other.name != name:
                raise UidConflictError(other.name)
        book.seq += 1
        etag = '"' + hashlib.sha256(f"{text}{book.seq}".encode()).hexdigest()[:16] + '"'
        card = StoredCard(old.id if old else uuid4(), name, uid, etag, text, book.seq)
        book.cards[name] = card
        book.deleted.pop(name, None)
        return card, old is None

    async def delete_card(self, owner_id: UUID, name: str, *, if_match: str | None) -> None:
        """Delete."""
        book = self._book(owner_id)
        old = book.cards.get(name)
        if old is None:
            raise ContactNotFoundError("missing")
        if if_match is not None and old.etag not in if_match:
            raise StaleContactError("stale")
        del book.cards[name]
        book.seq += 1
        book.deleted[name] = (Deleted(old.id, name), book.seq)

    async def sync_token(self, owner_id: UUID) -> int:
        """The sequence."""
        return self._book(owner_id).seq

    async def changes(self, owner_id: UUID, since: int | None, limit: int) -> Changes:
        """Changes after ``since``."""
        book = self._book(owner_id)
        start = since or 0
        if start > book.seq or start < book.oldest:
            raise SyncTokenExpiredError("expired")
        items: list[tuple[int, StoredCard | Deleted]] = [
            (c.sync_seq, c) for c in book.cards.values() if c.sync_seq > start
        ]
        items += [(seq, d) for d, seq in book.deleted.values() if seq > start and since is not None]
        items.sort(key=lambda item: item[0])
        page = items[:limit]
        more = len(items) > limit
        nxt = page[-1][0] if more else book.seq
        return Changes(
            [c for _, c in page if isinstance(c, StoredCard)],
            [d for _, d in page if isinstance(d, Deleted)],
            nxt,
            more,
        )


def contact_store(state: Any) -> StandInStore:
    """The app's stand-in store."""
    store = state.get("_dav_standin")
    if store is None:
        store = state["_dav_standin"] = StandInStore()
    return store
