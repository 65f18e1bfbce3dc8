"""The address book: every contacts statement, and the rules around them, in one store.

Every statement carries the owner's id in its ``WHERE`` clause: another user's contact is
not found, exactly like a missing one. Statements are built once (:class:`CompiledStatement`)
and select plain columns, so a row maps straight onto the response Struct. They run on the
:class:`~app.db.DirectPool`: a read or a write is one statement, committed on its own; the
import's rows are inserted in one transaction.
"""

from __future__ import annotations

import calendar
import collections
import functools
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload
from uuid import UUID

import anyio
import anyio.to_thread
import msgspec
from advanced_alchemy.exceptions import IntegrityError
from advanced_alchemy.mixins.uuid import uuid7
from litestar.status_codes import (
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_410_GONE,
    HTTP_412_PRECONDITION_FAILED,
)
from sqlalchemy import (
    TypeDecorator,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.contacts import exchange
from app.contacts.cards import (
    MAX_UID_LENGTH,
    Card,
    CardError,
    apply_fields,
    content_uid,
    new_card,
    parse_card,
    uid_of,
    with_content_uid,
)
from app.contacts.models import (
    SEARCH_TEXT,
    TOMBSTONES_KEPT,
    ContactCount,
    ContactRow,
    ContactSync,
    ContactTombstone,
    derived_columns,
    fold,
)
from app.contacts.schemas import (
    Contact,
    ContactBirthday,
    ContactCreate,
    ContactPage,
    ContactUpdate,
    ImportResult,
    ImportRowError,
    normalize_phone,
)
from app.db import CompiledStatement
from app.errors import AppError
from app.input import explain

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.config import Settings
    from app.db import DirectPool

# --------------------------------------------------------------------------- errors


class ContactNotFoundError(AppError):
    """No such contact among the owner's (or a malformed id)."""

    status_code = HTTP_404_NOT_FOUND
    detail = "Not found"


class InvalidContactError(AppError):
    """Input that passed the schema but breaks a rule: a ``400`` naming ``field``."""

    def __init__(self, field: str, message: str) -> None:
        """Name the ``field`` that breaks a rule and say why in ``message``."""
        super().__init__(message, field=field)


class TooManyVersionsError(InvalidContactError):
    """``If-Match`` names more versions than a write accepts."""

    def __init__(self) -> None:
        """Name the header."""
        super().__init__("If-Match", "names too many versions")


class StaleContactError(AppError):
    """``If-Match`` named a version the contact no longer has."""

    status_code = HTTP_412_PRECONDITION_FAILED
    detail = "The contact has changed since this ETag: fetch it again"


class EmailTakenError(InvalidContactError):
    """A card's email is another contact's already (a ``409``, like the JSON API's duplicate)."""

    status_code = HTTP_409_CONFLICT

    def __init__(self) -> None:
        """Name the field."""
        super().__init__("email", "You already have a contact with this email")


class UidConflictError(AppError):
    """A card's ``UID`` is another resource's already, or a write would change a resource's ``UID``."""

    status_code = HTTP_409_CONFLICT
    detail = "Another card of the address book has this UID"

    def __init__(self, href_name: str) -> None:
        """Name the resource (``href_name``) that holds the UID."""
        super().__init__()
        self.href_name = href_name


class SyncTokenExpiredError(AppError):
    """The sync token is older than the kept deletions (or newer than the book): start over."""

    status_code = HTTP_410_GONE
    detail = "This sync token has expired: sync again without one"


class StoredCard(msgspec.Struct, kw_only=True):
    """A contact as CardDAV sees it: its resource name, UID, ETag and stored vCard."""

    id: UUID
    #: The resource name, e.g. ``"abc.vcf"``.
    name: str
    uid: str
    #: Strong and quoted: the same value as the JSON API's ``ETag`` of the contact.
    etag: str
    card: str
    sync_seq: int


class Deleted(msgspec.Struct, kw_only=True):
    """A contact deleted after a sync token: its id and its resource name."""

    id: UUID
    name: str


class Changes(msgspec.Struct, kw_only=True):
    """What changed after a sync token, oldest change first (see :meth:`ContactStore.changes`)."""

    #: Contacts created or changed, each once, in its latest state.
    changed: list[StoredCard]
    #: The same contacts in the JSON view, in the same order.
    contacts: list[Contact]
    deleted: list[Deleted]
    #: The token after these changes.
    next: int
    #: More changes wait after ``next``.
    more: bool

    def gone_names(self) -> list[str]:
        """The resource names deleted and not made again within this answer (CardDAV's 404s).

        A name deleted and then used by a new card shows in ``deleted`` (the old contact's id,
        which JSON clients need) and in ``changed``; a CardDAV client is told about the card.
        """
        live = {card.name for card in self.changed}
        return [gone.name for gone in self.deleted if gone.name not in live]


# --------------------------------------------------------------------------- statements

#: The columns a response is built from, in the order of the ``Contact`` Struct, then the version.
COLUMNS = (
    ContactRow.id,
    ContactRow.first_name,
    ContactRow.last_name,
    ContactRow.email,
    ContactRow.phone_number,
    ContactRow.birthday,
    ContactRow.additional_data,
    ContactRow.created_at,
    ContactRow.updated_at,
    ContactRow.version,
)

#: ``order_by`` values → the column sorted on (names sort case-insensitively, by their folded form).
ORDER_COLUMNS: dict[str, Any] = {
    "first_name": ContactRow.first_name_search,
    "last_name": ContactRow.last_name_search,
    "birthday": ContactRow.birthday,
    "created_at": ContactRow.created_at,
}

#: Offsets beyond this match nothing (and would overflow a 64-bit SQL integer).
MAX_OFFSET = 2**62
#: Tries of a JSON write whose card changed under it before it gives up (a ``412``).
UPDATE_ATTEMPTS = 5
#: If-Match may name at most this many of a contact's versions.
MAX_IF_MATCH_VERSIONS = 32
#: Contacts read per statement while exporting.
EXPORT_BATCH = 500
#: Work between two hand-overs of the interpreter while an import's file is read (seconds).
IMPORT_YIELD_SECONDS = 0.002
#: Contacts per INSERT while importing: each statement's values stay small (on SQLite, 14 bound
#: values a row stay far below the 32,766 a statement takes).
IMPORT_BATCH = 500

_OWNER = ContactRow.owner_id == bindparam("owner_id")
_ID = ContactRow.id == bindparam("contact_id")


def _contains(column: Any, name: str) -> ColumnElement[bool]:
    # One bound pattern (not '%' || :v || '%'), so PostgreSQL can plan the trigram index for it.
    return column.like(bindparam(name), escape="\\")


def _search(column: Any, name: str) -> ColumnElement[bool]:
    """``column`` contains the pattern ``name``, pre-filtered through :data:`SEARCH_TEXT`.

    A field that contains the pattern makes the joined text contain it, so the pre-filter
    drops nothing; on PostgreSQL it is what the owner + trigram index answers.
    """
    return and_(_contains(SEARCH_TEXT, name), _contains(column, name))


_Q_FIELDS = or_(
    _contains(ContactRow.first_name_search, "q_name"),
    _contains(ContactRow.last_name_search, "q_name"),
    _contains(ContactRow.email, "q_email"),
)

#: Each filter's condition, on a bound pattern named like the filter. ``q`` has two forms:
#: names are case-folded and emails lower-cased, which differ for a few letters ("ß"), and
#: then the joined text is searched for both patterns.
_FILTERS: dict[str, ColumnElement[bool]] = {
    "first_name": _search(ContactRow.first_name_search, "first_name"),
    "last_name": _search(ContactRow.last_name_search, "last_name"),
    "email": _search(ContactRow.email, "email"),
    "q": and_(_contains(SEARCH_TEXT, "q_name"), _Q_FIELDS),
    "q_unlike": and_(or_(_contains(SEARCH_TEXT, "q_name"), _contains(SEARCH_TEXT, "q_email")), _Q_FIELDS),
}

#: The owner's number of contacts, kept by the database (0 when the owner has no counter row).
_TOTAL = func.coalesce(
    select(ContactCount.total).where(ContactCount.owner_id == bindparam("owner_id")).scalar_subquery(),
    literal_column("0"),
)

#: The owner's change sequence (0 before the first change): every write to the book moves it,
#: in the same transaction, so it names one state of the book.
_BOOK_SEQ = func.coalesce(
    select(ContactSync.seq).where(ContactSync.owner_id == bindparam("owner_id")).scalar_subquery(),
    literal_column("0"),
)
#: Filtered totals kept per process (see :meth:`ContactStore.list_contacts`).
TOTALS_KEPT = 1024
#: The bound patterns of the filters, in the order they make a key of the totals kept.
_PATTERNS = ("first_name", "last_name", "email", "q_name", "q_email")

#: One contact of an owner (``owner_id``, ``contact_id``).
ONE = CompiledStatement(select(*COLUMNS).where(_ID, _OWNER))
#: Whether an owner has a contact.
EXISTS = CompiledStatement(select(ContactRow.id).where(_ID, _OWNER))
#: Delete one contact of an owner, returning its id.
DELETE = CompiledStatement(delete(ContactRow).where(_ID, _OWNER).returning(ContactRow.id))
#: Every email and id of an owner's contacts (the import's de-duplication).
EMAILS = CompiledStatement(select(ContactRow.email, ContactRow.id).where(_OWNER))
#: The owner's next ``limit`` contacts by id after ``after`` (the export's keyset paging).
BATCH_AFTER = CompiledStatement(
    select(*COLUMNS)
    .where(_OWNER, ContactRow.id > bindparam("after", type_=ContactRow.id.type))
    .order_by(ContactRow.id)
    .limit(bindparam("limit"))
)
#: Below every id: the ``after`` of the export's first batch.
_FIRST_ID = UUID(int=0)

#: The columns of a :class:`StoredCard` (``etag`` from the version).
CARD_COLUMNS = (
    ContactRow.id,
    ContactRow.dav_name,
    ContactRow.uid,
    ContactRow.version,
    ContactRow.card,
    ContactRow.sync_seq,
)
_NAME = ContactRow.dav_name == bindparam("name")
#: One card of an owner by resource name.
CARD_BY_NAME = CompiledStatement(select(*CARD_COLUMNS).where(_OWNER, _NAME))
#: The owner's next ``limit`` cards by id after ``after`` (streams the book).
CARDS_AFTER = CompiledStatement(
    select(*CARD_COLUMNS)
    .where(_OWNER, ContactRow.id > bindparam("after", type_=ContactRow.id.type))
    .order_by(ContactRow.id)
    .limit(bindparam("limit"))
)
#: A contact's card and version (the JSON writes rewrite the card).
#: A contact's card and version, then its JSON view (a JSON write leaves the properties of
#: the fields it does not change as they are).
CARD_OF = CompiledStatement(select(ContactRow.card, ContactRow.version, *COLUMNS[1:7]).where(_ID, _OWNER))
#: What a CardDAV ``PUT`` must know: the resource of that name and the one holding that UID.
CARD_SLOTS = CompiledStatement(
    select(ContactRow.id, ContactRow.dav_name, ContactRow.uid, ContactRow.version).where(
        _OWNER, or_(_NAME, ContactRow.uid == bindparam("uid"))
    )
)
#: A contact's sequence number (SQLite's RETURNING shows it from before the triggers).
SEQ_OF = CompiledStatement(select(ContactRow.sync_seq).where(_ID, _OWNER))
#: The owner's change counter and the newest purged tombstone.
SYNC_STATE = CompiledStatement(
    select(ContactSync.seq, ContactSync.purged_seq).where(ContactSync.owner_id == bindparam("owner_id"))
)
_SEQ_RANGE = (ContactRow.sync_seq > bindparam("since"), ContactRow.sync_seq <= bindparam("upto"))
#: Contacts changed in a sequence range, oldest change first (index ``(owner_id, sync_seq)``).
CHANGED = CompiledStatement(
    select(*COLUMNS, ContactRow.dav_name, ContactRow.uid, ContactRow.card, ContactRow.sync_seq)
    .where(_OWNER, *_SEQ_RANGE)
    .order_by(ContactRow.sync_seq)
    .limit(bindparam("limit"))
)
_T_OWNER = ContactTombstone.owner_id == bindparam("owner_id")
#: Contacts deleted in a sequence range, oldest first (the tombstones' primary key).
DELETED = CompiledStatement(
    select(ContactTombstone.contact_id, ContactTombstone.dav_name, ContactTombstone.sync_seq)
    .where(
        _T_OWNER,
        ContactTombstone.sync_seq > bindparam("since"),
        ContactTombstone.sync_seq <= bindparam("upto"),
    )
    .order_by(ContactTombstone.sync_seq)
    .limit(bindparam("limit"))
)
#: Names per statement of :meth:`ContactStore.cards_by_names` (statements exist for powers of two).
NAMES_BATCH = 64


@functools.cache
def cards_by_names_statement(count: int) -> CompiledStatement:
    """The owner's cards among ``count`` names (bound ``n0``, ``n1``...)."""
    names = [bindparam(f"n{i}") for i in range(count)]
    return CompiledStatement(select(*CARD_COLUMNS).where(_OWNER, ContactRow.dav_name.in_(names)))


@functools.cache
def delete_card_statement(versions: int | None) -> CompiledStatement:
    """Delete a card by name, at one of ``versions`` versions (``v0``...; ``None``: any), returning its id."""
    where = [_OWNER, _NAME]
    if versions is not None:
        where.append(ContactRow.version.in_([bindparam(f"v{i}") for i in range(versions)]))
    return CompiledStatement(delete(ContactRow).where(*where).returning(ContactRow.id))


@functools.cache
def reserve_seq_statement(dialect_name: str) -> CompiledStatement:
    """Move the owner's counter on by ``count`` numbers (creating it), returning the last one.

    The row stays locked until the transaction ends: the numbers commit in order.
    """
    dialect_insert = postgresql.insert if dialect_name == "postgresql" else sqlite_insert
    statement = dialect_insert(ContactSync).values(
        owner_id=bindparam("owner_id"), seq=bindparam("count"), purged_seq=0
    )
    return CompiledStatement(
        statement.on_conflict_do_update(
            index_elements=[ContactSync.owner_id], set_={"seq": ContactSync.seq + statement.excluded.seq}
        ).returning(ContactSync.seq)
    )


@functools.cache
def page_statements(
    filters: frozenset[str], order_by: str, descending: bool
) -> tuple[CompiledStatement, CompiledStatement]:
    """The count and the page statement for one combination of filters and ordering.

    There are few combinations (4 filters x 4 orderings x 2 directions), so each is built once.
    Contacts without a birthday sort last in both directions. Without filters every page row
    ends with the owner's counter (:class:`ContactCount`), so the page and its total come from
    one statement; the count statement then reads the counter alone. With filters every page
    row ends with the owner's change sequence, and the count statement gives the count and
    the sequence it was taken at (one snapshot each).

    Args:
        filters: The names of the filters present (keys of ``_FILTERS``).
        order_by: A key of :data:`ORDER_COLUMNS`.
        descending: Sort descending.

    Returns:
        The count statement and the page statement (bound ``owner_id``, ``limit``, ``offset``
        and the filters' patterns).
    """
    where = [_OWNER, *(condition for name, condition in _FILTERS.items() if name in filters)]
    column = ORDER_COLUMNS[order_by]
    first = column.desc() if descending else column.asc()
    if order_by == "birthday":
        first = first.nulls_last()
    ordering = [first, ContactRow.id.desc() if descending else ContactRow.id.asc()]
    if filters:
        count = select(func.count(), _BOOK_SEQ.label("seq")).select_from(ContactRow).where(*where)
        page = select(*COLUMNS, _BOOK_SEQ.label("seq"))
    else:
        count = select(_TOTAL)
        page = select(*COLUMNS, _TOTAL.label("total"))
    page = page.where(*where).order_by(*ordering).limit(bindparam("limit")).offset(bindparam("offset"))
    return CompiledStatement(count), CompiledStatement(page)


def _birthdays_statement(ranges: int) -> CompiledStatement:
    md = ContactRow.birthday_md
    matches = [md.between(bindparam(f"low{i}"), bindparam(f"high{i}")) for i in range(ranges)]
    return CompiledStatement(
        select(*COLUMNS)
        .where(_OWNER, or_(*matches) if ranges > 1 else matches[0])
        .order_by(
            case((md >= bindparam("start"), 0), else_=1), md, ContactRow.last_name_search, ContactRow.id
        )
    )


#: Contacts with a birthday in one or in two month-day ranges (a window over the new year).
BIRTHDAYS = {1: _birthdays_statement(1), 2: _birthdays_statement(2)}

#: The columns a write may set: the fields of a new contact, its card, then the columns derived from them.
VALUE_COLUMNS = (
    *ContactCreate.__struct_fields__,
    "card",
    "uid",
    "first_name_search",
    "last_name_search",
    "birthday_md",
)
#: Every column of a new row: ids, timestamps and version are made by the store. ``sync_seq``
#: is left out: the database stamps the row (migration 0006).
NEW_COLUMNS = ("id", "owner_id", "created_at", "updated_at", "version", "dav_name", *VALUE_COLUMNS)
#: The import's rows carry their sequence numbers, reserved for the whole file at once.
IMPORT_COLUMNS = (*NEW_COLUMNS, "sync_seq")


def _bound(name: str, key: str | None = None) -> Any:
    """A bound value typed like the column ``name`` (SQLite stores dates and times by type)."""
    return bindparam(key or name, type_=ContactRow.__table__.c[name].type)


#: A new contact, returning it.
INSERT = CompiledStatement(
    insert(ContactRow).values({name: _bound(name) for name in NEW_COLUMNS}).returning(*COLUMNS)
)
#: A new contact, returning it as a card.
INSERT_CARD = CompiledStatement(
    insert(ContactRow).values({name: _bound(name) for name in NEW_COLUMNS}).returning(*CARD_COLUMNS)
)


def _array_of(name: str) -> Any:
    """A bound PostgreSQL array of values of the column ``name``."""
    kind = ContactRow.__table__.c[name].type
    if isinstance(kind, TypeDecorator):
        kind = kind.load_dialect_impl(postgresql.dialect())
    return cast(bindparam(name), postgresql.ARRAY(kind))


@functools.cache
def insert_new_statement(dialect_name: str) -> CompiledStatement:
    """New contacts, passing over an email the owner has (``ON CONFLICT DO NOTHING``), returning ids.

    PostgreSQL reads the rows as one array per column (``unnest``: one prepared statement for
    any number of rows); SQLite gets them as one multi-row ``VALUES``. Built on first use: the
    type of ``owner_id`` is the one of ``users.id``, known once that model is loaded.

    Args:
        dialect_name: ``postgresql`` or ``sqlite``.

    Returns:
        The statement, for :meth:`~app.db.DirectTransaction.insert_rows`.
    """
    if dialect_name != "postgresql":
        return CompiledStatement(sqlite_insert(ContactRow).on_conflict_do_nothing().returning(ContactRow.id))
    rows = (
        func.unnest(*(_array_of(name) for name in IMPORT_COLUMNS))
        .table_valued(*IMPORT_COLUMNS)
        .render_derived()
    )
    return CompiledStatement(
        postgresql.insert(ContactRow)
        .from_select(IMPORT_COLUMNS, select(*rows.c))
        .on_conflict_do_nothing()
        .returning(ContactRow.id)
    )


@functools.cache
def update_statement(
    columns: frozenset[str], versions: int | None, as_card: bool = False
) -> CompiledStatement:
    """The conditional ``UPDATE`` of ``columns``, for ``versions`` accepted versions (``None``: any).

    Args:
        columns: The columns set (names of :data:`VALUE_COLUMNS`; bound as ``set_<name>``).
        versions: How many versions ``If-Match`` accepts (bound as ``v0``, ``v1``...), or ``None``.
        as_card: Return ``CARD_COLUMNS`` instead of ``COLUMNS``.

    Returns:
        The statement.
    """
    # An UPDATE reserves its columns' names for the SET clause: every value is bound as "set_<name>".
    where = [ContactRow.id == bindparam("set_contact_id"), ContactRow.owner_id == bindparam("set_owner_id")]
    if versions is not None:
        where.append(ContactRow.version.in_([bindparam(f"v{i}") for i in range(versions)]))
    values = {name: _bound(name, f"set_{name}") for name in VALUE_COLUMNS if name in columns}
    return CompiledStatement(
        update(ContactRow)
        .where(*where)
        .values(version=ContactRow.version + 1, updated_at=_bound("updated_at", "set_updated_at"), **values)
        .returning(*(CARD_COLUMNS if as_card else COLUMNS))
    )


# --------------------------------------------------------------------------- pure rules

_C = TypeVar("_C", bound=Contact)
_ETAG = re.compile(r'^"v(\d{1,9})"$')
_CR = re.compile(r"\r\n?")
#: Free-text fields whose line breaks are stored as LF.
_TEXT_FIELDS = frozenset({"first_name", "last_name", "additional_data"})
#: The JSON fields, in the order of the ``Contact`` Struct (and of ``COLUMNS[1:7]``).
_FIELDS = ("first_name", "last_name", "email", "phone_number", "birthday", "additional_data")


def etag(version: int) -> str:
    """The ``ETag`` of a contact at ``version`` (a strong validator).

    Args:
        version: The contact's version.

    Returns:
        The quoted entity tag.
    """
    return f'"v{version}"'


def parse_if_match(header: str | None) -> set[int] | None:
    """The versions an ``If-Match`` header accepts: ``None`` for no condition (absent or ``*``).

    Weak tags never match (``If-Match`` uses the strong comparison), nor do tags that are not
    ours, so a header with none of ours yields an empty set: nothing will be written.

    Args:
        header: The raw header value.

    Returns:
        The accepted versions, or ``None``.
    """
    if header is None or header.strip() == "*":
        return None
    versions = set()
    for tag in header.split(","):
        if match := _ETAG.match(tag.strip()):
            versions.add(int(match.group(1)))
    return versions


@overload
def plain_line_breaks(text: str) -> str: ...
@overload
def plain_line_breaks(text: None) -> None: ...
def plain_line_breaks(text: str | None) -> str | None:
    r"""``text`` with every line break as LF (a CRLF or a bare CR becomes ``\n``).

    vCard has one line break (``\n``, RFC 6350 3.4): a CR could not come back from an export.

    Args:
        text: A text field's value, or ``None``.

    Returns:
        The text with LF line breaks.
    """
    return None if text is None else _CR.sub("\n", text)


def like_pattern(value: str) -> str:
    r"""A ``LIKE`` pattern matching ``value`` anywhere, with ``\\ % _`` matching themselves."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def birthday_on(born: date, year: int) -> date:
    """The day a birthday is celebrated in ``year`` (29 February → 28 February in common years).

    Args:
        born: The birthday.
        year: The year.

    Returns:
        The date.
    """
    if born.month == 2 and born.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return date(year, born.month, born.day)


def next_birthday(born: date, today: date) -> date:
    """The first birthday on or after ``today``.

    Args:
        born: The birthday.
        today: The reference day.

    Returns:
        The date of the next birthday.
    """
    this_year = birthday_on(born, today.year)
    return this_year if this_year >= today else birthday_on(born, today.year + 1)


def birthday_ranges(today: date, days: int) -> list[tuple[int, int]]:
    """Month-day key ranges (``month * 100 + day``, inclusive) covering ``today`` .. ``today + days``.

    One range per calendar year the window touches, in date order. In a common year the
    window's 28 February also covers key 229 (29 February birthdays are kept that day).

    Args:
        today: First day of the window.
        days: Days after ``today`` in the window (0-365).

    Returns:
        One or two ranges.
    """
    end = today + timedelta(days=days)
    segments = (
        [(today, end)]
        if end.year == today.year
        else [(today, date(today.year, 12, 31)), (date(end.year, 1, 1), end)]
    )
    ranges = []
    for first, last in segments:
        low, high = first.month * 100 + first.day, last.month * 100 + last.day
        if high == 228 and not calendar.isleap(last.year):
            high = 229
        ranges.append((low, high))
    return ranges


def _row_error(exc: msgspec.ValidationError) -> str:
    """An import row's validation error as ``field: what is wrong``, in the API's words (``app.input``)."""
    message, _, where = str(exc).partition(" - at `$.")
    field = where.rstrip("`")
    return f"{field}: {explain(message)}" if field else explain(message)


def _to_contact(row: Sequence[Any], struct: type[_C] = Contact, **extra: Any) -> _C:  # type: ignore[assignment]
    """The response Struct of a row of ``COLUMNS`` (``extra`` fills a subclass's own fields)."""
    return struct(
        id=row[0],
        first_name=row[1],
        last_name=row[2],
        email=row[3],
        phone_number=row[4],
        birthday=row[5],
        additional_data=row[6],
        created_at=row[7],
        updated_at=row[8],
        **extra,
    )


# --------------------------------------------------------------------------- the store


class ContactStore:
    """The owners' address books: each method checks the rules and runs its statements.

    One per application (it holds nothing of a request).

    Args:
        pool: What runs the statements.
        settings: The application settings (time zone of "today", phone region, import limit).
    """

    def __init__(self, pool: DirectPool, settings: Settings) -> None:
        """Run statements on ``pool`` under the application ``settings``."""
        self.pool = pool
        self.settings = settings
        #: Filtered totals by (owner, change sequence, filters, patterns), oldest use first.
        self._totals: collections.OrderedDict[tuple[Any, ...], int] = collections.OrderedDict()

    def today(self) -> date:
        """Today in the configured time zone."""
        return datetime.now(self.settings.tz).date()

    # ------------------------------------------------------------------ reads

    async def get_contact(self, owner_id: UUID, contact_id: UUID) -> tuple[Contact, str]:
        """One of the owner's contacts and its ETag.

        Raises:
            ContactNotFoundError: Missing or not the owner's.
        """
        rows = await self.pool.fetch(ONE, owner_id=owner_id, contact_id=contact_id)
        if not rows:
            raise ContactNotFoundError
        return _to_contact(rows[0]), etag(rows[0][-1])

    async def list_contacts(
        self,
        owner_id: UUID,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        email: str | None = None,
        q: str | None = None,
        order_by: str = "created_at",
        descending: bool = False,
        limit: int = 20,
        offset: int = 0,
    ) -> ContactPage:
        """One page of the owner's contacts and the total matching the filters.

        Filters are case-insensitive substrings combined with ``AND``; ``q`` matches any of
        the three fields. One statement, unless the page cannot tell the total: with filters
        one row more than ``limit`` is asked for, and only when it comes is a ``COUNT`` run;
        without filters the total is on every row, and only an empty page past the end reads
        the counter alone.

        A ``COUNT`` of a short term over a large book reads every row of it (``q=a`` over
        100k contacts: tens of ms), so filtered totals are kept (:data:`TOTALS_KEPT`, in
        this process) under the owner's change sequence, which every page row carries: a
        count is reused only for the very state of the book it was taken in, and any write
        to the book moves the sequence on. The next pages of a search cost one statement.

        Args:
            owner_id: The owner.
            first_name: Substring of the first name.
            last_name: Substring of the last name.
            email: Substring of the email.
            q: Substring of any of them.
            order_by: A key of :data:`ORDER_COLUMNS`.
            descending: Sort descending.
            limit: Page size.
            offset: Rows skipped.

        Returns:
            The page.
        """
        params: dict[str, Any] = {"owner_id": owner_id, "limit": limit, "offset": offset}
        if first_name:
            params["first_name"] = like_pattern(fold(first_name))
        if last_name:
            params["last_name"] = like_pattern(fold(last_name))
        if email:
            params["email"] = like_pattern(email.lower())
        if q:
            params["q_name"], params["q_email"] = like_pattern(fold(q)), like_pattern(q.lower())
        q_form = "q" if q and params["q_name"] == params["q_email"] else "q_unlike"
        present = {"first_name": first_name, "last_name": last_name, "email": email, q_form: q}
        filters = frozenset(name for name, value in present.items() if value)
        count, page = page_statements(filters, order_by, descending)
        if filters:
            params["limit"] = limit + 1
        # An offset past any possible table skips the page: SQL integers would overflow.
        rows = await self.pool.fetch(page, **params) if offset <= MAX_OFFSET else []
        if rows and not filters:
            total = rows[0][-1]
        elif len(rows) <= limit and (rows or offset == 0):
            total = offset + len(rows)
        elif not filters:
            total = (await self.pool.fetch(count, **params))[0][0]
        else:
            search = (owner_id, filters, *(params.get(name) for name in _PATTERNS))
            kept = self._totals.get((rows[0][-1], *search)) if rows else None
            if kept is None:
                total, seq = (await self.pool.fetch(count, **params))[0]
                self._keep_total((seq, *search), total)
            else:
                total = kept
                self._totals.move_to_end((rows[0][-1], *search))
        return ContactPage(
            items=[_to_contact(row) for row in rows[:limit]], total=total, limit=limit, offset=offset
        )

    def _keep_total(self, key: tuple[Any, ...], total: int) -> None:
        """Keep a filtered total, forgetting the least recently used beyond :data:`TOTALS_KEPT`."""
        self._totals[key] = total
        if len(self._totals) > TOTALS_KEPT:
            self._totals.popitem(last=False)

    async def upcoming_birthdays(
        self, owner_id: UUID, days: int, today: date | None = None
    ) -> list[ContactBirthday]:
        """The owner's contacts with a birthday from ``today`` through ``today + days``, soonest first.

        Args:
            owner_id: The owner.
            days: Days ahead (0-365).
            today: The reference day; defaults to today in the configured time zone.

        Returns:
            The contacts, each with its ``next_birthday``.
        """
        today = today or self.today()
        ranges = birthday_ranges(today, days)
        params: dict[str, Any] = {"owner_id": owner_id, "start": ranges[0][0]}
        for i, (low, high) in enumerate(ranges):
            params[f"low{i}"], params[f"high{i}"] = low, high
        rows = await self.pool.fetch(BIRTHDAYS[len(ranges)], **params)
        return [_to_contact(row, ContactBirthday, next_birthday=next_birthday(row[5], today)) for row in rows]

    # ------------------------------------------------------------------ writes

    async def add_contact(self, owner_id: UUID, data: ContactCreate) -> tuple[Contact, str]:
        """Create a contact for the owner.

        Raises:
            InvalidContactError: Birthday not in the past, or an unusable phone number.
            DuplicateKeyError: The owner has a contact with this email already.
        """
        row = (await self.pool.write(INSERT, **self._new_row(owner_id, self._values(data))))[0]
        return _to_contact(row), etag(row[-1])

    async def replace_contact(
        self, owner_id: UUID, contact_id: UUID, data: ContactCreate, if_match: str | None = None
    ) -> tuple[Contact, str]:
        """Replace every field of a contact (optional fields left out are cleared).

        Raises:
            ContactNotFoundError: Missing or not the owner's.
            StaleContactError: ``If-Match`` does not name the current version.
        """
        return await self._update(owner_id, contact_id, self._values(data), if_match)

    async def patch_contact(
        self, owner_id: UUID, contact_id: UUID, data: ContactUpdate, if_match: str | None = None
    ) -> tuple[Contact, str]:
        """Change the fields present in ``data``.

        Raises:
            ContactNotFoundError: Missing or not the owner's.
            StaleContactError: ``If-Match`` does not name the current version.
        """
        values = {
            field: value
            for field in data.__struct_fields__
            if (value := getattr(data, field)) is not msgspec.UNSET
        }
        if values.get("phone_number") is not None:
            values["phone_number"] = self._phone(values["phone_number"])
        if "birthday" in values:
            self._check_birthday(values["birthday"], None)
        for field in _TEXT_FIELDS & values.keys():
            values[field] = plain_line_breaks(values[field])
        if not values:
            # Nothing to change: answer as a GET would, still honouring If-Match.
            contact, tag = await self.get_contact(owner_id, contact_id)
            versions = parse_if_match(if_match)
            if versions is not None and tag not in {etag(v) for v in versions}:
                raise StaleContactError
            return contact, tag
        return await self._update(owner_id, contact_id, values, if_match)

    async def remove_contact(self, owner_id: UUID, contact_id: UUID) -> None:
        """Delete one of the owner's contacts.

        Raises:
            ContactNotFoundError: Missing or not the owner's.
        """
        if not await self.pool.write(DELETE, owner_id=owner_id, contact_id=contact_id):
            raise ContactNotFoundError

    async def _update(
        self, owner_id: UUID, contact_id: UUID, values: dict[str, Any], if_match: str | None
    ) -> tuple[Contact, str]:
        """Change the fields in ``values`` and the card properties behind them; keep the rest of the card.

        The card is read, rewritten and written back with ``UPDATE ... WHERE version = :read``:
        a write in between makes the ``UPDATE`` miss, and then (without ``If-Match``) the
        change is made again on the newer card; with ``If-Match`` it is a ``412``.
        """
        versions = parse_if_match(if_match)
        if versions is not None and len(versions) > MAX_IF_MATCH_VERSIONS:
            raise TooManyVersionsError
        for _attempt in range(UPDATE_ATTEMPTS):
            found = await self.pool.fetch(CARD_OF, owner_id=owner_id, contact_id=contact_id)
            if not found:
                raise ContactNotFoundError
            text, version, *shown = found[0]
            if versions is not None and version not in versions:
                raise StaleContactError
            changes = derived_columns(dict(values))
            now = datetime.now(UTC)
            # A field sent as the view shows it leaves its property alone: the view of a card
            # from CardDAV may be a cut name, or no email where the card shares one.
            view = dict(zip(_FIELDS, shown, strict=True))
            rewrite = {name: value for name, value in values.items() if view[name] != value}
            changes["card"] = apply_fields(parse_card(text), rewrite, now).text()
            statement = update_statement(frozenset(changes), 1)
            changes.update(owner_id=owner_id, contact_id=contact_id, updated_at=now)
            params = {f"set_{name}": value for name, value in changes.items()}
            rows = await self.pool.write(statement, v0=version, **params)
            if rows:
                return _to_contact(rows[0]), etag(rows[0][-1])
            if versions is not None:
                raise StaleContactError
        raise StaleContactError

    # ------------------------------------------------------------------ rules of a contact's values

    def _check_birthday(self, born: date | None, today: date | None) -> None:
        if born is not None and born >= (today or self.today()):
            raise InvalidContactError("birthday", "must be a date in the past")

    def _phone(self, raw: str) -> str:
        try:
            return normalize_phone(raw, self.settings.default_phone_region)
        except ValueError as exc:
            raise InvalidContactError("phone_number", str(exc).split(": ", 1)[-1]) from None

    def _values(self, data: ContactCreate, today: date | None = None) -> dict[str, Any]:
        self._check_birthday(data.birthday, today)
        return {
            "first_name": plain_line_breaks(data.first_name),
            "last_name": plain_line_breaks(data.last_name),
            "email": data.email,
            "phone_number": None if data.phone_number is None else self._phone(data.phone_number),
            "birthday": data.birthday,
            "additional_data": plain_line_breaks(data.additional_data),
        }

    def _card_values(self, card: Card, today: date | None = None) -> dict[str, Any]:
        """The JSON view of ``card``, checked by the JSON API's rules.

        Raises:
            InvalidContactError: A field breaks a rule (too long, not an email...).
        """
        fields = {name: value for name, value in card.fields().items() if value is not None}
        try:
            data = msgspec.convert(fields, ContactCreate)
        except msgspec.ValidationError as exc:
            field, _, message = _row_error(exc).partition(": ")
            raise InvalidContactError(field, message) from None
        return self._values(data, today)

    def _card_view(self, card: Card, today: date | None = None) -> dict[str, Any]:
        """The lenient JSON view of a card from CardDAV (:meth:`~app.contacts.cards.Card.view`).

        Every value is one the JSON API would take: a birthday not in the past is left out
        like an unreadable one.

        Raises:
            CardWithoutNameError: Nothing of the name is left in the view.
        """
        view = card.view()
        born = view["birthday"]
        if born is not None and born >= (today or self.today()):
            view["birthday"] = None
        if view["phone_number"] is not None:
            view["phone_number"] = self._phone(view["phone_number"])
        for field in _TEXT_FIELDS:
            view[field] = plain_line_breaks(view[field])
        return view

    @staticmethod
    def _new_row(
        owner_id: UUID,
        values: dict[str, Any],
        now: datetime | None = None,
        card: Card | None = None,
        name: str | None = None,
        uid: str | None = None,
        card_text: str | None = None,
    ) -> dict[str, Any]:
        """Every column of a new row (:data:`NEW_COLUMNS`) from a contact's ``values``.

        Without ``card`` the row gets a new vCard 4.0 of ``values`` (``UID``: ``uid``, else
        made from its id); a ``card`` without ``UID`` is given ``uid`` or that one. ``name``
        is the CardDAV resource name (``<id>.vcf`` when absent). ``card_text`` is the text of
        ``card`` (with its ``UID``) when the caller has it already.
        """
        now = now or datetime.now(UTC)
        contact_id = uuid7()
        uid = uid or uid_of(contact_id)
        row = dict.fromkeys(VALUE_COLUMNS)
        row.update(derived_columns(dict(values)))
        if card is None:
            row.update(card=new_card(uid, values, now), uid=uid)
        elif card_text is not None:
            row.update(card=card_text, uid=card.uid)
        else:
            if card.uid is None:
                card.set_uid(uid)
            row.update(card=card.text(), uid=card.uid)
        row.update(
            id=contact_id,
            owner_id=owner_id,
            created_at=now,
            updated_at=now,
            version=1,
            dav_name=name or f"{contact_id}.vcf",
        )
        return row

    # ------------------------------------------------------------------ exchange

    async def import_file(
        self,
        owner_id: UUID,
        content: bytes,
        today: date | None = None,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> ImportResult:
        """Import contacts from a vCard (3.0/4.0) or CSV file, in one transaction.

        Bad entries are reported by line and the good ones kept; a vCard is kept whole. An
        entry whose email or ``UID`` the owner already has (or that an earlier entry of the
        file used, or a concurrent import has just added) is skipped, so importing the same
        file again creates nothing. The
        file is read and checked in a worker thread (CPU work), so the event loop keeps
        serving other requests meanwhile.

        Args:
            owner_id: The owner.
            content: The file.
            today: The reference day for "birthday in the past".
            limiter: Bounds the worker threads all imports use at once.

        Returns:
            How many were created and skipped, and the errors.

        Raises:
            exchange.UnreadableFileError: Not UTF-8, or neither vCard nor the export's CSV.
            exchange.TooManyEntriesError: More than ``IMPORT_MAX_CARDS`` entries.
        """
        today = today or self.today()
        rows = await self.pool.fetch(EMAILS, owner_id=owner_id)
        # Emails and ids in one set: an email never looks like a UUID's text.
        known = {row[0] for row in rows if row[0] is not None} | {str(row[1]) for row in rows}
        fresh, skipped, errors = await anyio.to_thread.run_sync(
            self._read_import, owner_id, content, known, today, limiter=limiter
        )
        created = 0
        if fresh:
            statement = insert_new_statement(self.pool.dialect_name)
            async with self.pool.transaction() as transaction:
                # One block of sequence numbers for the file (a trigger would bump once per row).
                reserved = await transaction.fetch(
                    reserve_seq_statement(self.pool.dialect_name), owner_id=owner_id, count=len(fresh)
                )
                first_seq = reserved[0][0] - len(fresh) + 1
                for offset, row in enumerate(fresh):
                    row["sync_seq"] = first_seq + offset
                for first in range(0, len(fresh), IMPORT_BATCH):
                    created += len(
                        await transaction.insert_rows(statement, fresh[first : first + IMPORT_BATCH])
                    )
        # A row the database passed over (ON CONFLICT) took an email or a UID the owner has.
        return ImportResult(created=created, skipped=skipped + len(fresh) - created, errors=errors)

    def _read_import(
        self, owner_id: UUID, content: bytes, known: set[str], today: date
    ) -> tuple[list[dict[str, Any]], int, list[ImportRowError]]:
        """The rows to insert, how many were skipped as known, and the errors (runs in a thread)."""
        entries = exchange.read_entries(content, self.settings.import_max_cards)
        now = datetime.now(UTC)
        fresh: list[dict[str, Any]] = []
        errors: list[ImportRowError] = []
        skipped = 0
        released = time.perf_counter()
        for line, entry in entries:
            # Let go of the interpreter every IMPORT_YIELD_SECONDS: the event loop's thread, when
            # it wants it, runs then instead of waiting out the 5 ms switch interval. Not after
            # every entry: on a busy machine each sleep(0) gives the core away (~80 µs a call).
            if time.perf_counter() - released >= IMPORT_YIELD_SECONDS:
                time.sleep(0)
                released = time.perf_counter()
            if isinstance(entry, str):
                errors.append(ImportRowError(line=line, detail=entry))
                continue
            card = entry if isinstance(entry, Card) else None
            try:
                if card is not None:
                    values = self._card_values(card, today)
                else:
                    fields = {name: value for name, value in entry.items() if name != "id"}
                    values = self._values(msgspec.convert(fields, ContactCreate), today)
            except msgspec.ValidationError as exc:
                errors.append(ImportRowError(line=line, detail=_row_error(exc)))
                continue
            except InvalidContactError as exc:
                errors.append(ImportRowError(line=line, detail=f"{exc.field}: {exc.detail}"))
                continue
            if (values["email"] is not None and values["email"] in known) or (
                isinstance(entry, dict) and str(entry.get("id", "")).strip() in known
            ):
                skipped += 1  # a known email, or a CSV row of one of the owner's contacts
                continue
            if values["email"] is not None:
                known.add(values["email"])
            # An entry without UID gets one made from its content: imported again, it is skipped.
            uid = text = None
            if card is None:
                uid = content_uid(repr(sorted(values.items())))
            elif card.uid is None:
                text = with_content_uid(card)
            fresh.append(self._new_row(owner_id, values, now, card, uid=uid, card_text=text))
        return fresh, skipped, errors

    async def export_batches(
        self, owner_id: UUID, batch: int = EXPORT_BATCH
    ) -> AsyncIterator[Sequence[Contact]]:
        """The owner's contacts in batches, by id (one statement each: the stream may outlive the request).

        Args:
            owner_id: The owner.
            batch: Contacts per statement.

        Yields:
            Batches of contacts.
        """
        async for rows in self._keyset(BATCH_AFTER, owner_id, batch):
            yield [_to_contact(row) for row in rows]

    # ------------------------------------------------------------------ cards (CardDAV, export)

    async def card_batches(
        self, owner_id: UUID, batch: int = EXPORT_BATCH
    ) -> AsyncIterator[list[StoredCard]]:
        """The owner's cards in batches, by id (one statement each; the book is never loaded whole).

        Args:
            owner_id: The owner.
            batch: Cards per statement.

        Yields:
            Batches of cards.
        """
        async for rows in self._keyset(CARDS_AFTER, owner_id, batch):
            yield [_to_card(row) for row in rows]

    async def _keyset(
        self, statement: CompiledStatement, owner_id: UUID, batch: int
    ) -> AsyncIterator[Sequence[Any]]:
        """The rows of ``statement`` in id order, ``batch`` per query (each after the last id seen)."""
        after = _FIRST_ID
        while True:
            rows = await self.pool.fetch(statement, owner_id=owner_id, after=after, limit=batch)
            if rows:
                yield rows
            if len(rows) < batch:
                return
            after = rows[-1][0]

    async def iter_cards(self, owner_id: UUID, batch: int = EXPORT_BATCH) -> AsyncIterator[StoredCard]:
        """The owner's cards one by one, read ``batch`` at a time.

        Args:
            owner_id: The owner.
            batch: Cards per statement.

        Yields:
            The cards.
        """
        async for cards in self.card_batches(owner_id, batch):
            for card in cards:
                yield card

    async def card_by_name(self, owner_id: UUID, name: str) -> StoredCard | None:
        """The owner's card of resource name ``name``, or ``None``."""
        rows = await self.pool.fetch(CARD_BY_NAME, owner_id=owner_id, name=name)
        return _to_card(rows[0]) if rows else None

    async def cards_by_names(self, owner_id: UUID, names: Sequence[str]) -> list[StoredCard]:
        """The owner's cards among ``names`` (missing ones left out), in no particular order.

        Names go :data:`NAMES_BATCH` to a statement; a statement exists for each power of
        two up to it (a short batch repeats its last name), so few are ever prepared.
        """
        unique = list(dict.fromkeys(names))
        found: list[StoredCard] = []
        for first in range(0, len(unique), NAMES_BATCH):
            chunk = unique[first : first + NAMES_BATCH]
            size = 1 << (len(chunk) - 1).bit_length()
            padded = chunk + [chunk[-1]] * (size - len(chunk))
            params = {f"n{i}": name for i, name in enumerate(padded)}
            rows = await self.pool.fetch(cards_by_names_statement(size), owner_id=owner_id, **params)
            found.extend(_to_card(row) for row in rows)
        return found

    async def put_card(
        self, owner_id: UUID, name: str, text: str, *, if_match: str | None, if_none_match_any: bool
    ) -> tuple[StoredCard, bool]:
        """Create or replace the card of resource name ``name`` (CardDAV ``PUT``).

        The card is kept whole (a ``UID`` is added when it has none: the existing one's, or
        the new contact's id). Only a card that is not one, has no name, is too large or takes
        another card's ``UID`` is refused: its JSON view is derived leniently
        (:meth:`~app.contacts.cards.Card.view`), and an email another of the owner's contacts
        has is left out of the view (the card keeps it).

        Args:
            owner_id: The owner.
            name: The resource name.
            text: The vCard.
            if_match: The ``If-Match`` header (``None``: no condition).
            if_none_match_any: ``If-None-Match: *`` was sent (only create).

        Returns:
            The stored card and whether it was created.

        Raises:
            CardError: Not a usable vCard (see :func:`app.contacts.cards.parse_card`), or a
                name longer than :data:`~app.contacts.cards.MAX_UID_LENGTH`.
            UidConflictError: Another resource has the card's ``UID``, or the card would change
                the ``UID`` of the resource it replaces.
            StaleContactError: A condition failed.
        """
        if not 0 < len(name) <= MAX_UID_LENGTH:
            msg = f"A card's name has 1 to {MAX_UID_LENGTH} characters"
            raise CardError(msg, field="name")
        card = parse_card(text)
        values = self._card_view(card)
        versions = parse_if_match(if_match)
        if versions is not None and len(versions) > MAX_IF_MATCH_VERSIONS:
            raise TooManyVersionsError
        slots = await self.pool.fetch(CARD_SLOTS, owner_id=owner_id, name=name, uid=card.uid or "")
        current = next((slot for slot in slots if slot[1] == name), None)
        holder = next((slot for slot in slots if slot[1] != name), None)
        if (current is not None and if_none_match_any) or (
            versions is not None and (current is None or current[3] not in versions)
        ):
            raise StaleContactError
        if holder is not None:
            raise UidConflictError(holder[1])
        if current is not None and card.uid is not None and card.uid != current[2]:
            raise UidConflictError(name)
        if current is None:
            statement, params = INSERT_CARD, self._new_row(owner_id, values, card=card, name=name)
        else:
            if card.uid is None:
                card.set_uid(current[2])
            changes = derived_columns(dict(values))
            changes.update(card=card.text(), uid=card.uid)
            statement = update_statement(frozenset(changes), 1, as_card=True)
            changes.update(owner_id=owner_id, contact_id=current[0], updated_at=datetime.now(UTC))
            params = {f"set_{key}": value for key, value in changes.items()}
            params["v0"] = current[3]
        email = "email" if current is None else "set_email"
        while True:
            try:
                written = await self.pool.write(statement, **params)
                break
            except IntegrityError:  # DuplicateKeyError, or a unique index SQLite reports plainly
                error = await self._put_conflict(owner_id, name, card, values, creating=current is None)
                if not isinstance(error, EmailTakenError):
                    raise error from None
                # Another contact has the email (family members share one): the card keeps
                # it, the view shows none.
                values["email"] = params[email] = None
        if not written:
            raise StaleContactError  # changed or deleted since it was read
        stored = _to_card(written[0])
        if self.pool.dialect_name != "postgresql":
            # SQLite's RETURNING shows the row from before its AFTER triggers stamped it.
            stored.sync_seq = (await self.pool.fetch(SEQ_OF, owner_id=owner_id, contact_id=stored.id))[0][0]
        return stored, current is None

    async def _put_conflict(
        self, owner_id: UUID, name: str, card: Card, values: dict[str, Any], *, creating: bool
    ) -> AppError:
        """Why a ``PUT`` hit a unique index: the UID or (``creating``) the name taken meanwhile, else the email."""
        slots = await self.pool.fetch(CARD_SLOTS, owner_id=owner_id, name=name, uid=card.uid or "")
        holder = next((slot for slot in slots if slot[1] != name and slot[2] == card.uid), None)
        if holder is not None:
            return UidConflictError(holder[1])
        if (creating and any(slot[1] == name for slot in slots)) or values.get("email") is None:
            return StaleContactError()
        return EmailTakenError()

    async def delete_card(self, owner_id: UUID, name: str, *, if_match: str | None) -> None:
        """Delete the card of resource name ``name`` (CardDAV ``DELETE``).

        Raises:
            ContactNotFoundError: No such card among the owner's.
            StaleContactError: ``If-Match`` does not name its current version.
        """
        versions = parse_if_match(if_match)
        if versions is not None and len(versions) > MAX_IF_MATCH_VERSIONS:
            raise TooManyVersionsError
        params: dict[str, Any] = {f"v{i}": version for i, version in enumerate(sorted(versions or ()))}
        rows: Sequence[Sequence[Any]] = ()
        if versions is None or versions:
            statement = delete_card_statement(None if versions is None else len(versions))
            rows = await self.pool.write(statement, owner_id=owner_id, name=name, **params)
        if not rows:
            if versions is not None and await self.card_by_name(owner_id, name) is not None:
                raise StaleContactError
            raise ContactNotFoundError

    # ------------------------------------------------------------------ sync

    async def sync_token(self, owner_id: UUID) -> int:
        """The owner's current change sequence (0 for a book never changed): the sync token and ctag."""
        rows = await self.pool.fetch(SYNC_STATE, owner_id=owner_id)
        return rows[0][0] if rows else 0

    async def changes(self, owner_id: UUID, since: int | None, limit: int) -> Changes:
        """What changed after the token ``since`` (every contact when ``None``), oldest change first.

        The counter is read first: every number up to it is committed (numbers commit in
        order), so the two range reads that follow, bounded by it, miss nothing. Each reads
        ``(owner_id, sync_seq)`` by index from ``since`` on: the work is the number of
        changes, not the size of the book. A contact changed twice shows once, as it is now.

        Args:
            owner_id: The owner.
            since: A token from an earlier answer, or ``None``.
            limit: Changes (contacts and deletions together) at most.

        Returns:
            The changes; while ``more``, ``next`` is the token for the rest.

        Raises:
            SyncTokenExpiredError: ``since`` is older than the kept tombstones, or newer
                than the book.
        """
        state = await self.pool.fetch(SYNC_STATE, owner_id=owner_id)
        current, purged = state[0] if state else (0, 0)
        if since is not None and not purged <= since <= current:
            raise SyncTokenExpiredError
        window = {"owner_id": owner_id, "since": since or 0, "upto": current, "limit": limit + 1}
        changed = await self.pool.fetch(CHANGED, **window) if current > (since or 0) else []
        deleted = await self.pool.fetch(DELETED, **window) if since is not None and current > since else []
        merged = sorted(
            [(row[-1], True, row) for row in changed] + [(row[-1], False, row) for row in deleted],
            key=lambda item: item[0],
        )
        more = len(merged) > limit
        taken = merged[:limit]
        result = Changes(
            changed=[], contacts=[], deleted=[], next=taken[-1][0] if more else current, more=more
        )
        for _seq, is_contact, row in taken:
            if is_contact:
                result.contacts.append(_to_contact(row))
                result.changed.append(
                    StoredCard(
                        id=row[0],
                        name=row[10],
                        uid=row[11],
                        etag=etag(row[9]),
                        card=row[12],
                        sync_seq=row[13],
                    )
                )
            else:
                result.deleted.append(Deleted(id=row[0], name=row[1]))
        return result


def _to_card(row: Sequence[Any]) -> StoredCard:
    """The :class:`StoredCard` of a row of ``CARD_COLUMNS``."""
    return StoredCard(
        id=row[0], name=row[1], uid=row[2], etag=etag(row[3]), card=row[4], sync_seq=row[5] or 0
    )


async def purge_tombstones(session: AsyncSession, now: datetime) -> int:
    """Delete the tombstones older than :data:`~app.contacts.models.TOMBSTONES_KEPT` at ``now``.

    A housekeeping task of the job runner. Each owner's ``purged_seq`` first moves to the
    newest tombstone purged, so a sync token from before it gets a ``410`` instead of an
    answer that misses deletions.

    Args:
        session: The runner's database session (the caller commits).
        now: The reference time.

    Returns:
        How many tombstones were deleted.
    """
    cutoff = now - TOMBSTONES_KEPT
    old = ContactTombstone.deleted_at < cutoff
    newest = (
        select(func.max(ContactTombstone.sync_seq))
        .where(ContactTombstone.owner_id == ContactSync.owner_id, old)
        .scalar_subquery()
    )
    await session.execute(
        update(ContactSync)
        .where(ContactSync.owner_id.in_(select(ContactTombstone.owner_id).where(old)))
        .values(purged_seq=newest)
    )
    result = await session.execute(delete(ContactTombstone).where(old))
    return int(result.rowcount)  # type: ignore[attr-defined]
