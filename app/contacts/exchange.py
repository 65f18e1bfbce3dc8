"""vCard and CSV: writing the export, reading an import.

The vCard export writes each contact's stored card (``app.contacts.cards``), in vCard 4.0.
Imports are split into cards here and each card is read with :func:`app.contacts.cards.parse_card`
when the iterator reaches it, so one broken card is reported on its line and the others are
still taken; the vCard 3.0 that phones and Google Contacts export is read as well as 4.0, and
each card is kept whole. CSV carries the JSON fields only.

Reading is CPU work: callers run :func:`read_entries` in a worker thread.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE

from app.contacts.cards import Card, CardError, parse_card, serialize_card
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
CSV_REQUIRED = ("first_name",)

_FIELDS = ContactCreate.__struct_fields__
#: The line breaks of a vCard file (CRLF, and the bare CR or LF some writers use). Not
#: ``str.splitlines``: that also breaks at VT, FF, U+001C-U+001E, U+0085 and U+2028/9, which
#: may stand inside a value.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: One entry of an import: a card, a CSV row's fields (still to be validated), or why it cannot be read.
Entry = Card | dict[str, Any] | str


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


def vcards(texts: Iterable[str]) -> str:
    """Stored cards as one vCard 4.0 stream (3.0 cards converted).

    Args:
        texts: The stored cards.

    Returns:
        The cards, CRLF line endings.
    """
    return "".join(serialize_card(text, "4.0") for text in texts)


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
                _defused(c.last_name or ""),
                _defused(c.email or ""),
                c.phone_number or "",
                c.birthday.isoformat() if c.birthday else "",
                _defused(c.additional_data or ""),
                c.created_at.isoformat(),
                c.updated_at.isoformat(),
            )
        )
    return buffer.getvalue()


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
        ``(line, card)`` for a vCard, ``(line, fields)`` for a CSV row (``fields`` still to
        be validated), or ``(line, message)`` for an entry that could not be read.

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
        return ((line, _read_card(card) if complete else card) for line, card, complete in cards)
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
    if row.get("id"):
        fields["id"] = row["id"]  # the export's id: a row of the owner's own contact is skipped
    for name in _FIELDS:
        if name not in row:
            continue
        value = _restored(row[name])
        if name == "birthday":
            fields[name] = value.strip() or None
        elif name == "additional_data":
            # Kept as written (the API keeps a note's spaces); only a blank one is none.
            fields[name] = value if value.strip() else None
        elif name != "first_name":
            # An empty cell of an optional field is no value (a contact needs only a first name).
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


def _read_card(text: str) -> Card | str:
    """One card of an import file, or why it cannot be taken."""
    try:
        return parse_card(text)
    except CardError as exc:
        return f"cannot read this vCard: {exc.detail}"
