"""vCard handling (app.contacts.cards): the JSON view, rewriting its properties, 3.0 <-> 4.0."""

from __future__ import annotations

from datetime import date

import pytest
import vobject

from app.contacts.cards import (
    CardWithoutNameError,
    NotACardError,
    apply_fields,
    new_card,
    parse_card,
    serialize_card,
    version_of,
)

RICH_4 = (
    "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:abc\r\nFN:Ada Lovelace\r\nN:Lovelace;Ada;;Dr;\r\n"
    "TEL;VALUE=uri;TYPE=cell;PREF=1:tel:+380501234567\r\nTEL;TYPE=work:+1 555 1234\r\n"
    "EMAIL;TYPE=work:ada@example.com\r\nPHOTO:data:image/png;base64,iVBORw0KGgo=\r\n"
    "ADR;TYPE=home:;;1 Main St;Town;;12345;UA\r\nX-FOO;X-PARAM=1:bar\\, baz\r\n"
    "NOTE:line1\\nline2\r\nBDAY:--0517\r\nCATEGORIES:a,b\r\nitem1.URL:http://x.com/a,b\r\nEND:VCARD\r\n"
)


def test_the_json_view_of_a_card() -> None:
    assert parse_card(RICH_4).fields() == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone_number": "+380501234567",
        "birthday": date(1604, 5, 17),
        "additional_data": "line1\nline2",
    }


def test_values_with_commas_survive_where_vobjects_behaviours_cut_them() -> None:
    text = parse_card(RICH_4).text()
    assert "PHOTO:data:image/png;base64,iVBORw0KGgo=\r\n" in text
    assert "item1.URL:http://x.com/a,b\r\n" in text
    assert "X-FOO;X-PARAM=1:bar\\, baz\r\n" in text


def test_4_to_3_and_back_keeps_every_property() -> None:
    three = serialize_card(RICH_4, "3.0")
    assert version_of(three) == "3.0"
    assert "TEL;TYPE=cell,pref:+380501234567" in three
    assert "PHOTO;ENCODING=b;TYPE=PNG:iVBORw0KGgo=" in three
    assert "BDAY;X-APPLE-OMIT-YEAR=1604:1604-05-17" in three
    parsed = vobject.readOne(three)  # an independent reader takes it
    assert parsed.n.value.family == "Lovelace"
    back = serialize_card(three, "4.0")
    # Everything comes back as it was, but the tel: URI, which 3.0 writes as text.
    original = parse_card(RICH_4).text().replace(";VALUE=uri:tel:", ":")
    assert sorted(parse_card(back).text().splitlines()) == sorted(original.splitlines())
    assert parse_card(three).fields() == parse_card(RICH_4).fields()


def test_a_4_0_card_without_n_gets_one_in_3_0() -> None:
    three = serialize_card("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Acme\r\nEND:VCARD\r\n", "3.0")
    assert "N:;Acme;;;" in three


def test_apply_fields_rewrites_only_its_properties() -> None:
    card = apply_fields(parse_card(RICH_4), {"last_name": None, "email": "new@example.com", "birthday": None})
    text = card.text()
    assert "N:;Ada;;Dr;" in text
    assert "FN:Ada\r\n" in text
    assert "EMAIL;TYPE=work:new@example.com" in text
    assert "BDAY" not in text
    assert text.count("TEL") == 2


def test_long_lines_are_folded_and_read_back() -> None:
    note = "long note " * 40
    text = new_card("u1", {"first_name": "Ann", "additional_data": note})
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))
    assert parse_card(text).fields()["additional_data"] == note


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("BEGIN:VCARD\r\nVERSION:4.0\r\nORG:Acme\r\nEND:VCARD\r\n", CardWithoutNameError),
        ("BEGIN:VCARD\r\nFN:x\r\nEND:VCARD\r\n", NotACardError),
        ("<html></html>", NotACardError),
    ],
)
def test_bad_cards(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_card(text)
