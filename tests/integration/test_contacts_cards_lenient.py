"""A card from CardDAV is kept whole and taken even when its JSON view breaks a JSON-API rule.

Only a card that is not one, has no name, is too large, holds a NUL or takes another card's
``UID`` is refused; the view is derived leniently (names and note cut, an email or number the
JSON API refuses skipped, an unreadable birthday or a shared email left out). The JSON API's
own writes stay strict. Both backends (PostgreSQL refuses NUL in text).
"""

# ruff: noqa: F811 (the fixtures of test_contacts_cards are imported, then asked for by name)
from __future__ import annotations

import pytest

from app.contacts.cards import CardError, CardWithoutNameError, parse_card
from tests.integration.test_contacts_cards import (  # noqa: F401 (fixtures)
    BASE,
    card_text,
    db,
    props,
    put,
    rows,
    run,
    store,
)

LONG_GIVEN = "Maximiliane-Alexandrina-Theodora-Konstantina-Wilhelmina"  # 55 characters
# A combining acute accent on the 50th/51st characters: the cut keeps the letter whole.
LONG_FAMILY = "x" * 49 + "e\u0301" + "y" * 20


def vcard(*lines: str, version: str = "4.0") -> str:
    return "\r\n".join(["BEGIN:VCARD", f"VERSION:{version}", *lines, "END:VCARD", ""])


def whole(stored: str, sent: str) -> bool:
    """The stored card is the one sent, property for property (plus the UID it was given)."""
    return [p for p in props(stored) if p[0] != "UID"] == props(sent)


async def view(client, user, contact_id) -> dict:
    response = await client.get(f"{BASE}/{contact_id}", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def patch_first_name(client, user, contact_id, name="Renamed") -> dict:
    response = await client.patch(f"{BASE}/{contact_id}", json={"first_name": name}, headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json()["first_name"] == name
    return response.json()


# --------------------------------------------------------------------------- lenient cases


async def test_long_names_are_cut_in_the_view_and_kept_in_the_card(client, user, run, store):
    text = vcard(f"N:{LONG_FAMILY};{LONG_GIVEN};;;", f"FN:{LONG_GIVEN} {LONG_FAMILY}")
    stored, created = await put(run, store, user, "long.vcf", text)
    assert created
    assert whole(stored.card, text)
    shown = await view(client, user, stored.id)
    assert shown["first_name"] == LONG_GIVEN[:50]
    assert shown["last_name"] == "x" * 49, "cut before the letter whose accent would be left out"

    await patch_first_name(client, user, stored.id)
    card = parse_card((await run(store.card_by_name, user.id, "long.vcf")).card)
    assert card.names() == ("Renamed", LONG_FAMILY), "the family name is still whole"
    assert (await view(client, user, stored.id))["last_name"] == "x" * 49


async def test_a_long_note_is_cut_in_the_view_and_kept_in_the_card(client, user, run, store):
    note = "line one\\n" + "n" * 600
    text = vcard("FN:Noted Person", f"NOTE:{note}")
    stored, _ = await put(run, store, user, "note.vcf", text)
    assert whole(stored.card, text)
    shown = await view(client, user, stored.id)
    assert shown["additional_data"] == ("line one\n" + "n" * 600)[:500]

    await patch_first_name(client, user, stored.id)
    card = parse_card((await run(store.card_by_name, user.id, "note.vcf")).card)
    assert card.first("NOTE").value == note


@pytest.mark.parametrize(
    ("lines", "email", "kept"),
    [
        (["EMAIL;PREF=1:not an email", "EMAIL:second@example.com"], "second@example.com", 2),
        (["EMAIL;TYPE=pref:broken@", "EMAIL:Other@Example.COM"], "other@example.com", 2),
        (["EMAIL:not an email"], None, 1),
        (["EMAIL:" + "a" * 300 + "@example.com"], None, 1),
    ],
)
async def test_an_email_the_json_api_refuses_is_skipped(client, user, run, store, lines, email, kept):
    text = vcard("FN:Mail Person", *lines)
    stored, _ = await put(run, store, user, "mail.vcf", text)
    assert whole(stored.card, text)
    assert (await view(client, user, stored.id))["email"] == email

    await patch_first_name(client, user, stored.id)
    card = parse_card((await run(store.card_by_name, user.id, "mail.vcf")).card)
    assert len([line for line in card.lines if line.name == "EMAIL"]) == kept


@pytest.mark.parametrize(
    ("lines", "phone"),
    [
        (["TEL;PREF=1:+380 50 123 4567 ext. 12", "TEL:+44 20 7946 0958"], "+442079460958"),
        (["TEL:ext. 12"], None),
        (["TEL:12"], None),
        (["TEL;VALUE=uri:tel:+1-650-253-0000;ext=12"], "+16502530000"),
        (["TEL:+1 (650) 253-0000 x 12345678901234567890"], None),
    ],
)
async def test_a_number_the_json_api_refuses_is_skipped(client, user, run, store, lines, phone):
    text = vcard("FN:Phone Person", *lines)
    stored, _ = await put(run, store, user, "tel.vcf", text)
    assert whole(stored.card, text)
    assert (await view(client, user, stored.id))["phone_number"] == phone
    await patch_first_name(client, user, stored.id)
    card = parse_card((await run(store.card_by_name, user.id, "tel.vcf")).card)
    assert [line.value for line in card.lines if line.name == "TEL"] == [
        line.split(":", 1)[1] for line in lines
    ]


async def test_a_json_write_of_the_number_replaces_the_one_the_view_shows(client, user, run, store):
    text = vcard("FN:Phone Person", "TEL;PREF=1:ext. 12", "TEL;TYPE=work:+44 20 7946 0958")
    stored, _ = await put(run, store, user, "tel.vcf", text)
    response = await client.patch(
        f"{BASE}/{stored.id}", json={"phone_number": "+380501234567"}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    card = parse_card((await run(store.card_by_name, user.id, "tel.vcf")).card)
    tels = [(line.value, line.params.get("TYPE")) for line in card.lines if line.name == "TEL"]
    assert tels == [("ext. 12", None), ("+380501234567", ["work"])]


@pytest.mark.parametrize(
    "bday", ["BDAY:soon", "BDAY:19901340", "BDAY:2999-01-01", "BDAY;VALUE=text:circa 1800"]
)
async def test_an_unreadable_birthday_is_null(client, user, run, store, bday):
    text = vcard("FN:Born Person", bday)
    stored, _ = await put(run, store, user, "born.vcf", text)
    assert whole(stored.card, text)
    assert (await view(client, user, stored.id))["birthday"] is None
    await patch_first_name(client, user, stored.id)
    card = parse_card((await run(store.card_by_name, user.id, "born.vcf")).card)
    assert card.first("BDAY").value == bday.split(":", 1)[1]


async def test_control_characters_a_json_field_refuses_are_not_in_the_view(client, user, run, store):
    text = vcard("N:Line\\nBreak;Ti\u0085m;;;", "FN:Tim", "NOTE:a\u0090b\\nc")
    stored, _ = await put(run, store, user, "ctl.vcf", text)
    assert whole(stored.card, text)
    shown = await view(client, user, stored.id)
    assert (shown["first_name"], shown["last_name"]) == ("Ti m", "Line Break")
    assert shown["additional_data"] == "ab\nc"
    await patch_first_name(client, user, stored.id)

    with pytest.raises(CardWithoutNameError):
        await put(run, store, user, "noname.vcf", vcard("FN:\u0085\u0090"))


# --------------------------------------------------------------------------- a shared email


async def test_an_email_another_contact_has_is_kept_in_the_card_and_null_in_the_view(
    client, user, run, store, db
):
    mom = await client.post(
        f"{BASE}/", json={"first_name": "Mom", "email": "family@example.com"}, headers=user.headers
    )
    assert mom.status_code == 201
    text = vcard("FN:Dad Person", "EMAIL:Family@Example.com", "NOTE:shares the address")
    stored, created = await put(run, store, user, "dad.vcf", text)
    assert created
    assert whole(stored.card, text)
    assert (await view(client, user, stored.id))["email"] is None
    assert (await view(client, user, mom.json()["id"]))["email"] == "family@example.com"

    # PATCH and a PUT that sends the view back keep the card's email; the card stays whole.
    await patch_first_name(client, user, stored.id)
    shown = await view(client, user, stored.id)
    body = {key: shown[key] for key in ("first_name", "last_name", "email", "phone_number", "birthday")}
    body["additional_data"] = shown["additional_data"]
    response = await client.put(
        f"{BASE}/{stored.id}", json={**body, "first_name": "Dad"}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    card = parse_card((await run(store.card_by_name, user.id, "dad.vcf")).card)
    assert [line.value for line in card.lines if line.name == "EMAIL"] == ["Family@Example.com"]

    # The JSON API stays strict: the address is Mom's.
    response = await client.patch(
        f"{BASE}/{stored.id}", json={"email": "family@example.com"}, headers=user.headers
    )
    assert response.status_code == 409
    assert (await view(client, user, stored.id))["email"] is None

    # The same card again (an update), and a second card sharing it.
    again, created = await put(run, store, user, "dad.vcf", text.replace("Dad", "Daddy"), if_match=None)
    assert not created
    assert again.id == stored.id
    assert (await view(client, user, stored.id))["first_name"] == "Daddy"
    kid, _ = await put(run, store, user, "kid.vcf", vcard("FN:Kid", "EMAIL:family@example.com"))
    assert (await view(client, user, kid.id))["email"] is None
    assert await rows(db, owner_id=user.id) == 3


async def test_an_update_that_brings_a_shared_email_keeps_it_in_the_card(client, user, run, store):
    await client.post(
        f"{BASE}/", json={"first_name": "Mom", "email": "family@example.com"}, headers=user.headers
    )
    stored, _ = await put(run, store, user, "dad.vcf", vcard("FN:Dad", "EMAIL:dad@example.com"))
    assert (await view(client, user, stored.id))["email"] == "dad@example.com"
    text = vcard("FN:Dad", "EMAIL:family@example.com")
    again, created = await put(run, store, user, "dad.vcf", text, if_match=stored.etag)
    assert not created
    assert whole(again.card, text)
    assert (await view(client, user, stored.id))["email"] is None


async def test_the_email_of_another_users_contact_is_not_shared(client, user, user_factory, run, store):
    other = await user_factory()
    await client.post(
        f"{BASE}/", json={"first_name": "O", "email": "family@example.com"}, headers=other.headers
    )
    stored, _ = await put(run, store, user, "dad.vcf", vcard("FN:Dad", "EMAIL:family@example.com"))
    assert (await view(client, user, stored.id))["email"] == "family@example.com"


# --------------------------------------------------------------------------- still refused


async def test_a_card_with_nul_is_refused_and_nothing_is_stored(client, user, run, store, db):
    stored, _ = await put(run, store, user, "a.vcf", vcard("FN:Ada", "NOTE:before"))
    token = await run(store.sync_token, user.id)
    for name, text in [
        ("b.vcf", vcard("FN:Nul\x00Name")),
        ("c.vcf", vcard("FN:Nul Note", "NOTE:a\x00b")),
        ("a.vcf", vcard("FN:Ada", "NOTE:a\x00b")),
    ]:
        with pytest.raises(CardError) as refused:
            await put(run, store, user, name, text)
        assert refused.value.status_code == 400
    assert await rows(db, owner_id=user.id) == 1
    assert await run(store.sync_token, user.id) == token
    assert (await run(store.card_by_name, user.id, "a.vcf")).card == stored.card
    assert (await view(client, user, stored.id))["additional_data"] == "before"


async def test_the_json_api_stays_strict(client, user, run, store):
    stored, _ = await put(run, store, user, "long.vcf", vcard(f"N:{LONG_FAMILY};{LONG_GIVEN};;;"))
    before = (await run(store.card_by_name, user.id, "long.vcf")).card
    for method, path, body in [
        ("post", f"{BASE}/", {"first_name": "g" * 51}),
        ("post", f"{BASE}/", {"first_name": "A", "additional_data": "n" * 501}),
        ("post", f"{BASE}/", {"first_name": "A", "email": "not an email"}),
        ("post", f"{BASE}/", {"first_name": "A", "phone_number": "ext. 12"}),
        ("post", f"{BASE}/", {"first_name": "A", "birthday": "soon"}),
        ("patch", f"{BASE}/{stored.id}", {"first_name": LONG_GIVEN}),
        ("patch", f"{BASE}/{stored.id}", {"additional_data": "n" * 501}),
        ("patch", f"{BASE}/{stored.id}", {"phone_number": "ext. 12"}),
        ("put", f"{BASE}/{stored.id}", {"first_name": "A", "last_name": LONG_FAMILY}),
    ]:
        response = await getattr(client, method)(path, json=body, headers=user.headers)
        assert response.status_code == 400, (method, body, response.text)
    assert (await run(store.card_by_name, user.id, "long.vcf")).card == before
    listed = (await client.get(f"{BASE}/", headers=user.headers)).json()
    assert listed["total"] == 1
