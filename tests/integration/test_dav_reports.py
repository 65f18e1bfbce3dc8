"""CardDAV reports: addressbook-multiget (RFC 6352 8.7), addressbook-query (8.6), sync-collection (RFC 6578)."""

from __future__ import annotations

import pytest

from tests.dav import NS, C, D, dav, error_condition, make_dav_user, multistatus, sync_body, sync_token, vcard

VCARD = {"Content-Type": "text/vcard; charset=utf-8"}


@pytest.fixture
async def me(client, user):
    return await make_dav_user(client, user)


async def put(client, me, name, text):
    response = await dav(client, "PUT", me.card(name), me, text.encode(), VCARD)
    assert response.status_code in (201, 204), response.text
    return response.headers["etag"]


def multiget_body(*hrefs, version=None):
    attributes = f' content-type="text/vcard" version="{version}"' if version else ""
    inner = "".join(f"<D:href>{href}</D:href>" for href in hrefs)
    return (
        f'<?xml version="1.0"?><C:addressbook-multiget {NS}><D:prop><D:getetag/>'
        f"<C:address-data{attributes}/></D:prop>{inner}</C:addressbook-multiget>"
    )


def query_body(filters, test="anyof", limit=None):
    limit_xml = f"<C:limit><C:nresults>{limit}</C:nresults></C:limit>" if limit else ""
    return (
        f'<?xml version="1.0"?><C:addressbook-query {NS}><D:prop><D:getetag/></D:prop>'
        f'<C:filter test="{test}">{filters}</C:filter>{limit_xml}</C:addressbook-query>'
    )


# --------------------------------------------------------------------------- multiget


async def test_multiget(client, me):
    ada = await put(client, me, "ada.vcf", vcard("ada", "Ada Lovelace", version="4.0"))
    await put(client, me, "bob.vcf", vcard("bob", "Bob Builder"))
    absolute = f"http://testserver.local{me.card('bob.vcf')}"
    members = multistatus(
        await dav(
            client,
            "REPORT",
            me.book,
            me,
            multiget_body(me.card("ada.vcf"), absolute, me.card("nope.vcf"), "/elsewhere/x.vcf"),
            {"Depth": "1"},
        )
    )
    assert members[me.card("ada.vcf")].text(f"{D}getetag") == ada
    assert "VERSION:3.0" in members[me.card("ada.vcf")].text(f"{C}address-data")  # 3.0 unless asked
    assert "FN:Bob Builder" in members[me.card("bob.vcf")].text(f"{C}address-data")
    assert members[me.card("nope.vcf")].status == "HTTP/1.1 404 Not Found"
    assert members["/elsewhere/x.vcf"].status == "HTTP/1.1 404 Not Found"


async def test_multiget_in_vcard_4(client, me):
    await put(client, me, "ada.vcf", vcard("ada", "Ada Lovelace"))
    members = multistatus(
        await dav(client, "REPORT", me.book, me, multiget_body(me.card("ada.vcf"), version="4.0"))
    )
    assert "VERSION:4.0" in members[me.card("ada.vcf")].text(f"{C}address-data")


async def test_multiget_of_another_users_card_is_404(client, me, user_factory):
    other = await make_dav_user(client, await user_factory())
    await put(client, other, "secret.vcf", vcard("s", "Secret Person"))
    members = multistatus(await dav(client, "REPORT", me.book, me, multiget_body(other.card("secret.vcf"))))
    assert members[other.card("secret.vcf")].status == "HTTP/1.1 404 Not Found"
    assert (
        b"Secret"
        not in (await dav(client, "REPORT", me.book, me, multiget_body(other.card("secret.vcf")))).content
    )
    # and a REPORT on their book is a 404
    assert (
        await dav(client, "REPORT", other.book, me, multiget_body(other.card("secret.vcf")))
    ).status_code == 404


async def test_unsupported_address_data_version(client, me):
    body = multiget_body(me.card("a.vcf")).replace(
        "<C:address-data/>", '<C:address-data content-type="text/vcard" version="2.1"/>'
    )
    response = await dav(client, "REPORT", me.book, me, body)
    assert response.status_code == 403
    assert error_condition(response) == f"{C}supported-address-data"


# --------------------------------------------------------------------------- query


@pytest.fixture
async def three(client, me):
    await put(client, me, "ada.vcf", vcard("ada", "Ada Lovelace", "EMAIL:ada@example.com", "TEL:+44 20 1234"))
    await put(client, me, "bob.vcf", vcard("bob", "Bob Builder", "EMAIL:bob@builders.example"))
    await put(client, me, "cyd.vcf", vcard("cyd", "Cyd Charisse", "TEL:+1 555 0100"))


async def query(client, me, filters, **kwargs):
    response = await dav(client, "REPORT", me.book, me, query_body(filters, **kwargs), {"Depth": "1"})
    return {href.rsplit("/", 1)[1] for href, member in multistatus(response).items() if member.status is None}


@pytest.mark.usefixtures("three")
@pytest.mark.parametrize(
    ("filters", "test", "expected"),
    [
        ('<C:prop-filter name="FN"><C:text-match>ada</C:text-match></C:prop-filter>', "anyof", {"ada.vcf"}),
        (
            '<C:prop-filter name="FN"><C:text-match match-type="equals">bob builder</C:text-match></C:prop-filter>',
            "anyof",
            {"bob.vcf"},
        ),
        (
            '<C:prop-filter name="N"><C:text-match match-type="starts-with">Charisse</C:text-match></C:prop-filter>',
            "anyof",
            {"cyd.vcf"},
        ),
        (
            '<C:prop-filter name="EMAIL"><C:text-match match-type="ends-with">.example</C:text-match></C:prop-filter>',
            "anyof",
            {"bob.vcf"},
        ),
        ('<C:prop-filter name="TEL"><C:text-match>555</C:text-match></C:prop-filter>', "anyof", {"cyd.vcf"}),
        (
            '<C:prop-filter name="FN"><C:text-match negate-condition="yes">a</C:text-match></C:prop-filter>',
            "anyof",
            {"bob.vcf"},
        ),
        ('<C:prop-filter name="EMAIL"><C:is-not-defined/></C:prop-filter>', "anyof", {"cyd.vcf"}),
        ('<C:prop-filter name="EMAIL"/><C:prop-filter name="TEL"/>', "allof", {"ada.vcf"}),
        (
            '<C:prop-filter name="EMAIL"/><C:prop-filter name="TEL"/>',
            "anyof",
            {"ada.vcf", "bob.vcf", "cyd.vcf"},
        ),
    ],
)
async def test_query(client, me, filters, test, expected):
    assert await query(client, me, filters, test=test) == expected


@pytest.mark.usefixtures("three")
async def test_query_limit_cuts_with_507(client, me):
    response = await dav(client, "REPORT", me.book, me, query_body('<C:prop-filter name="FN"/>', limit=2))
    members = multistatus(response)
    cards = [m for m in members.values() if m.status is None]
    assert len(cards) == 2
    assert members[me.book].status == "HTTP/1.1 507 Insufficient Storage"
    assert members[me.book].element.find(f"{D}error/{D}number-of-matches-within-limits") is not None


@pytest.mark.usefixtures("three")
async def test_query_with_an_unsupported_collation_is_403(client, me):
    filters = '<C:prop-filter name="FN"><C:text-match collation="i;klingon">a</C:text-match></C:prop-filter>'
    response = await dav(client, "REPORT", me.book, me, query_body(filters))
    assert response.status_code == 403
    assert error_condition(response) == f"{C}supported-collation"


# --------------------------------------------------------------------------- sync-collection


async def sync(client, me, token="", **kwargs):
    return await dav(client, "REPORT", me.book, me, sync_body(token, **kwargs), {"Depth": "0"})


async def test_initial_and_incremental_sync(client, me):
    ada = await put(client, me, "ada.vcf", vcard("ada"))
    await put(client, me, "bob.vcf", vcard("bob", "Bob Builder"))
    first = await sync(client, me)
    members = multistatus(first)
    assert set(members) == {me.card("ada.vcf"), me.card("bob.vcf")}
    assert members[me.card("ada.vcf")].text(f"{D}getetag") == ada
    token = sync_token(first)
    assert token

    # Nothing changed: nothing to say, the same token.
    quiet = await sync(client, me, token)
    assert multistatus(quiet) == {}
    assert sync_token(quiet) == token

    # One change, one deletion, one new card.
    ada2 = await put(client, me, "ada.vcf", vcard("ada", "Ada King"))
    assert (await dav(client, "DELETE", me.card("bob.vcf"), me)).status_code == 204
    await put(client, me, "cyd.vcf", vcard("cyd", "Cyd Charisse"))
    delta = await sync(client, me, token, props="<D:getetag/><C:address-data/>")
    members = multistatus(delta)
    assert set(members) == {me.card("ada.vcf"), me.card("bob.vcf"), me.card("cyd.vcf")}
    assert members[me.card("ada.vcf")].text(f"{D}getetag") == ada2
    assert "FN:Ada King" in members[me.card("ada.vcf")].text(f"{C}address-data")
    assert members[me.card("bob.vcf")].status == "HTTP/1.1 404 Not Found"
    assert sync_token(delta) != token
    # ... and the book's token is the one the report gave.
    book = multistatus(
        await dav(
            client,
            "PROPFIND",
            me.book,
            me,
            '<D:propfind xmlns:D="DAV:"><D:prop><D:sync-token/></D:prop></D:propfind>',
            {"Depth": "0"},
        )
    )
    assert book[me.book].text(f"{D}sync-token") == sync_token(delta)


@pytest.mark.parametrize("initial", [True, False])
async def test_sync_with_a_limit_continues_from_its_token(client, me, initial):
    token = "" if initial else sync_token(await sync(client, me))
    for index in range(5):
        await put(client, me, f"c{index}.vcf", vcard(f"c{index}", f"Card Number{index}"))
    seen: set[str] = set()
    for _ in range(10):
        response = await sync(client, me, token, limit=2)
        members = multistatus(response)
        cut = members.pop(me.book, None)
        seen |= set(members)
        token = sync_token(response)
        if cut is None:
            break
        assert cut.status == "HTTP/1.1 507 Insufficient Storage"
    assert seen == {me.card(f"c{index}.vcf") for index in range(5)}


@pytest.mark.parametrize(
    "token", ["urn:x-contacts:sync:999999", "http://example.com/other-server/1", "urn:x-contacts:sync:-1"]
)
async def test_an_unknown_sync_token_is_403_valid_sync_token(client, me, token):
    await put(client, me, "a.vcf", vcard("a"))
    response = await sync(client, me, token)
    assert response.status_code == 403
    assert error_condition(response) == f"{D}valid-sync-token"


async def test_sync_collection_needs_depth_0(client, me):
    response = await dav(client, "REPORT", me.book, me, sync_body(), {"Depth": "1"})
    assert response.status_code == 400
    # A client of the drafts sends no sync-level: its Depth is the level, and it is answered.
    await put(client, me, "a.vcf", vcard("a"))
    legacy = sync_body().replace("<D:sync-level>1</D:sync-level>", "")
    members = multistatus(await dav(client, "REPORT", me.book, me, legacy, {"Depth": "1"}))
    assert set(members) == {me.card("a.vcf")}


async def test_reports_elsewhere_are_refused(client, me):
    response = await dav(client, "REPORT", me.home, me, sync_body(), {"Depth": "0"})
    assert response.status_code == 403
    assert error_condition(response) == f"{D}supported-report"
    unknown = await dav(client, "REPORT", me.book, me, '<D:expand-property xmlns:D="DAV:"/>')
    assert unknown.status_code == 403
    assert error_condition(unknown) == f"{D}supported-report"


async def test_a_name_deleted_and_made_again_is_reported_once_as_the_new_card(client, me):
    await put(client, me, "a.vcf", vcard("old-uid", "Old Card"))
    token = sync_token(await sync(client, me))
    assert (await dav(client, "DELETE", me.card("a.vcf"), me)).status_code == 204
    etag = await put(client, me, "a.vcf", vcard("new-uid", "New Card"))
    response = await sync(client, me, token)
    assert response.content.count(b"<D:response>") == 1
    members = multistatus(response)
    assert members[me.card("a.vcf")].status is None
    assert members[me.card("a.vcf")].text(f"{D}getetag") == etag
