"""The ``contacts`` table.

Besides the fields the API shows, a row keeps a few derived columns that the queries need
and that the service maintains on every write (see :func:`derived_columns`):

* ``first_name_search`` / ``last_name_search``: the names case-folded in Python, because
  SQLite's ``lower()`` only knows ASCII; filters compare them with a pattern case-folded the
  same way, so search is case-insensitive for every script on every backend. (``email`` is
  stored lower-cased already, so it is its own search column.)
* ``birthday_md``: ``month * 100 + day`` of the birthday, indexed with the owner, so the
  birthday window is one or two range scans instead of a computation over every row.
* :data:`SEARCH_TEXT` (an expression, not a column): the three search keys joined. On
  PostgreSQL it is trigram-indexed together with the owner (``btree_gin``), so a substring
  search is one index scan over the owner's rows only, however many other users there are.
  It only pre-filters: a pattern found in one field is found in the joined text, so
  ``SEARCH_TEXT LIKE p AND (field LIKE p ...)`` selects exactly what the field test does.
* ``version``: bumped by every update; the ``ETag`` is made from it, and ``If-Match`` turns
  into ``UPDATE ... WHERE version = :v`` so a stale write changes nothing.

:class:`ContactCount` (table ``contact_counts``) keeps each owner's number of contacts,
maintained by triggers on ``contacts`` (migration 0004), so an unfiltered list reads its
total from one row instead of counting the whole book.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from advanced_alchemy.base import DefaultBase, UUIDv7AuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression, Grouping


class ContactRow(UUIDv7AuditBase):
    """One row of ``contacts``: an entry of a user's address book (the API shows it as ``schemas.Contact``).

    ``(owner_id, email)`` is unique; emails are stored trimmed and lower-cased, so this is
    the contract's "unique per owner, case-insensitively".
    """

    __tablename__ = "contacts"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    first_name: Mapped[str] = mapped_column(String(50))
    last_name: Mapped[str | None] = mapped_column(String(50), default=None)
    email: Mapped[str | None] = mapped_column(String(254), default=None)
    phone_number: Mapped[str | None] = mapped_column(String(20), default=None)
    birthday: Mapped[date | None] = mapped_column(Date, default=None)
    additional_data: Mapped[str | None] = mapped_column(String(500), default=None)
    # Case folding may lengthen a string (ß → ss), hence the room.
    first_name_search: Mapped[str] = mapped_column(String(150))
    #: ``""`` for a contact without a last name (sorts first on every backend, unlike NULL).
    last_name_search: Mapped[str] = mapped_column(String(150))
    birthday_md: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: The full vCard (3.0 or 4.0, as received; see ``app.contacts.cards``).
    card: Mapped[str] = mapped_column(Text)
    #: The card's ``UID`` (unique per owner).
    uid: Mapped[str] = mapped_column(String(255))
    #: The CardDAV resource name (``<name>.vcf``, unique per owner).
    dav_name: Mapped[str] = mapped_column(String(255))
    #: The owner's change sequence at this contact's latest change (set by triggers, migration 0006).
    sync_seq: Mapped[int | None] = mapped_column(BigInteger, default=None)

    __table_args__ = (
        # Unique among non-null emails: NULLs are distinct in a unique index on both backends.
        Index("uq_contacts_owner_email", "owner_id", "email", unique=True),
        Index("uq_contacts_owner_uid", "owner_id", "uid", unique=True),
        Index("uq_contacts_owner_dav_name", "owner_id", "dav_name", unique=True),
        # The changes feed: the owner's rows after a sequence number, in order.
        Index("ix_contacts_owner_sync_seq", "owner_id", "sync_seq"),
        # The list's orderings, each with the id as tie-break (also serve owner-only scans).
        Index("ix_contacts_owner_created", "owner_id", "created_at", "id"),
        Index("ix_contacts_owner_first_name", "owner_id", "first_name_search", "id"),
        Index("ix_contacts_owner_last_name", "owner_id", "last_name_search", "id"),
        Index("ix_contacts_owner_birthday", "owner_id", "birthday", "id"),
        # The birthday window: owner + month-day ranges.
        Index("ix_contacts_owner_birthday_md", "owner_id", "birthday_md"),
        # Substring search on PostgreSQL (pg_trgm); other dialects skip these indexes.
        *(
            Index(
                f"ix_contacts_{column}_trgm",
                column,
                postgresql_using="gin",
                postgresql_ops={column: "gin_trgm_ops"},
            ).ddl_if(dialect="postgresql")
            for column in ("first_name_search", "last_name_search", "email")
        ),
    )


class ContactCount(DefaultBase):
    """How many contacts an owner has: the total of an unfiltered list.

    Written only by the database: triggers on ``contacts`` (migration 0004) change it in the
    same transaction as the rows, so it is exact in every snapshot. No row means no contacts.
    """

    __tablename__ = "contact_counts"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    total: Mapped[int] = mapped_column(Integer)


class ContactSync(DefaultBase):
    """An owner's change sequence: bumped by every change of a contact (the sync token, the ctag).

    Written by triggers on ``contacts`` (migration 0006) and by the import, which takes a
    block of numbers at once. The row lock of the bump is held until the writer commits, so
    an owner's sequence numbers are committed in their order. ``purged_seq`` is the newest
    tombstone purged: a token older than it cannot be answered any more.
    """

    __tablename__ = "contact_sync"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    purged_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ContactTombstone(DefaultBase):
    """A deleted contact, kept (at least :data:`TOMBSTONES_KEPT`) for incremental syncs.

    Written by a trigger on ``contacts`` (migration 0006), whoever deletes; not for the
    contacts of a user being deleted.
    """

    __tablename__ = "contact_tombstones"

    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    sync_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    contact_id: Mapped[uuid.UUID] = mapped_column()
    dav_name: Mapped[str] = mapped_column(String(255))
    uid: Mapped[str] = mapped_column(String(255))
    deleted_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))

    __table_args__ = (Index("ix_contact_tombstones_deleted_at", "deleted_at"),)


#: Tombstones are purged after this long; a sync token older than the purge gets a ``410``.
TOMBSTONES_KEPT = timedelta(days=30)


def _joined(*parts: Any) -> Any:
    """``a || ' ' || b || ...``, bracketed the way PostgreSQL prints an index expression.

    The brackets change nothing for the database; they let Alembic's comparison find the
    declared and the reflected index equal (plain ``+`` renders flat: a false drift).

    Args:
        parts: The string columns to join.

    Returns:
        The SQL expression.
    """
    joined = parts[0]
    for part in parts[1:]:
        spaced = Grouping(
            BinaryExpression(joined, literal_column("' '"), operators.concat_op, type_=String())
        )
        joined = Grouping(BinaryExpression(spaced, part, operators.concat_op, type_=String()))
    return joined


#: The search keys joined, for a substring pre-filter (see the module docstring). The
#: separator is a literal, not a bound value, so PostgreSQL matches the expression to the index.
#: A contact without an email joins ``''`` in its place (else the whole text would be NULL).
SEARCH_TEXT = _joined(
    ContactRow.first_name_search,
    ContactRow.last_name_search,
    func.coalesce(ContactRow.email, literal_column("''")),
)

# Owner + trigrams of SEARCH_TEXT in one GIN index (btree_gin gives uuid a GIN operator class),
# so the owner's matches come out of one scan instead of every owner's matches ANDed with the
# owner's 100k rows. PostgreSQL only, like the other trigram indexes.
Index(
    "ix_contacts_owner_search_trgm",
    ContactRow.owner_id,
    SEARCH_TEXT.label("search_text"),
    postgresql_using="gin",
    postgresql_ops={"search_text": "gin_trgm_ops"},
).ddl_if(dialect="postgresql")


def fold(text: str) -> str:
    """Case-fold ``text`` the way the search columns and search patterns are folded.

    Args:
        text: Any string.

    Returns:
        The case-folded string.
    """
    return text.casefold()


def month_day(born: date | None) -> int | None:
    """The ``birthday_md`` key of a birthday (``month * 100 + day``), or ``None``.

    Args:
        born: The birthday.

    Returns:
        The key.
    """
    return None if born is None else born.month * 100 + born.day


def derived_columns(values: dict[str, Any]) -> dict[str, Any]:
    """Add the derived columns for the user-facing values present in ``values``.

    Args:
        values: Column values about to be written (may be partial).

    Returns:
        ``values`` with the matching derived columns added.
    """
    if "first_name" in values:
        values["first_name_search"] = fold(values["first_name"])
    if "last_name" in values:
        values["last_name_search"] = fold(values["last_name"] or "")
    if "birthday" in values:
        values["birthday_md"] = month_day(values["birthday"])
    return values
