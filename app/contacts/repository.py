"""Every SQL statement about contacts, each one scoped to its owner.

No method here can read, change or delete a contact without the owner's id in its
``WHERE`` clause: another user's contact is simply not found, exactly like a missing one.
Statements select plain columns (no ORM identity map, no lazy loads), so a row maps
straight onto the response Struct, and a single contact costs one statement.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from advanced_alchemy.exceptions import wrap_sqlalchemy_exception
from advanced_alchemy.mixins.uuid import uuid7
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import and_, bindparam, case, delete, func, insert, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.contacts.models import SEARCH_TEXT, Contact, ContactCount, derived_columns, fold
from app.contacts.schemas import ContactCreate
from app.db import Database, Query

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Row

#: The columns a response is built from, in the order of the ``Contact`` Struct, then the version.
COLUMNS = (
    Contact.id,
    Contact.first_name,
    Contact.last_name,
    Contact.email,
    Contact.phone_number,
    Contact.birthday,
    Contact.additional_data,
    Contact.created_at,
    Contact.updated_at,
    Contact.version,
)

#: ``order_by`` values → the column sorted on (names sort case-insensitively, by their folded form).
ORDER_COLUMNS: dict[str, Any] = {
    "first_name": Contact.first_name_search,
    "last_name": Contact.last_name_search,
    "birthday": Contact.birthday,
    "created_at": Contact.created_at,
}


def _like_pattern(value: str) -> str:
    r"""A ``LIKE`` pattern matching ``value`` anywhere, with ``\\ % _`` matching themselves."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _contains(column: Any, name: str) -> ColumnElement[bool]:
    # The pattern is one bound value (not '%' || :v || '%'), so PostgreSQL can plan the
    # trigram index for it.
    return column.like(bindparam(name), escape="\\")


#: Offsets beyond this match nothing (and would overflow a 64-bit SQL integer).
MAX_OFFSET = 2**62

_OWNER = Contact.owner_id == bindparam("owner_id")

#: One contact of an owner (``owner_id``, ``contact_id``).
ONE = Query(select(*COLUMNS).where(Contact.id == bindparam("contact_id"), _OWNER))


def _search(column: Any, name: str) -> ColumnElement[bool]:
    """``column`` contains the pattern ``name``, pre-filtered through :data:`SEARCH_TEXT`.

    A field that contains the pattern makes the joined text contain it, so the pre-filter
    drops nothing; on PostgreSQL it is what the owner + trigram index answers.
    """
    return and_(_contains(SEARCH_TEXT, name), _contains(column, name))


_Q_FIELDS = or_(
    _contains(Contact.first_name_search, "q_name"),
    _contains(Contact.last_name_search, "q_name"),
    _contains(Contact.email, "q_email"),
)

#: Each filter's condition, on a bound pattern named like the filter. ``q`` has two forms:
#: names are case-folded and emails lower-cased, which differ for a few letters ("ß"), and
#: then the joined text is searched for both patterns.
_FILTERS: dict[str, ColumnElement[bool]] = {
    "first_name": _search(Contact.first_name_search, "first_name"),
    "last_name": _search(Contact.last_name_search, "last_name"),
    "email": _search(Contact.email, "email"),
    "q": and_(_contains(SEARCH_TEXT, "q_name"), _Q_FIELDS),
    "q_unlike": and_(or_(_contains(SEARCH_TEXT, "q_name"), _contains(SEARCH_TEXT, "q_email")), _Q_FIELDS),
}


#: The owner's number of contacts, kept by the database (0 when the owner has no counter row).
_TOTAL = func.coalesce(
    select(ContactCount.total).where(ContactCount.owner_id == bindparam("owner_id")).scalar_subquery(),
    literal_column("0"),
)


@functools.cache
def page_queries(filters: frozenset[str], order_by: str, descending: bool) -> tuple[Query, Query]:
    """The count and the page statement for one combination of filters and ordering.

    There are few combinations (4 filters x 4 orderings x 2 directions), so each is built once.
    Contacts without a birthday sort last in both directions.

    Without filters the total is the owner's counter (:class:`ContactCount`), and the page
    reads it too: every row ends with it (one index lookup, made once per statement), so the
    page and its total come from one statement and one snapshot. The count statement then
    reads the counter alone, for a page that comes back empty.

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
    ordering = [first, Contact.id.desc() if descending else Contact.id.asc()]
    if filters:
        count = select(func.count()).select_from(Contact).where(*where)
        page = select(*COLUMNS)
    else:
        count = select(_TOTAL)
        page = select(*COLUMNS, _TOTAL.label("total"))
    page = page.where(*where).order_by(*ordering).limit(bindparam("limit")).offset(bindparam("offset"))
    return Query(count), Query(page)


def _birthdays_query(ranges: int) -> Query:
    md = Contact.birthday_md
    matches = [md.between(bindparam(f"low{i}"), bindparam(f"high{i}")) for i in range(ranges)]
    return Query(
        select(*COLUMNS)
        .where(_OWNER, or_(*matches) if ranges > 1 else matches[0])
        .order_by(case((md >= bindparam("start"), 0), else_=1), md, Contact.last_name_search, Contact.id)
    )


#: Contacts with a birthday in one or in two month-day ranges (a window over the new year).
BIRTHDAYS = {1: _birthdays_query(1), 2: _birthdays_query(2)}

#: The columns a write may set: the fields of a new contact, then the ones derived from them.
VALUE_COLUMNS = (*ContactCreate.__struct_fields__, "first_name_search", "last_name_search", "birthday_md")
#: If-Match may name at most this many of a contact's versions.
MAX_IF_MATCH_VERSIONS = 32


def _bound(name: str, key: str | None = None) -> Any:
    """A bound value typed like the column ``name`` (SQLite stores dates and times by type)."""
    return bindparam(key or name, type_=Contact.__table__.c[name].type)


#: A new contact: every column bound, ids and timestamps made by the caller.
INSERT = Query(
    insert(Contact)
    .values(
        {
            name: _bound(name)
            for name in ("id", "owner_id", "created_at", "updated_at", "version", *VALUE_COLUMNS)
        }
    )
    .returning(*COLUMNS)
)

#: Delete one contact of an owner, returning its id.
DELETE = Query(delete(Contact).where(Contact.id == bindparam("contact_id"), _OWNER).returning(Contact.id))

#: Whether an owner has a contact.
EXISTS = Query(select(Contact.id).where(Contact.id == bindparam("contact_id"), _OWNER))


@functools.cache
def update_query(columns: frozenset[str], versions: int | None) -> Query:
    """The conditional ``UPDATE`` of ``columns``, for ``versions`` accepted versions (``None``: any).

    Args:
        columns: The columns set (names of :data:`VALUE_COLUMNS`; bound as ``set_<name>``).
        versions: How many versions ``If-Match`` accepts (bound as ``v0``, ``v1``...), or ``None``.

    Returns:
        The statement, returning ``COLUMNS``.
    """
    # An UPDATE reserves its columns' names for the SET clause: every value is bound as "set_<name>".
    where = [Contact.id == bindparam("set_contact_id"), Contact.owner_id == bindparam("set_owner_id")]
    if versions is not None:
        where.append(Contact.version.in_([bindparam(f"v{i}") for i in range(versions)]))
    values = {name: _bound(name, f"set_{name}") for name in VALUE_COLUMNS if name in columns}
    return Query(
        update(Contact)
        .where(*where)
        .values(version=Contact.version + 1, updated_at=_bound("updated_at", "set_updated_at"), **values)
        .returning(*COLUMNS)
    )


class ContactQueries:
    """The owner-scoped reads and single-statement writes, over whatever runs a :class:`~app.db.Query`.

    :class:`ContactRepository` runs them on an ORM session (committing each write);
    :class:`ContactReader` runs them straight on the pool (the endpoints).
    """

    async def _fetch(self, query: Query, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    async def get_row(self, owner_id: UUID, contact_id: UUID) -> Sequence[Any] | None:
        """One contact of ``owner_id`` (``COLUMNS``), or ``None``.

        Args:
            owner_id: The owner.
            contact_id: The contact.

        Returns:
            The row, or ``None`` when missing or someone else's.
        """
        rows = await self._fetch(ONE, {"owner_id": owner_id, "contact_id": contact_id})
        return rows[0] if rows else None

    async def page(
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
    ) -> tuple[Sequence[Sequence[Any]], int]:
        """One page of the owner's contacts and the total matching the filters.

        Filters are case-insensitive substrings combined with ``AND``; ``q`` matches any of
        the three fields. Without filters the total is the owner's counter, read by the page's
        own statement (a second one, reading the counter, only for an empty page past the
        end). With filters it costs a second statement (a ``COUNT``) only when the page does
        not tell it (a page shorter than ``limit`` ends the matches).

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
            The page's rows (``COLUMNS``) and the total.
        """
        params: dict[str, Any] = {"owner_id": owner_id, "limit": limit, "offset": offset}
        if first_name:
            params["first_name"] = _like_pattern(fold(first_name))
        if last_name:
            params["last_name"] = _like_pattern(fold(last_name))
        if email:
            params["email"] = _like_pattern(email.lower())
        if q:
            params["q_name"], params["q_email"] = _like_pattern(fold(q)), _like_pattern(q.lower())
        q_form = "q" if q and params["q_name"] == params["q_email"] else "q_unlike"
        present = {"first_name": first_name, "last_name": last_name, "email": email, q_form: q}
        filters = frozenset(name for name, value in present.items() if value)
        count, page = page_queries(filters, order_by, descending)
        if filters:
            # One row more than the page: when it does not come, the total is known without
            # a COUNT (which is O(matches)).
            params["limit"] = limit + 1
        # An offset past any possible table skips the page: SQL integers would overflow.
        rows = await self._fetch(page, params) if offset <= MAX_OFFSET else []
        if rows and not filters:
            return [row[:-1] for row in rows], rows[0][-1]  # each row ends with the total
        if len(rows) <= limit and (rows or offset == 0):
            return rows, offset + len(rows)
        total = (await self._fetch(count, params))[0][0]
        return rows[:limit], total

    async def birthdays(self, owner_id: UUID, ranges: Sequence[tuple[int, int]]) -> Sequence[Sequence[Any]]:
        """The owner's contacts whose month-day key falls in ``ranges``, in calendar order.

        ``ranges`` are ``(first, last)`` month-day keys, in the order the days come: the
        first starts today, a second one (after a new year) starts on 1 January. Rows of the
        first range come first, each range sorted by month-day.

        Args:
            owner_id: The owner.
            ranges: One or two inclusive month-day ranges.

        Returns:
            The rows (``COLUMNS``).
        """
        params: dict[str, Any] = {"owner_id": owner_id, "start": ranges[0][0]}
        for i, (low, high) in enumerate(ranges):
            params[f"low{i}"], params[f"high{i}"] = low, high
        return await self._fetch(BIRTHDAYS[len(ranges)], params)

    async def _write(self, query: Query, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    async def exists(self, owner_id: UUID, contact_id: UUID) -> bool:
        """Whether ``owner_id`` has the contact ``contact_id``."""
        return bool(await self._fetch(EXISTS, {"owner_id": owner_id, "contact_id": contact_id}))

    async def insert(self, owner_id: UUID, values: dict[str, Any]) -> Sequence[Any]:
        """Insert a contact for ``owner_id`` and return it (one statement, committed).

        Args:
            owner_id: The owner.
            values: The contact's fields (derived columns are added here).

        Returns:
            The new row (``COLUMNS``).

        Raises:
            DuplicateKeyError: The owner already has a contact with this email.
        """
        now = datetime.now(UTC)
        params = dict.fromkeys(VALUE_COLUMNS)
        params.update(derived_columns(dict(values)))
        params.update(id=uuid7(), owner_id=owner_id, created_at=now, updated_at=now, version=1)
        return (await self._write(INSERT, params))[0]

    async def update_row(
        self, owner_id: UUID, contact_id: UUID, values: dict[str, Any], versions: set[int] | None = None
    ) -> Sequence[Any] | None:
        """Change a contact of ``owner_id`` in one conditional statement (committed) and return it.

        With ``versions`` (from ``If-Match``) the row only changes if its version is one of
        them, so two writers holding the same ETag cannot both win.

        Args:
            owner_id: The owner.
            contact_id: The contact.
            values: The fields to set.
            versions: The versions the caller says it has seen, or ``None`` for no condition.

        Returns:
            The updated row (``COLUMNS``), or ``None`` if nothing matched (missing, not the
            owner's, or stale).

        Raises:
            DuplicateKeyError: The new email is taken by another of the owner's contacts.
            TooManyVersionsError: ``versions`` names more than :data:`MAX_IF_MATCH_VERSIONS`.
        """
        if versions is not None and not versions:
            return None  # If-Match named none of this service's tags: nothing can match
        if versions is not None and len(versions) > MAX_IF_MATCH_VERSIONS:
            raise TooManyVersionsError
        changes = derived_columns(dict(values))
        query = update_query(frozenset(changes), None if versions is None else len(versions))
        changes.update(owner_id=owner_id, contact_id=contact_id, updated_at=datetime.now(UTC))
        params = {f"set_{name}": value for name, value in changes.items()}
        for i, version in enumerate(sorted(versions or ())):
            params[f"v{i}"] = version
        rows = await self._write(query, params)
        return rows[0] if rows else None

    async def delete_row(self, owner_id: UUID, contact_id: UUID) -> bool:
        """Delete a contact of ``owner_id`` (committed).

        Returns:
            Whether a contact was deleted.
        """
        return bool(await self._write(DELETE, {"owner_id": owner_id, "contact_id": contact_id}))


@functools.cache
def _insert_new(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` of a contact, in ``dialect``'s words."""
    dialects = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}
    return dialects[dialect](Contact).on_conflict_do_nothing().returning(Contact.id)


class TooManyVersionsError(ValueError):
    """``If-Match`` names more versions than a write accepts (a ``400``)."""


class ContactReader(ContactQueries):
    """The owner-scoped statements on the pool, without an ORM session (see :class:`~app.db.Database`)."""

    def __init__(self, database: Database) -> None:
        """Run the statements through ``database``."""
        self.database = database

    async def _fetch(self, query: Query, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        return await self.database.fetch(query, **params)

    async def _write(self, query: Query, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        return await self.database.write(query, **params)


class ContactRepository(ContactQueries, SQLAlchemyAsyncRepository[Contact]):
    """Owner-scoped statements on ``contacts`` in an ORM session (writes, and reads inside them)."""

    model_type = Contact

    def _wrap(self) -> Any:
        """Map driver errors to advanced-alchemy's (a duplicate email becomes ``DuplicateKeyError``)."""
        return wrap_sqlalchemy_exception(dialect_name=self.session.get_bind().dialect.name)

    async def _fetch(self, query: Query, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        return (await self.session.execute(query.statement, params)).all()

    async def _write(self, query: Query, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        with self._wrap():
            rows = (await self.session.execute(query.statement, params)).all()
        await self.session.commit()
        return rows

    async def insert_new(self, owner_id: UUID, rows: Sequence[dict[str, Any]], batch: int) -> int:
        """Insert contacts for ``owner_id``, passing over any whose email the owner already has.

        One multi-row ``INSERT ... ON CONFLICT DO NOTHING`` per ``batch`` rows, all in the
        session's transaction (the caller commits): a row that meets an email added meanwhile
        (say by a concurrent import) is skipped, not an error that would lose the others.

        Args:
            owner_id: The owner.
            rows: Each contact's columns, derived ones included.
            batch: Rows per statement.

        Returns:
            How many were inserted.
        """
        statement = _insert_new(self.session.get_bind().dialect.name)
        # Core on the session's connection (same transaction): the ORM's bulk path would spend
        # twice the CPU per row, on the event loop.
        connection = await self.session.connection()
        created = 0
        for first in range(0, len(rows), batch):
            values = [{"owner_id": owner_id, **row} for row in rows[first : first + batch]]
            # With RETURNING, SQLAlchemy sends the page as one "INSERT ... VALUES (...), (...)";
            # without it asyncpg would run one INSERT per row, and the counter trigger with it.
            with self._wrap():
                created += len((await connection.execute(statement, values)).all())
        return created

    async def emails(self, owner_id: UUID) -> set[str]:
        """Every email the owner's contacts use (import de-duplication)."""
        statement = select(Contact.email).where(Contact.owner_id == owner_id)
        return set((await self.session.execute(statement)).scalars())

    async def batch_after(self, owner_id: UUID, after: UUID | None, size: int) -> Sequence[Row[Any]]:
        """The next ``size`` contacts of the owner by id, after ``after`` (keyset paging for export).

        Args:
            owner_id: The owner.
            after: The last id of the previous batch, or ``None`` for the first.
            size: Batch size.

        Returns:
            The rows (``COLUMNS``).
        """
        where = [Contact.owner_id == owner_id]
        if after is not None:
            where.append(Contact.id > after)
        statement = select(*COLUMNS).where(and_(*where)).order_by(Contact.id).limit(size)
        return (await self.session.execute(statement)).all()
