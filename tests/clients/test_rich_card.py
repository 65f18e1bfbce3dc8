"""A card with far more than the JSON view shows survives every route of our service.

The card goes up with vdirsyncer (a CardDAV ``PUT``), its first name is changed through the
JSON API's ``PATCH``, it comes back down with vdirsyncer, out through the export, into another
account through the import and out of that one's export: every property is still there each
time. Cards are compared as parsed properties (vobject), not as bytes: vCard 3.0 and 4.0 write
the same property differently (``TYPE=pref`` and ``PREF=1``, ``ENCODING=b`` and a data URI).
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from vobject.base import ContentLine, getLogicalLines, textLineToContentLine
from vobject.icalendar import stringToTextValues
from vobject.vcard import splitFields

from tests.clients.conftest import OurBook, make_app_password
from tests.clients.harness import Vdirsyncer
from tests.conftest import TestUser

# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PHOTO_B64 = base64.b64encode(PNG).decode()

COMMON = [
    "FN:Ada Lovelace",
    "N:Lovelace;Ada;Augusta;Countess;",
    "TEL;TYPE=CELL:+44 20 7946 0000",
    "TEL;TYPE=WORK:+44 20 7946 0999",
    "TEL;TYPE=HOME:+44 20 7946 0123",
    "ADR;TYPE=HOME:;;12 St James's Square;London;;SW1Y 4JH;United Kingdom",
    "ORG:Analytical Engines Ltd;Research",
    "TITLE:Programmer",
    "URL:https://example.org/ada",
    "NOTE:First programmer\\, notes on the engine; see sketch\\nsecond line",
    "CATEGORIES:friends,mathematics",
    "X-PRONOUNS:she/her",
    "X-ABLABEL:engine",
    "BDAY:1815-12-10",
]


def rich_card(version: str, uid: str, email_home: str, email_work: str) -> str:
    """The rich card in vCard ``version``, with the two e-mail addresses given."""
    if version == "4.0":
        specific = [
            f"EMAIL;TYPE=home;PREF=1:{email_home}",
            f"EMAIL;TYPE=work:{email_work}",
            f"PHOTO:data:image/png;base64,{PHOTO_B64}",
        ]
    else:
        specific = [
            f"EMAIL;TYPE=INTERNET,HOME,PREF:{email_home}",
            f"EMAIL;TYPE=INTERNET,WORK:{email_work}",
            f"PHOTO;ENCODING=b;TYPE=PNG:{PHOTO_B64}",
        ]
    lines = ["BEGIN:VCARD", f"VERSION:{version}", f"UID:{uid}", *COMMON, *specific, "END:VCARD"]
    return "\r\n".join(lines) + "\r\n"


# --------------------------------------------------------------------------- comparing cards
#
# Cards are read as vobject content lines (unfolded, parameters parsed) and each value decoded
# here: vobject 0.9.9's vCard behaviour reads a vCard 4.0 ``PHOTO:data:image/png;base64,...``
# as text and cuts it at the first comma, which would make a lost photo look like a kept one.

Card = list[ContentLine]
IGNORED = {"BEGIN", "END", "VERSION", "PRODID", "REV", "UID"}
#: TYPE values that only restate a default (3.0's INTERNET e-mail, VOICE phone).
DEFAULT_TYPES = {"internet", "voice"}


def cards_in(text: str) -> list[Card]:
    """The cards of ``text``, each as its content lines."""
    cards: list[Card] = []
    for raw, number in getLogicalLines(io.StringIO(text)):
        line = textLineToContentLine(raw, number)
        if line.name.upper() == "BEGIN" and line.value.upper() == "VCARD":
            cards.append([])
        cards[-1].append(line)
    return cards


def one_card(text: str) -> Card:
    """The one card of ``text``."""
    cards = cards_in(text)
    assert len(cards) == 1, text
    return cards[0]


def values(card: Card, name: str) -> list[str]:
    """The raw values of the card's properties called ``name``."""
    return [line.value for line in card if line.name.upper() == name]


def name_parts(card: Card) -> list[str]:
    """The card's N, split: family, given, additional, prefix, suffix."""
    (n,) = values(card, "N")
    return [*splitFields(n), "", "", "", "", ""][:5]


def _text(value: str) -> str:
    return ",".join(stringToTextValues(value))


def _photo(line: ContentLine) -> tuple[str, bytes]:
    value = line.value
    if isinstance(value, bytes):  # ENCODING=b, decoded by the line parser
        return "image/png" if "png" in str(line.params).lower() else "?", value
    if value.startswith("data:"):
        header, _, data = value.partition(",")
        return header.removeprefix("data:").split(";")[0].lower(), base64.b64decode(data)
    return "image/png" if "png" in str(line.params).lower() else "?", base64.b64decode(value)


def _value(line: ContentLine) -> Any:
    name = line.name.upper()
    value = line.value
    if name == "PHOTO":
        return _photo(line)
    if name in {"N", "ADR"}:
        width = 5 if name == "N" else 7
        return tuple([*splitFields(value), *[""] * width][:width])
    if name == "ORG":
        return tuple(splitFields(value))
    if name == "CATEGORIES":
        return tuple(sorted(v.strip() for v in stringToTextValues(value)))
    if name == "TEL":
        return "".join(ch for ch in value.removeprefix("tel:") if ch.isdigit() or ch == "+")
    if name == "EMAIL":
        return value.strip().lower()
    if name == "BDAY":
        return value.replace("-", "")[:8]
    return _text(value)


def _params(line: ContentLine) -> tuple[bool, frozenset[str], frozenset[tuple[str, str]]]:
    if line.name.upper() == "PHOTO":
        return False, frozenset(), frozenset()  # its media type is compared with its bytes
    pref = False
    types: set[str] = set()
    other: set[tuple[str, str]] = set()
    for key, given in line.params.items():
        key = key.upper()
        flat = [v.strip().lower() for value in given for v in str(value).split(",")]
        if key == "TYPE":
            pref = pref or "pref" in flat
            types.update(v for v in flat if v not in {"pref", *DEFAULT_TYPES})
        elif key == "PREF":
            pref = True
        elif key not in {"ENCODING", "VALUE", "CHARSET", "MEDIATYPE", "PID"}:
            other.update((key, v) for v in flat)
    return pref, frozenset(types), frozenset(other)


def properties(card: Card, *, skip: frozenset[str] = frozenset()) -> list[tuple[Any, ...]]:
    """The card's properties as comparable tuples, sorted: (NAME, pref, TYPEs, other params, value)."""
    found = [
        (line.name.upper(), *_params(line), _value(line))
        for line in card
        if line.name.upper() not in IGNORED | skip
    ]
    return sorted(found, key=repr)


def assert_same(got: Card, sent: Card, *, skip: frozenset[str] = frozenset()) -> None:
    """``got`` has every property of ``sent`` (but those in ``skip``) and no other."""
    want, have = properties(sent, skip=skip), properties(got, skip=skip)
    missing = [p for p in want if p not in have]
    extra = [p for p in have if p not in want]
    assert not missing and not extra, f"missing: {missing}\nextra: {extra}"


def with_email(cards: list[Card], email: str) -> Card:
    """The one card of ``cards`` with ``email``."""
    found = [
        card for card in cards if email in [_value(line) for line in card if line.name.upper() == "EMAIL"]
    ]
    assert len(found) == 1, f"{email}: {len(found)} cards"
    return found[0]


def local_with_email(folder: Path, email: str) -> Card:
    """The card in the vdir ``folder`` with ``email``."""
    return with_email([one_card(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.vcf"))], email)


NAMES = frozenset({"N", "FN"})


def test_the_comparison_sees_3_0_and_4_0_forms_as_equal_and_a_lost_property_as_lost() -> None:
    three = one_card(rich_card("3.0", "u", "h@example.com", "w@example.com"))
    four = one_card(rich_card("4.0", "u", "h@example.com", "w@example.com"))
    assert_same(three, four)
    assert ("PHOTO", False, frozenset(), frozenset(), ("image/png", PNG)) in properties(four)
    for dropped in ("PHOTO", "ADR", "X-PRONOUNS", "CATEGORIES", "TITLE"):
        with pytest.raises(AssertionError, match="missing"):
            assert_same([line for line in four if line.name.upper() != dropped], three)
    cut = [line for line in four if line.name.upper() != "PHOTO"]
    cut.append(textLineToContentLine("PHOTO:data:image/png;base64"))
    with pytest.raises(AssertionError, match="missing"):
        assert_same(cut, three)
    unpref = one_card(rich_card("4.0", "u", "h@example.com", "w@example.com").replace(";PREF=1", ""))
    with pytest.raises(AssertionError, match="missing"):
        assert_same(unpref, three)


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize("version", ["3.0", "4.0"])
async def test_a_rich_card_survives_carddav_patch_export_and_import(
    binaries: dict[str, str],
    our_book: OurBook,
    user_factory: Callable[..., Awaitable[TestUser]],
    tmp_path: Path,
    version: str,
) -> None:
    home, work = f"ada-{uuid.uuid4().hex[:6]}@example.com", f"work-{uuid.uuid4().hex[:6]}@example.com"
    uid = f"rich-{uuid.uuid4().hex}"
    sent_text = rich_card(version, uid, home, work)
    sent = one_card(sent_text)

    sync = Vdirsyncer(
        binaries["vdirsyncer"],
        tmp_path,
        url=our_book.url,
        username=our_book.username,
        password=our_book.password,
    )
    # One card from the server first, so the vdir's collection exists before the rich one is put in.
    await our_book.create("Kept", "Always", f"kept-{uuid.uuid4().hex[:6]}@example.com")
    await sync.discover()
    await sync.sync()
    folder = sync.collection()
    (folder / f"{uid}.vcf").write_text(sent_text, encoding="utf-8", newline="")

    # Up through CardDAV: the JSON view shows the name, the preferred e-mail and the first phone.
    await sync.sync()
    listed = [c for c in await our_book.contacts() if c["email"] == home]
    assert len(listed) == 1, await our_book.contacts()
    contact = listed[0]
    assert (contact["first_name"], contact["last_name"]) == ("Ada", "Lovelace")
    assert contact["phone_number"] is not None
    assert "7946" in contact["phone_number"]

    # A JSON PATCH of first_name rewrites N (and FN) and keeps everything else.
    patched = await our_book.http.patch(f"/api/contacts/{contact['id']}", json={"first_name": "Augusta"})
    assert patched.status_code == 200, patched.text
    await sync.sync()
    back = local_with_email(folder, home)
    assert name_parts(back)[:2] == ["Lovelace", "Augusta"]
    assert "Augusta" in values(back, "FN")[0]
    assert_same(back, sent, skip=NAMES)
    assert values(back, "UID") == [uid]

    # Export (vCard 4.0) keeps it all.
    exported = await our_book.http.get("/api/contacts/export")
    assert exported.status_code == 200, exported.text
    out = with_email(cards_in(exported.text), home)
    assert_same(out, sent, skip=NAMES)
    assert name_parts(out)[:2] == ["Lovelace", "Augusta"]

    # Imported into another account, and exported from there: still all of it.
    other = await user_factory()
    async with httpx.AsyncClient(base_url=our_book.base_url, headers=other.headers, trust_env=False) as http:
        imported = await http.post(
            "/api/contacts/import", files={"file": ("contacts.vcf", exported.content, "text/vcard")}
        )
        assert imported.status_code == 200, imported.text
        assert imported.json()["created"] == 2, imported.json()
        assert imported.json()["errors"] == []
        again = await http.get("/api/contacts/export")
        assert again.status_code == 200
    assert_same(with_email(cards_in(again.text), home), sent, skip=NAMES)

    # And that account's CardDAV client gets it whole as well.
    other_password = await make_app_password(our_book.base_url, other)
    other_sync = Vdirsyncer(
        binaries["vdirsyncer"],
        tmp_path / "other",
        url=our_book.url,
        username=other.email,
        password=other_password,
    )
    await other_sync.discover()
    await other_sync.sync()
    theirs = local_with_email(other_sync.collection(), home)
    assert_same(theirs, sent, skip=NAMES)
    assert name_parts(theirs)[:2] == ["Lovelace", "Augusta"]
