# ruff: noqa: RUF001 - Cyrillic names are part of the fixtures
"""vCard/CSV export and import, through HTTP."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import vobject

BASE = "/api/contacts"
PHONE_VCF = (Path(__file__).parent.parent / "fixtures" / "iphone_android_3.0.vcf").read_bytes()
FIELDS = ("first_name", "last_name", "email", "phone_number", "birthday", "additional_data")


async def upload(client, user, content: bytes, name: str = "contacts.vcf", field: str = "file"):
    return await client.post(
        f"{BASE}/import", files={field: (name, content, "application/octet-stream")}, headers=user.headers
    )


async def all_contacts(client, user) -> list[dict]:
    response = await client.get(
        f"{BASE}/", params={"limit": 100, "order_by": "last_name"}, headers=user.headers
    )
    return response.json()["items"]


async def every_contact(client, user) -> list[dict]:
    """All of the user's contacts, page after page."""
    items: list[dict] = []
    while True:
        page = await client.get(f"{BASE}/", params={"limit": 100, "offset": len(items)}, headers=user.headers)
        items += page.json()["items"]
        if len(items) >= page.json()["total"]:
            return items


def comparable(contacts):
    return sorted(tuple(c[f] for f in FIELDS) for c in contacts)


async def add(client, user, **fields):
    data = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone_number": "+380501234567",
        **fields,
    }
    response = await client.post(f"{BASE}/", json=data, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


# --------------------------------------------------------------------------- import a phone's file


async def test_a_phones_vcard_file_is_imported(client, user):
    response = await upload(client, user, PHONE_VCF)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["created"] == 5
    assert result["skipped"] == 0
    assert [e["line"] for e in result["errors"]] == [40]
    assert "birthday" in result["errors"][0]["detail"]

    by_email = {c["email"]: c for c in await all_contacts(client, user)}
    assert set(by_email) == {
        "taras.shevchenko@example.ua",
        "ada@example.com",
        "alan@example.com",
        "grace@example.com",
        None,  # "Mom": a name and a phone number are enough now
    }
    assert (by_email[None]["first_name"], by_email[None]["last_name"]) == ("Mom", None)
    taras = by_email["taras.shevchenko@example.ua"]
    assert (taras["first_name"], taras["last_name"]) == ("Тарас", "Шевченко")
    assert taras["phone_number"] == "+380501234567"  # the preferred number, as E.164
    assert taras["birthday"] == "1604-03-09"  # Apple's "no year"
    assert taras["additional_data"] == "Poet, painter; met at the museum\nsecond line"
    assert by_email["ada@example.com"]["phone_number"] == "+442079460958"
    assert by_email["alan@example.com"]["birthday"] == "1912-06-23"
    assert by_email["grace@example.com"]["birthday"] == "1604-12-09"


async def test_importing_the_same_file_again_creates_nothing(client, user):
    await upload(client, user, PHONE_VCF)
    again = (await upload(client, user, PHONE_VCF)).json()
    assert again["created"] == 0
    assert again["skipped"] == 5, "a card without email or UID is known by its content"
    assert len(await all_contacts(client, user)) == 5


async def test_import_matches_existing_contacts_by_email_case_insensitively(client, user):
    await add(client, user, email="ADA@example.com", first_name="Kept")
    result = (await upload(client, user, PHONE_VCF)).json()
    assert result["created"] == 4
    assert result["skipped"] == 1
    ada = next(c for c in await all_contacts(client, user) if c["email"] == "ada@example.com")
    assert ada["first_name"] == "Kept"


async def test_import_is_per_user(client, user, user_factory):
    other = await user_factory()
    await upload(client, user, PHONE_VCF)
    assert (await upload(client, other, PHONE_VCF)).json()["created"] == 5
    assert len(await all_contacts(client, user)) == 5


# --------------------------------------------------------------------------- export


async def test_vcard_export_is_rfc6350(client, user):
    await add(
        client,
        user,
        first_name="Тарас",
        last_name="Шевченко; Jr",
        birthday="1814-03-09",
        additional_data="Line one, with comma\nline two " + "long " * 30,
    )
    await add(client, user, email="plain@example.com", first_name="Plain", last_name="Person")
    response = await client.get(f"{BASE}/export", headers=user.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/vcard")
    assert "contacts.vcf" in response.headers["content-disposition"]
    raw = response.content
    assert raw.count(b"BEGIN:VCARD\r\n") == 2
    assert all(len(line) <= 75 for line in raw.split(b"\r\n"))
    text = raw.decode()
    for prop in (
        "VERSION:4.0",
        "FN:",
        "N:",
        "EMAIL:",
        "TEL;",
        "BDAY:18140309",
        "NOTE:",
        "UID:urn:uuid:",
        "REV:",
    ):
        assert prop in text, prop
    cards = list(vobject.readComponents(text))
    taras = next(c for c in cards if c.email.value == "ada@example.com")
    assert taras.fn.value == "Тарас Шевченко; Jr"
    assert taras.n.value.family == "Шевченко; Jr"
    assert taras.note.value.startswith("Line one, with comma\nline two long")
    plain = next(c for c in cards if c.email.value == "plain@example.com")
    assert "bday" not in plain.contents
    assert "note" not in plain.contents


async def test_csv_export(client, user):
    await add(client, user, additional_data='Says "hi", often\nand more', birthday="1815-12-10")
    response = await client.get(f"{BASE}/export", params={"format": "csv"}, headers=user.headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "contacts.csv" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert len(rows) == 1
    assert rows[0]["additional_data"] == 'Says "hi", often\nand more'
    assert rows[0]["birthday"] == "1815-12-10"
    assert list(rows[0]) == [
        "id",
        "first_name",
        "last_name",
        "email",
        "phone_number",
        "birthday",
        "additional_data",
        "created_at",
        "updated_at",
    ]


async def test_csv_export_defuses_formulas_and_the_import_restores_them(client, user, user_factory):
    fields = {
        "first_name": '=HYPERLINK("https://evil.example","x")',
        "last_name": "-2+3",
        "additional_data": "@SUM(A1:A9)",
    }
    original = await add(client, user, **fields)
    response = await client.get(f"{BASE}/export", params={"format": "csv"}, headers=user.headers)
    (row,) = csv.DictReader(io.StringIO(response.text, newline=""))
    for name, value in fields.items():
        assert row[name] == "'" + value, name  # a spreadsheet shows it as text, runs nothing
    assert row["phone_number"] == "+380501234567"  # E.164 stays as it is

    other = await user_factory()
    assert (await upload(client, other, response.content, name="x.csv")).json()["created"] == 1
    assert comparable(await all_contacts(client, other)) == comparable([original])


async def test_an_empty_book_exports_nothing(client, user):
    assert (await client.get(f"{BASE}/export", headers=user.headers)).content == b""
    csv_text = (await client.get(f"{BASE}/export", params={"format": "csv"}, headers=user.headers)).text
    assert csv_text.strip().startswith("id,first_name")
    assert len(csv_text.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["xml", "VCARD", "", "json"])
async def test_unknown_export_format_is_400(client, user, fmt):
    response = await client.get(f"{BASE}/export", params={"format": fmt}, headers=user.headers)
    assert response.status_code == 400
    assert "format" in response.text


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["vcard", "csv"])
async def test_export_then_import_round_trips(client, user, user_factory, fmt):
    await upload(client, user, PHONE_VCF)
    await add(
        client,
        user,
        email="odd@example.com",
        first_name="O'Brien, Jr.",
        last_name='Quote "Q"',
        additional_data="a;b,c\\d",
    )
    original = await all_contacts(client, user)
    exported = (await client.get(f"{BASE}/export", params={"format": fmt}, headers=user.headers)).content

    other = await user_factory()
    result = (await upload(client, other, exported, name=f"x.{fmt}")).json()
    assert result == {"created": len(original), "skipped": 0, "errors": []}
    assert comparable(await all_contacts(client, other)) == comparable(original)

    again = (await upload(client, user, exported)).json()
    assert again == {"created": 0, "skipped": len(original), "errors": []}


#: Every control character but NUL (which no text field may hold: issue 19, item 6), the
#: Unicode line breaks ``str.splitlines`` knows, and the characters vCard and CSV escape.
AWKWARD = [
    *(chr(code) for code in range(1, 32)),
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\\",
    ",",
    ";",
    '"',
    "'",
]
#: A note a client could store to plant a second card in the vCard export (issue 19, item 4).
PLANTED = (
    "hello\rEND:VCARD\rBEGIN:VCARD\rVERSION:4.0\rN:Evil;Mallory;;;\r"
    "EMAIL:mallory@example.com\rTEL:+380501112233\rEND:VCARD\rBEGIN:VCARD\rNOTE:x"
)


@pytest.mark.parametrize("fmt", ["vcard", "csv"])
async def test_a_note_cannot_plant_a_second_contact(client, user, user_factory, fmt):
    original = await add(client, user, additional_data=PLANTED)
    exported = (await client.get(f"{BASE}/export", params={"format": fmt}, headers=user.headers)).content
    if fmt == "vcard":
        assert exported.split(b"\r\n").count(b"BEGIN:VCARD") == 1
        assert b"\r" not in exported.replace(b"\r\n", b"")  # no bare CR: every line break escaped

    other = await user_factory()
    result = (await upload(client, other, exported, name=f"x.{fmt}")).json()
    assert result == {"created": 1, "skipped": 0, "errors": []}
    (imported,) = await all_contacts(client, other)
    assert imported["additional_data"] == original["additional_data"]
    assert comparable([imported]) == comparable([original])


@pytest.mark.parametrize("fmt", ["vcard", "csv"])
async def test_every_character_the_api_takes_survives_a_round_trip(client, user, user_factory, fmt):
    """Each awkward character, in each exported text field, comes back as the API stored it."""
    accepted: set[tuple[str, str]] = set()
    n = 0
    for char in AWKWARD:
        for field in ("first_name", "last_name", "additional_data", "email"):
            n += 1
            value = f"{char}a{char}b{char}" if field != "email" else f"a{char}b{n}@example.com"
            fields = {"email": f"c{n}@example.com", field: value}
            response = await client.post(
                f"{BASE}/",
                json={"first_name": "F", "last_name": "L", "phone_number": "+380501234567", **fields},
                headers=user.headers,
            )
            # Whatever the input rules refuse is a 400 and takes no part in the round trip.
            assert response.status_code in {201, 400}, (repr(char), field, response.text)
            if response.status_code == 201:
                accepted.add((char, field))
    assert {(c, "additional_data") for c in "\t\n\r\\,;"} <= accepted
    assert {(c, name) for c in "\\,;\"'" for name in ("first_name", "last_name")} <= accepted
    original = await every_contact(client, user)
    exported = (await client.get(f"{BASE}/export", params={"format": fmt}, headers=user.headers)).content

    other = await user_factory()
    result = (await upload(client, other, exported, name=f"x.{fmt}")).json()
    assert result == {"created": len(original), "skipped": 0, "errors": []}
    assert comparable(await every_contact(client, other)) == comparable(original)


async def test_export_streams_every_batch(client, user):
    lines = ["first_name,last_name,email,phone_number"] + [
        f"N{i},L{i},n{i}@example.com,+38050{i:07d}" for i in range(1201)
    ]
    result = (await upload(client, user, "\n".join(lines).encode(), name="big.csv")).json()
    assert result["created"] == 1201
    exported = (await client.get(f"{BASE}/export", headers=user.headers)).content
    assert exported.count(b"BEGIN:VCARD") == 1201
    exported_csv = (await client.get(f"{BASE}/export", params={"format": "csv"}, headers=user.headers)).text
    assert len(list(csv.DictReader(io.StringIO(exported_csv, newline="")))) == 1201


# --------------------------------------------------------------------------- bad imports


async def test_csv_rows_are_reported_by_line_and_good_rows_kept(client, user):
    content = (
        b"First_Name, last_name ,email,phone_number,birthday,extra\r\n"
        b"Ada,Lovelace,ada@example.com,+380501234567,1815-12-10,x\r\n"
        b",Nobody,nobody@example.com,+380501234567,,\r\n"
        b'Multi,Line,multi@example.com,+380501234567,,"two\nlines"\r\n'
        b"Bad,Email,not-an-email,+380501234567,,\r\n"
        b"\r\n"
        b"Bad,Date,date@example.com,+380501234567,1990-13-01,\r\n"
        b"Dup,Licate,ADA@example.com,+380501234567,,\r\n"
        b"Too,Many,many@example.com,+380501234567,,,,extra\r\n"
        b"Bad,Phone,phone@example.com,12,,\r\n"
    )
    result = (await upload(client, user, content, name="c.csv")).json()
    assert result["created"] == 2
    assert result["skipped"] == 1
    assert [e["line"] for e in result["errors"]] == [3, 6, 8, 10, 11]
    emails = {c["email"] for c in await all_contacts(client, user)}
    assert emails == {"ada@example.com", "multi@example.com"}


async def test_broken_vcards_are_reported_and_the_rest_kept(client, user):
    content = (
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nN:Good;One;;;\r\nEMAIL:good@example.com\r\nTEL:+380501234567\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nN:Bad;Bday;;;\r\nEMAIL:b@example.com\r\nTEL:+380501234567\r\nBDAY:soon\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nthis is not a content line\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Only Fn\r\nEMAIL:fn@example.com\r\nTEL:tel:+380501234567;ext=2\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nN:Open;Ended;;;\r\n"
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nN:Last;Card;;;\r\n"
    )
    result = (await upload(client, user, content)).json()
    assert result["created"] == 2
    assert [e["line"] for e in result["errors"]] == [7, 14, 24, 27]
    by_email = {c["email"]: c for c in await all_contacts(client, user)}
    assert (by_email["fn@example.com"]["first_name"], by_email["fn@example.com"]["last_name"]) == (
        "Only",
        "Fn",
    )


async def test_rows_with_a_nul_are_reported_and_the_good_rows_kept(client, user):
    csv_file = (
        b"first_name,last_name,email,phone_number,birthday,additional_data\r\n"
        b"Ada,Lovelace,ada@example.com,+380501234567,,\r\n"
        b"Nul,In Name,nul\x00@example.com,+380501234567,,\r\n"
        b"Bad\x00,Name,badname@example.com,+380501234567,,\r\n"
        b"Nul,In Note,note@example.com,+380501234567,,a\x00b\r\n"
        b"Alan,Turing,alan@example.com,+380501234568,,\r\n"
    )
    response = await upload(client, user, csv_file, name="c.csv")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["created"] == 2
    assert [e["line"] for e in result["errors"]] == [3, 4, 5]
    assert "first_name" in result["errors"][1]["detail"]
    assert "U+0000" in result["errors"][1]["detail"]
    assert "additional_data" in result["errors"][2]["detail"]

    vcards = (
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nN:Hopper;Grace;;;\r\nEMAIL:grace@example.com\r\n"
        b"TEL:+380501234569\r\nNOTE:fine\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nN:Nul;Note;;;\r\nEMAIL:nulnote@example.com\r\n"
        b"TEL:+380501234560\r\nNOTE:a\x00b\r\nEND:VCARD\r\n"
        b"BEGIN:VCARD\r\nVERSION:4.0\r\nN:Nul\x00;Name;;;\r\nEMAIL:nulname@example.com\r\n"
        b"TEL:+380501234560\r\nEND:VCARD\r\n"
    )
    response = await upload(client, user, vcards)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["created"] == 1
    assert [e["line"] for e in result["errors"]] == [8, 15]
    emails = {c["email"] for c in await all_contacts(client, user)}
    assert emails == {"ada@example.com", "alan@example.com", "grace@example.com"}
    assert not any("\x00" in str(c) for c in await all_contacts(client, user))


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"\xff\xfe\x00garbage", "UTF-8"),
        (b"just some text\nwithout the columns\n", "CSV"),
        (b"", "CSV"),
    ],
)
async def test_unreadable_files_are_400(client, user, content, detail):
    response = await upload(client, user, content)
    assert response.status_code == 400
    assert detail in response.json()["detail"]


async def test_import_needs_the_file_field(client, user):
    response = await upload(client, user, PHONE_VCF, field="upload")
    assert response.status_code == 400
    assert "file" in response.text
    as_json = await client.post(f"{BASE}/import", json={"file": "x"}, headers=user.headers)
    assert 400 <= as_json.status_code < 500
    as_text = await client.post(f"{BASE}/import", data={"file": "BEGIN:VCARD"}, headers=user.headers)
    assert as_text.status_code == 415  # urlencoded, not multipart (app.http)
    text_field = await client.post(
        f"{BASE}/import", data={"file": "BEGIN:VCARD"}, files={"other": ("a.vcf", b"x")}, headers=user.headers
    )
    assert text_field.status_code == 400
    assert "file" in text_field.text


async def test_import_over_the_size_limit_is_413(make_client, user_factory):
    async with make_client(import_max_bytes=len(PHONE_VCF) - 1) as client:
        user = await user_factory()
        response = await upload(client, user, PHONE_VCF)
        assert response.status_code == 413
        assert response.json() == {
            "status_code": 413,
            "detail": f"The file is larger than {len(PHONE_VCF) - 1} bytes",
        }
        huge = await upload(client, user, b"x" * (len(PHONE_VCF) + 64 * 1024))
        assert huge.status_code == 413
        assert await all_contacts(client, user) == []
        fits = await upload(client, user, PHONE_VCF[: len(PHONE_VCF) // 2])
        assert fits.status_code == 200


async def test_exchange_needs_authentication(client):
    assert (await client.get(f"{BASE}/export")).status_code == 401
    response = await client.post(f"{BASE}/import", files={"file": ("a.vcf", PHONE_VCF)})
    assert response.status_code == 401
