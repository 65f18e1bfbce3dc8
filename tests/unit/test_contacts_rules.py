"""Pure rules of the contacts package: birthday ranges, ETags, phone numbers, vCard text."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import msgspec
import pytest
import vobject

from app.contacts.cards import new_card, parse_birthday
from app.contacts.schemas import Contact, ContactCreate, ContactUpdate, normalize_phone
from app.contacts.store import birthday_on, birthday_ranges, etag, next_birthday, parse_if_match


@pytest.mark.parametrize(
    ("today", "days", "expected"),
    [
        (date(2025, 6, 1), 7, [(601, 608)]),
        (date(2025, 6, 1), 0, [(601, 601)]),
        (date(2025, 12, 28), 7, [(1228, 1231), (101, 104)]),
        (date(2025, 12, 31), 0, [(1231, 1231)]),
        (date(2025, 12, 31), 1, [(1231, 1231), (101, 101)]),
        (date(2025, 2, 21), 7, [(221, 229)]),  # common year: 28 Feb also covers 29 Feb birthdays
        (date(2025, 2, 28), 0, [(228, 229)]),
        (date(2024, 2, 28), 0, [(228, 228)]),  # leap year: 29 Feb is its own day
        (date(2024, 2, 28), 1, [(228, 229)]),
        (date(2025, 3, 1), 365, [(301, 1231), (101, 301)]),
        (date(2024, 2, 29), 365, [(229, 1231), (101, 229)]),
        (date(2023, 3, 1), 365, [(301, 1231), (101, 229)]),  # ends on 29 Feb 2024
    ],
)
def test_birthday_ranges(today, days, expected):
    assert birthday_ranges(today, days) == expected


def test_next_birthday_and_29_february():
    born = date(2000, 2, 29)
    assert birthday_on(born, 2025) == date(2025, 2, 28)
    assert birthday_on(born, 2028) == date(2028, 2, 29)
    assert next_birthday(born, date(2025, 2, 28)) == date(2025, 2, 28)
    assert next_birthday(born, date(2025, 3, 1)) == date(2026, 2, 28)
    assert next_birthday(date(1990, 1, 1), date(2025, 12, 31)) == date(2026, 1, 1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("*", None),
        (" * ", None),
        ('"v3"', {3}),
        ('"v3", "v4"', {3, 4}),
        ('W/"v3"', set()),
        ("v3", set()),
        ('"garbage"', set()),
        ('"v99999999999"', set()),
        ("", set()),
    ],
)
def test_parse_if_match(header, expected):
    assert parse_if_match(header) == expected


def test_etag_round_trips():
    assert parse_if_match(etag(7)) == {7}


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("050 123 45 67", "+380501234567"),
        ("+380 (50) 123-45-67", "+380501234567"),
        ("+1 650 253 0000", "+16502530000"),
        ("+999 123 4567", "+9991234567"),
        ("+0 12 345", "+012345"),  # no such country code: kept as digits
    ],
)
def test_normalize_phone(raw, stored):
    assert normalize_phone(raw, "UA") == stored


def test_normalize_phone_needs_digits():
    with pytest.raises(ValueError, match="digits"):
        normalize_phone("+-( )-+1", "UA")


def test_structs_trim_and_lower_case():
    data = msgspec.json.decode(
        b'{"first_name":" A ","last_name":" B ","email":" X@Y.Z ","phone_number":"1234567"}',
        type=ContactCreate,
    )
    assert (data.first_name, data.last_name, data.email) == ("A", "B", "x@y.z")
    patch = msgspec.json.decode(
        b'{"first_name":" C ","last_name":" D ","email":" Q@W.E "}', type=ContactUpdate
    )
    assert (patch.first_name, patch.last_name, patch.email) == ("C", "D", "q@w.e")
    assert msgspec.json.decode(b"{}", type=ContactUpdate).birthday is msgspec.UNSET


def _contact(**fields):
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    base = {
        "id": uuid.UUID(int=1),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone_number": "+380501234567",
        "birthday": None,
        "additional_data": None,
        "created_at": now,
        "updated_at": now,
    }
    return Contact(**{**base, **fields})


def test_vcard_folds_long_lines_without_splitting_characters():
    note = "Ж" * 100 + "; end"
    card = new_card(
        "u1", {"first_name": "Ada", "additional_data": note}, rev=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    )
    lines = card.split("\r\n")
    assert all(len(line.encode()) <= 75 for line in lines)
    assert "REV:20260102T030405Z" in lines
    parsed = vobject.readOne(card)
    assert parsed.note.value == note


def test_vcard_birthdays_read_in_every_written_form():
    for value, expected in [
        ("1990-05-17", "1990-05-17"),
        ("19900517", "1990-05-17"),
        ("--0517", "1604-05-17"),
        ("--05-17", "1604-05-17"),
        ("1990-05-17T00:00:00Z", "1990-05-17"),
    ]:
        assert parse_birthday(value).isoformat() == expected
    assert parse_birthday("May 17") is None
