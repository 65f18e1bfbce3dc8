"""One book, two doors: the JSON API and CardDAV see the same contacts, and a change on either
side moves the card's ETag, the book's getctag and its sync token on both (API.md, CardDAV)."""

from __future__ import annotations

import pytest

from tests.dav import CS, D, dav, make_dav_user, multistatus, propfind_body, sync_body, sync_token, vcard

VCARD = {"Content-Type": "text/vcard; charset=utf-8"}


@pytest.fixture
async def me(client, user):
    return await make_dav_user(client, user)


async def book_state(client, me):
    member = multistatus(
        await dav(
            client, "PROPFIND", me.book, me, propfind_body("CS:getctag", "D:sync-token"), {"Depth": "0"}
        )
    )[me.book]
    return member.text(f"{CS}getctag"), member.text(f"{D}sync-token")


async def listing(client, me):
    members = multistatus(
        await dav(client, "PROPFIND", me.book, me, propfind_body("D:getetag"), {"Depth": "1"})
    )
    return {href: m.text(f"{D}getetag") for href, m in members.items() if href != me.book}


async def test_a_json_contact_is_a_card(client, me):
    ctag0, token0 = await book_state(client, me)
    created = await client.post(
        "/api/contacts/", json={"first_name": "Ada", "last_name": "Lovelace"}, headers=me.user.headers
    )
    assert created.status_code == 201, created.text
    json_etag = created.headers["etag"]
    cards = await listing(client, me)
    assert len(cards) == 1
    ((href, dav_etag),) = cards.items()
    assert dav_etag == json_etag
    got = await dav(client, "GET", href, me)
    assert "Ada" in got.text
    assert "Lovelace" in got.text
    ctag1, token1 = await book_state(client, me)
    assert ctag1 != ctag0
    assert token1 != token0

    # A JSON change moves the card's ETag, the ctag and the token; the sync reports the card.
    contact_id = created.json()["id"]
    patched = await client.patch(
        f"/api/contacts/{contact_id}", json={"first_name": "Augusta"}, headers=me.user.headers
    )
    assert patched.status_code == 200, patched.text
    assert (await listing(client, me))[href] == patched.headers["etag"] != dav_etag
    ctag2, token2 = await book_state(client, me)
    assert (ctag2, token2) != (ctag1, token1)
    delta = multistatus(await dav(client, "REPORT", me.book, me, sync_body(token1), {"Depth": "0"}))
    assert set(delta) == {href}
    assert "Augusta" in (await dav(client, "GET", href, me)).text

    # A JSON deletion is a 404 member of the next sync.
    assert (await client.delete(f"/api/contacts/{contact_id}", headers=me.user.headers)).status_code == 204
    gone = multistatus(await dav(client, "REPORT", me.book, me, sync_body(token2), {"Depth": "0"}))
    assert gone[href].status == "HTTP/1.1 404 Not Found"
    assert (await dav(client, "GET", href, me)).status_code == 404


async def test_a_card_is_a_json_contact(client, me):
    text = vcard(
        "grace-1",
        "Grace Hopper",
        "EMAIL;TYPE=work:grace@navy.example",
        "TEL;TYPE=cell:+1 202 555 0100",
        "ORG:US Navy",
        "X-RANK:Rear Admiral",
    )
    put = await dav(client, "PUT", me.card("grace.vcf"), me, text.encode(), VCARD)
    assert put.status_code == 201
    contacts = (await client.get("/api/contacts/", headers=me.user.headers)).json()
    items = contacts["items"] if isinstance(contacts, dict) else contacts
    (contact,) = items
    assert contact["first_name"] == "Grace"
    assert contact["last_name"] == "Hopper"
    assert contact["email"] == "grace@navy.example"
    one = await client.get(f"/api/contacts/{contact['id']}", headers=me.user.headers)
    assert one.headers["etag"] == put.headers["etag"]

    # A JSON PATCH keeps what the JSON model does not show.
    token = sync_token(await dav(client, "REPORT", me.book, me, sync_body(), {"Depth": "0"}))
    patched = await client.patch(
        f"/api/contacts/{contact['id']}", json={"first_name": "Amazing"}, headers=me.user.headers
    )
    assert patched.status_code == 200
    card = (await dav(client, "GET", me.card("grace.vcf"), me)).text
    assert "Amazing" in card
    assert "X-RANK:Rear Admiral" in card
    assert "ORG:US Navy" in card
    delta = multistatus(await dav(client, "REPORT", me.book, me, sync_body(token), {"Depth": "0"}))
    assert set(delta) == {me.card("grace.vcf")}

    # A DAV deletion removes the JSON contact.
    assert (await dav(client, "DELETE", me.card("grace.vcf"), me)).status_code == 204
    assert (await client.get(f"/api/contacts/{contact['id']}", headers=me.user.headers)).status_code == 404


async def test_json_if_match_etag_works_on_dav(client, me):
    created = await client.post("/api/contacts/", json={"first_name": "Ada"}, headers=me.user.headers)
    ((href, etag),) = (await listing(client, me)).items()
    text = (await dav(client, "GET", href, me)).text.replace("Ada", "Ada Byron")
    stale = await dav(client, "PUT", href, me, text.encode(), {**VCARD, "If-Match": '"0"'})
    assert stale.status_code == 412
    ok = await dav(client, "PUT", href, me, text.encode(), {**VCARD, "If-Match": etag})
    assert ok.status_code == 204
    again = await client.get(f"/api/contacts/{created.json()['id']}", headers=me.user.headers)
    assert again.headers["etag"] == ok.headers["etag"]


RICH = "\r\n".join(
    [
        "BEGIN:VCARD",
        "VERSION:3.0",
        "UID:rich-1",
        "FN:Ada Lovelace",
        "N:Lovelace;Ada;Augusta;Lady;",
        "TEL;TYPE=CELL,PREF:+44 20 1111",
        "TEL;TYPE=WORK:+44 20 2222",
        "TEL;TYPE=HOME:+44 20 3333",
        "EMAIL;TYPE=WORK:ada@work.example",
        "EMAIL;TYPE=HOME:ada@home.example",
        "ADR;TYPE=HOME:;;12 St James's Square;London;;SW1Y 4JH;UK",
        "ORG:Analytical Engines Ltd",
        "TITLE:Analyst",
        "URL:https://ada.example/",
        "NOTE:Wrote the first program",
        "PHOTO;ENCODING=b;TYPE=PNG:iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
        "CATEGORIES:friends,mathematicians",
        "X-ANIMAL:cat",
        "END:VCARD",
        "",
    ]
)


def properties(text):
    """The card's properties as comparable values (name, sorted TYPE params, value), VERSION/REV/PRODID aside."""
    import vobject

    card = vobject.readOne(text)
    found = set()
    for name, lines in card.contents.items():
        if name in ("version", "rev", "prodid"):
            continue
        for line in lines:
            types = tuple(
                sorted(t.lower() for value in line.params.get("TYPE", []) for t in value.split(","))
            )
            value = line.value
            if name == "photo":
                value = "photo"  # 3.0 ENCODING=b and 4.0 data URI are the same picture
            elif name == "n":
                value = (value.family, value.given, value.additional, value.prefix)
            elif name == "adr":
                value = (value.street, value.city, value.code, value.country)
            elif isinstance(value, list):
                value = tuple(value)
            found.add((name, tuple(t for t in types if t != "pref"), str(value)))
    return found


async def test_a_rich_card_round_trips_through_dav_and_a_json_patch(client, me):
    put = await dav(client, "PUT", me.card("rich.vcf"), me, RICH.encode(), VCARD)
    assert put.status_code == 201, put.text
    expected = properties(RICH)
    three = (await dav(client, "GET", me.card("rich.vcf"), me)).text
    assert properties(three) == expected
    four = (
        await dav(client, "GET", me.card("rich.vcf"), me, headers={"Accept": "text/vcard; version=4.0"})
    ).text
    assert "VERSION:4.0" in four
    assert {p for p in properties(four) if p[0] != "photo"} == {p for p in expected if p[0] != "photo"}
    assert any(p[0] == "photo" for p in properties(four))

    contacts = (await client.get("/api/contacts/", headers=me.user.headers)).json()["items"]
    (contact,) = contacts
    assert contact["phone_number"].replace(" ", "").endswith("201111")  # the preferred TEL
    patched = await client.patch(
        f"/api/contacts/{contact['id']}", json={"first_name": "Augusta"}, headers=me.user.headers
    )
    assert patched.status_code == 200
    after = properties((await dav(client, "GET", me.card("rich.vcf"), me)).text)
    changed = expected ^ after
    assert {p[0] for p in changed} <= {"fn", "n"}  # only the name moved
    assert not [p for p in after if p[0] == "fn" and "Ada Lovelace" in p[2]]


async def test_dav_writes_show_in_the_json_changes_feed(client, me):
    start = await client.get("/api/contacts/changes", headers=me.user.headers)
    assert start.status_code == 200, start.text
    token = start.json()["next"]
    await dav(client, "PUT", me.card("feed.vcf"), me, vcard("feed-1", "Feed Person").encode(), VCARD)
    changed = (
        await client.get("/api/contacts/changes", params={"since": token}, headers=me.user.headers)
    ).json()
    assert [c["first_name"] for c in changed["changed"]] == ["Feed"]
    contact_id = changed["changed"][0]["id"]
    assert (await dav(client, "DELETE", me.card("feed.vcf"), me)).status_code == 204
    gone = (
        await client.get("/api/contacts/changes", params={"since": changed["next"]}, headers=me.user.headers)
    ).json()
    assert gone["deleted"] == [contact_id]
    assert gone["changed"] == []
