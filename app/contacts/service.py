"""The contact rules: validation that needs settings, ETags, birthdays, import and export.

Every method takes the owner's id and passes it to the repository; the service commits its
own writes.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload
from uuid import UUID

import anyio
import anyio.to_thread
import msgspec
from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import false, select

from app.contacts import exchange
from app.contacts.models import Contact as ContactModel
from app.contacts.models import derived_columns
from app.contacts.repository import ContactQueries, ContactRepository, TooManyVersionsError
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

if TYPE_CHECKING:
    from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.config import Settings

#: Contacts read per statement while exporting.
EXPORT_BATCH = 500
#: Contacts written per multi-row INSERT while importing: few enough that preparing one
#: (on the event loop) takes milliseconds; 14 bound values a row stay far below the 32,767
#: parameters a PostgreSQL or SQLite statement takes.
IMPORT_BATCH = 500

_C = TypeVar("_C", bound=Contact)

_ETAG = re.compile(r'^"v(\d{1,9})"$')
_CR = re.compile(r"\r\n?")
#: Free-text fields whose line breaks are stored as LF.
_TEXT_FIELDS = frozenset({"first_name", "last_name", "additional_data"})


class InvalidContactError(ValueError):
    """Input that passed the schema but breaks a rule (a ``400`` naming ``field``)."""

    def __init__(self, field: str, message: str) -> None:
        """Name the ``field`` that breaks a rule and say why in ``message``."""
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StaleContactError(Exception):
    """``If-Match`` named a version the contact no longer has (``412``)."""


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

    Stored this way because vCard has one line break (``\n``, RFC 6350 3.4): a CR could not
    come back from an export otherwise.

    Args:
        text: A text field's value, or ``None``.

    Returns:
        The text with LF line breaks.
    """
    return None if text is None else _CR.sub("\n", text)


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


#: The base statement of the inherited (unscoped) repository methods: it matches nothing, so
#: only the owner-scoped methods can reach a contact. Built once: statements are immutable.
_NOTHING = select(ContactModel).where(false())


class ContactBook:
    """The rules of an address book, over any :class:`ContactQueries`.

    Every read and write is one owner-scoped statement, committed on its own. The endpoints use
    a book on the pool (:class:`ContactReader`: no ORM session at all); :class:`ContactService`
    is one over its session's repository, with the import and the export.

    Args:
        queries: What runs the owner-scoped statements.
        settings: The application settings (time zone of "today").
    """

    def __init__(self, queries: ContactQueries, settings: Settings) -> None:
        """Work through ``queries`` with the application ``settings``."""
        self.queries = queries
        self.settings = settings

    def today(self) -> date:
        """Today in the configured time zone."""
        return datetime.now(self.settings.tz).date()

    async def get_contact(self, owner_id: UUID, contact_id: UUID) -> tuple[Contact, str]:
        """One of the owner's contacts and its ETag.

        Raises:
            NotFoundError: Missing or not the owner's.
        """
        row = await self.queries.get_row(owner_id, contact_id)
        if row is None:
            raise NotFoundError
        return _to_contact(row), etag(row[-1])

    async def list_contacts(self, owner_id: UUID, **query: Any) -> ContactPage:
        """A page of the owner's contacts (see :meth:`ContactQueries.page` for ``query``).

        Returns:
            The page.
        """
        rows, total = await self.queries.page(owner_id, **query)
        return ContactPage(
            items=[_to_contact(row) for row in rows],
            total=total,
            limit=query["limit"],
            offset=query["offset"],
        )

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
        rows = await self.queries.birthdays(owner_id, birthday_ranges(today, days))
        return [_to_contact(row, ContactBirthday, next_birthday=next_birthday(row[5], today)) for row in rows]

    # ------------------------------------------------------------------ helpers

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
            "phone_number": self._phone(data.phone_number),
            "birthday": data.birthday,
            "additional_data": plain_line_breaks(data.additional_data),
        }

    # ------------------------------------------------------------------ CRUD

    async def add_contact(self, owner_id: UUID, data: ContactCreate) -> tuple[Contact, str]:
        """Create a contact for the owner.

        Raises:
            InvalidContactError: Birthday not in the past, or an unusable phone number.
            DuplicateKeyError: The owner has a contact with this email already.
        """
        row = await self.queries.insert(owner_id, self._values(data))
        return _to_contact(row), etag(row[-1])

    async def replace_contact(
        self, owner_id: UUID, contact_id: UUID, data: ContactCreate, if_match: str | None = None
    ) -> tuple[Contact, str]:
        """Replace every field of a contact (optional fields left out are cleared).

        Raises:
            NotFoundError: Missing or not the owner's.
            StaleContactError: ``If-Match`` does not name the current version.
        """
        return await self._update(owner_id, contact_id, self._values(data), if_match)

    async def patch_contact(
        self, owner_id: UUID, contact_id: UUID, data: ContactUpdate, if_match: str | None = None
    ) -> tuple[Contact, str]:
        """Change the fields present in ``data``.

        Raises:
            NotFoundError: Missing or not the owner's.
            StaleContactError: ``If-Match`` does not name the current version.
        """
        values = {
            field: value
            for field in data.__struct_fields__
            if (value := getattr(data, field)) is not msgspec.UNSET
        }
        if "phone_number" in values:
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

    async def _update(
        self, owner_id: UUID, contact_id: UUID, values: dict[str, Any], if_match: str | None
    ) -> tuple[Contact, str]:
        versions = parse_if_match(if_match)
        try:
            row = await self.queries.update_row(owner_id, contact_id, values, versions)
        except TooManyVersionsError:
            raise InvalidContactError("If-Match", "names too many versions") from None
        if row is None:
            # Nothing was written; tell a stale ETag apart from a missing contact.
            if versions is not None and await self.queries.exists(owner_id, contact_id):
                raise StaleContactError
            raise NotFoundError
        return _to_contact(row), etag(row[-1])

    async def remove_contact(self, owner_id: UUID, contact_id: UUID) -> None:
        """Delete one of the owner's contacts.

        Raises:
            NotFoundError: Missing or not the owner's.
        """
        if not await self.queries.delete_row(owner_id, contact_id):
            raise NotFoundError


class ContactService(ContactBook, SQLAlchemyAsyncRepositoryService[ContactModel]):
    """The address book on one request's session: the import (one transaction) and the export."""

    class Repo(ContactRepository):
        """The owner-scoped contacts repository."""

    repository_type = Repo

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        """Serve one request's ``session`` with the application ``settings``."""
        SQLAlchemyAsyncRepositoryService.__init__(self, session=session, statement=_NOTHING)
        self.contacts: ContactRepository = self.repository  # type: ignore[assignment]
        ContactBook.__init__(self, self.contacts, settings)

    # ------------------------------------------------------------------ exchange

    async def import_file(
        self,
        owner_id: UUID,
        content: bytes,
        today: date | None = None,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> ImportResult:
        """Import contacts from a vCard (3.0/4.0) or CSV file, in one transaction.

        Bad entries are reported by line and the good ones kept. An entry whose email the
        owner already has (or that an earlier entry of the file used, or a concurrent import
        has just added) is skipped, so importing the same file again creates nothing. The
        file is read and checked in a worker thread (it is CPU work: ~0.3 ms a card), so the
        event loop keeps serving other requests meanwhile.

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
        known = await self.contacts.emails(owner_id)
        fresh, skipped, errors = await anyio.to_thread.run_sync(
            self._read_import, content, known, today, limiter=limiter
        )
        created = await self.contacts.insert_new(owner_id, fresh, IMPORT_BATCH)
        await self.repository.session.commit()
        # A row the database passed over (ON CONFLICT) took an email added since ``known``.
        return ImportResult(created=created, skipped=skipped + len(fresh) - created, errors=errors)

    def _read_import(
        self, content: bytes, known: set[str], today: date
    ) -> tuple[list[dict[str, Any]], int, list[ImportRowError]]:
        """The rows to insert, how many were skipped as known, and the errors (runs in a thread)."""
        entries = exchange.read_entries(content, self.settings.import_max_cards)
        fresh: list[dict[str, Any]] = []
        errors: list[ImportRowError] = []
        skipped = 0
        for line, entry in entries:
            # Let go of the interpreter after each entry: the event loop's thread, when it
            # wants it, runs at once instead of waiting out the 5 ms switch interval.
            time.sleep(0)
            if isinstance(entry, str):
                errors.append(ImportRowError(line=line, detail=entry))
                continue
            try:
                data = msgspec.convert(entry, ContactCreate)
                values = self._values(data, today)
            except (msgspec.ValidationError, InvalidContactError) as exc:
                errors.append(ImportRowError(line=line, detail=str(exc)))
                continue
            if values["email"] in known:
                skipped += 1
                continue
            known.add(values["email"])
            fresh.append(derived_columns(values))
        return fresh, skipped, errors

    @staticmethod
    async def export_batches(
        db_config: SQLAlchemyAsyncConfig, owner_id: UUID, batch: int = EXPORT_BATCH
    ) -> AsyncIterator[Sequence[Contact]]:
        """The owner's contacts in batches, read with a session of its own.

        A streamed response outlives the request's session (it is closed when the response
        starts), so the export opens and closes its own.

        Args:
            db_config: The database config.
            owner_id: The owner.
            batch: Contacts per statement.

        Yields:
            Batches of contacts, by id.
        """
        async with db_config.get_session() as session:
            repository = ContactRepository(session=session)
            after: UUID | None = None
            while True:
                rows = await repository.batch_after(owner_id, after, batch)
                if rows:
                    yield [_to_contact(row) for row in rows]
                if len(rows) < batch:
                    return
                after = rows[-1][0]
