"""vCard and CSV: writing the export, reading an import.

The export writes vCard 4.0 (RFC 6350) by hand: the format is a handful of escaped, folded
lines, and writing them directly keeps the stream cheap (``vobject`` takes ~0.3 ms a card,
which a streamed export of a large book would spend on the event loop). Every text value is
escaped (:func:`_escape`), so no stored character can end a line or a card. Imports are read
with ``vobject``, card by card, so one broken card is reported on its line and the others are
still taken; it reads the vCard 3.0 that phones and Google Contacts export, and 4.0.

Reading is CPU work (~0.3 ms a card): callers run :func:`read_entries` in a worker thread.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from datetime import UTC, date
from typing import Any

import vobject
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE

from app.contacts.schemas import Contact, ContactCreate
from app.errors import AppError

#: The CSV export's columns; an import needs at least :data:`CSV_REQUIRED`.
CSV_COLUMNS = (
    "id",
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "birthday",
    "additional_data",
    "created_at",
    "updated_at",
)
CSV_REQUIRED = ("first_name", "last_name", "email", "phone_number")
#: The year Apple uses for a birthday without one (``X-APPLE-OMIT-YEAR=1604``); used for
#: year-less vCard birthdays (``--MMDD``) too.
NO_YEAR = 1604

_FIELDS = ContactCreate.__struct_fields__
_BDAY = re.compile(r"^(?:(\d{4})-?|--)(\d{2})-?(\d{2})$")
#: The line breaks of a vCard file (CRLF, and the bare CR or LF some writers use). Not
#: ``str.splitlines``: that also breaks at VT, FF, U+001C-U+001E, U+0085 and U+2028/9, which
#: may stand inside a value.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: One entry of an import: its fields (still to be validated) or why it cannot be read.
Entry = dict[str, Any] | str


class UnreadableFileError(AppError):
    """The upload is neither a vCard file nor the export's CSV (or not UTF-8 text): a ``400``."""


class FileTooLargeError(AppError):
    """The file is larger than one import may bring."""

    status_code = HTTP_413_REQUEST_ENTITY_TOO_LARGE

    def __init__(self, limit: int) -> None:
        """Say that the file holds more than ``limit`` bytes."""
        super().__init__(f"The file is larger than {limit} bytes")


class TooManyEntriesError(AppError):
    """The file holds more contacts than one import may bring."""

    status_code = HTTP_413_REQUEST_ENTITY_TOO_LARGE

    def __init__(self, limit: int) -> None:
        """Say that more than ``limit`` entries were found."""
        super().__init__(f"The file holds more than {limit} contacts (IMPORT_MAX_CARDS)")
        self.limit = limit


# --------------------------------------------------------------------------- writing


def _escape(value: str) -> str:
    r"""A text value escaped per RFC 6350 3.4: ``\\``, ``\,``, ``\;``, and ``\n`` for every line break.

    A bare CR counts as a line break too: written raw it would end the content line (and a
    value holding ``END:VCARD`` would end the card) for readers that accept CR line endings.
    """
    value = value.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
    return _LINE_BREAK.sub("\\\\n", value)


def _fold(line: str) -> str:
    """Fold a content line at 75 octets without splitting a UTF-8 character (RFC 6350 3.2)."""
    encoded = line.encode()
    if len(encoded) <= 75:
        return line + "\r\n"
    parts, current, size, limit = [], [], 0, 75
    for char in line:
        width = len(char.encode())
        if size + width > limit:
            parts.append("".join(current))
            current, size, limit = [], 0, 74  # continuation lines start with a space
        current.append(char)
        size += width
    parts.append("".join(current))
    return "\r\n ".join(parts) + "\r\n"


def vcard(contact: Contact) -> str:
    """One contact as a vCard 4.0.

    Args:
        contact: The contact.

    Returns:
        The card, CRLF line endings.
    """
    lines = [
        "BEGIN:VCARD",
        "VERSION:4.0",
        f"UID:urn:uuid:{contact.id}",
        f"FN:{_escape(f'{contact.first_name} {contact.last_name}')}",
        f"N:{_escape(contact.last_name)};{_escape(contact.first_name)};;;",
        f"EMAIL:{_escape(contact.email)}",
        f"TEL;VALUE=uri;TYPE=cell:tel:{contact.phone_number}",
    ]
    if contact.birthday is not None:
        lines.append(f"BDAY:{contact.birthday:%Y%m%d}")
    if contact.additional_data:
        lines.append(f"NOTE:{_escape(contact.additional_data)}")
    lines += [f"REV:{contact.updated_at.astimezone(UTC):%Y%m%dT%H%M%SZ}", "END:VCARD"]
    return "".join(_fold(line) for line in lines)


#: A cell starting with one of these is a formula to a spreadsheet (CSV injection, OWASP).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defused(value: str) -> str:
    """``value`` made inert for spreadsheets: a leading formula character gets a ``'`` before it.

    The import takes the quote off again (:func:`_restored`), so a file exported by the
    service imports back to the same contacts.
    """
    return "'" + value if value.startswith(_FORMULA_START) else value


def _restored(value: str) -> str:
    """The text :func:`_defused` was given."""
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA_START) else value


def csv_header() -> str:
    """The CSV export's header line."""
    return _csv_line(CSV_COLUMNS)


def csv_rows(contacts: Iterable[Contact]) -> str:
    """Contacts as CSV lines in :data:`CSV_COLUMNS` order.

    Text a spreadsheet would run as a formula is written with a leading ``'`` (see
    :func:`_defused`); the phone number is E.164, digits after a ``+``, never a formula.

    Args:
        contacts: The contacts.

    Returns:
        The lines.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for c in contacts:
        writer.writerow(
            (
                c.id,
                _defused(c.first_name),
                _defused(c.last_name),
                _defused(c.email),
                c.phone_number,
                c.birthday.isoformat() if c.birthday else "",
                _defused(c.additional_data or ""),
                c.created_at.isoformat(),
                c.updated_at.isoformat(),
            )
        )
    return buffer.getvalue()


async def export_text(batches: AsyncIterable[Sequence[Contact]], export_format: str) -> AsyncIterator[str]:
    """The export file, a batch of contacts at a time: vCard 4.0 cards, or CSV with its header first.

    The one writer of the export: ``GET /api/contacts/export`` sends it, and the account's data
    export puts it in its zip.

    Args:
        batches: The contacts, batch by batch (:meth:`app.contacts.store.ContactStore.export_batches`).
        export_format: ``vcard`` or ``csv``.

    Yields:
        The text of each batch (the CSV header alone first).
    """
    if export_format == "csv":
        yield csv_header()
    async for batch in batches:
        yield csv_rows(batch) if export_format == "csv" else "".join(vcard(contact) for contact in batch)


def _csv_line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()


# --------------------------------------------------------------------------- reading


def read_entries(content: bytes, max_entries: int | None = None) -> Iterator[tuple[int, Entry]]:
    """The entries of an import file, each with the line it starts on.

    The file is split into entries and counted at once (cheap); each entry is parsed when the
    iterator reaches it.

    Args:
        content: The uploaded file.
        max_entries: The most entries (cards, non-blank CSV rows) a file may hold.

    Returns:
        ``(line, fields)`` for an entry that could be read (``fields`` still to be
        validated), or ``(line, message)`` for one that could not.

    Raises:
        UnreadableFileError: Not UTF-8, or neither vCard nor CSV with the required columns.
        TooManyEntriesError: More than ``max_entries`` entries.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        msg = "The file is not UTF-8 text"
        raise UnreadableFileError(msg) from None
    if text.lstrip().upper().startswith("BEGIN:VCARD"):
        cards = _split_vcards(text)
        _check_count(len(cards), max_entries)
        return ((line, _vcard_fields(card) if complete else card) for line, card, complete in cards)
    header, records = _csv_records(text)
    _check_count(len(records), max_entries)
    return ((line, _csv_fields(header, record)) for line, record in records)


def _check_count(count: int, limit: int | None) -> None:
    if limit is not None and count > limit:
        raise TooManyEntriesError(limit)


def _csv_records(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (lower-cased) and the non-blank records with the line each starts on."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip().lower() for name in next(reader, [])]
    missing = [name for name in CSV_REQUIRED if name not in header]
    if missing:
        msg = f"Expected a vCard file or a CSV file with the columns {', '.join(CSV_COLUMNS)}"
        raise UnreadableFileError(msg)
    records = []
    line = reader.line_num + 1
    for record in reader:
        if any(cell.strip() for cell in record):
            records.append((line, record))
        line = reader.line_num + 1
    return header, records


def _csv_fields(header: Sequence[str], record: Sequence[str]) -> Entry:
    if len(record) > len(header):
        return f"expected {len(header)} columns, found {len(record)}"
    row = dict(zip(header, record, strict=False))
    fields: dict[str, Any] = {}
    for name in _FIELDS:
        if name not in row:
            continue
        value = _restored(row[name])
        if name == "birthday":
            fields[name] = value.strip() or None
        elif name == "additional_data":
            # Kept as written (the API keeps a note's spaces); only a blank one is none.
            fields[name] = value if value.strip() else None
        else:
            fields[name] = value
    return fields


def _split_vcards(text: str) -> list[tuple[int, str, bool]]:
    """The cards of a vCard file: ``(line, card, True)``, or ``(line, message, False)`` for an unclosed one."""
    cards: list[tuple[int, str, bool]] = []
    start: int | None = None
    card: list[str] = []
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        marker = raw.strip().upper()
        if marker == "BEGIN:VCARD":
            if start is not None:
                cards.append((start, "vCard without END:VCARD", False))
            start, card = number, [raw]
        elif start is not None:
            card.append(raw)
            if marker == "END:VCARD":
                cards.append((start, "\r\n".join(card) + "\r\n", True))
                start, card = None, []
    if start is not None:
        cards.append((start, "vCard without END:VCARD", False))
    return cards


def _preferred(lines: list[Any], *types: str) -> Any:
    """The line typed ``pref`` (or with a ``PREF`` parameter), else the first of ``types``, else the first."""

    def kinds(line: Any) -> set[str]:
        return {value.lower() for value in line.params.get("TYPE", [])}

    for line in lines:
        if "pref" in kinds(line) or "PREF" in line.params:
            return line
    for wanted in types:
        for line in lines:
            if wanted in kinds(line):
                return line
    return lines[0]


def _text(value: Any) -> str:
    return " ".join(value).strip() if isinstance(value, list) else str(value or "").strip()


def _vcard_fields(card: str) -> dict[str, Any] | str:
    """The contact fields of one vCard, or why it cannot be read."""
    try:
        component = vobject.readOne(card)
        contents = component.contents
        fields: dict[str, Any] = {}
        if "n" in contents:
            name = contents["n"][0].value
            fields["first_name"], fields["last_name"] = _text(name.given), _text(name.family)
        if not fields.get("first_name") and not fields.get("last_name") and "fn" in contents:
            first, _, last = _text(contents["fn"][0].value).partition(" ")
            fields["first_name"], fields["last_name"] = first, last.strip()
        for key in ("first_name", "last_name"):
            if not fields.get(key):
                fields.pop(key, None)
        if "email" in contents:
            fields["email"] = _text(_preferred(contents["email"], "internet").value)
        if "tel" in contents:
            number = _text(_preferred(contents["tel"], "cell", "mobile").value)
            number = number.removeprefix("tel:").split(";")[0]
            fields["phone_number"] = re.sub(r"[./]", " ", number).strip()
        if "bday" in contents:
            fields["birthday"] = _birthday(_text(contents["bday"][0].value))
        if "note" in contents:
            note = contents["note"][0].value
            # Kept as written (the API keeps a note's spaces); only a blank one is none.
            fields["additional_data"] = note if isinstance(note, str) and note.strip() else None
    except Exception as exc:  # vobject raises many kinds: each means a bad card
        return f"cannot read this vCard: {exc}".strip()
    return fields


def _birthday(value: str) -> str:
    """A vCard ``BDAY`` (``1990-05-17``, ``19900517``, ``--0517``, with or without a time) as ISO."""
    match = _BDAY.match(value.split("T")[0].strip())
    if match is None:
        msg = f"unreadable BDAY {value!r}"
        raise ValueError(msg)
    year, month, day = match.groups()
    return date(int(year or NO_YEAR), int(month), int(day)).isoformat()
