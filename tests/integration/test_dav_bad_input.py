"""Bad input on /dav/: XML bombs, DTDs, malformed XML, huge bodies. Each a 4xx, nothing changed."""

from __future__ import annotations

import pytest

from tests.dav import NS, dav, make_dav_user, multistatus, propfind_body, vcard

BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&lol9;</D:displayname></D:prop></D:propfind>"""

EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<C:addressbook-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
<D:prop><D:getetag/></D:prop><D:href>&xxe;</D:href></C:addressbook-multiget>"""


@pytest.fixture
async def me(client, user):
    return await make_dav_user(client, user)


@pytest.mark.parametrize("method", ["PROPFIND", "REPORT", "PROPPATCH"])
@pytest.mark.parametrize("body", [BOMB, EXTERNAL], ids=["bomb", "external-entity"])
async def test_dtds_and_entities_are_400(client, me, method, body):
    response = await dav(client, method, me.book, me, body, {"Depth": "0"})
    assert response.status_code == 400
    assert b"root:" not in response.content


@pytest.mark.parametrize(
    "body",
    [
        "<D:propfind xmlns:D='DAV:'><D:prop>",
        "propfind please",
        "<a:propfind xmlns:b='x'/>",
        "<D:multistatus xmlns:D='DAV:'/>",
    ],
)
async def test_malformed_or_wrong_xml_is_400(client, me, body):
    response = await dav(client, "PROPFIND", me.book, me, body, {"Depth": "0"})
    assert response.status_code == 400


async def test_report_without_body_is_400(client, me):
    assert (await dav(client, "REPORT", me.book, me, None, {"Depth": "0"})).status_code == 400


async def test_declared_huge_body_is_413_before_reading(client, me):
    body = propfind_body("D:getetag").replace("<D:getetag/>", "<D:getetag/>" + " " * (1024 * 1024))
    response = await dav(client, "PROPFIND", me.book, me, body, {"Depth": "0"})
    assert response.status_code == 413


async def test_huge_report_is_413(client, me):
    hrefs = "".join(f"<D:href>{me.card(f'card-{i:07d}.vcf')}</D:href>" for i in range(20_000))
    body = f"<C:addressbook-multiget {NS}><D:prop><D:getetag/></D:prop>{hrefs}</C:addressbook-multiget>"
    assert len(body) > 1024 * 1024
    assert (await dav(client, "REPORT", me.book, me, body)).status_code == 413


async def test_nothing_changes_after_bad_input(client, me):
    card = vcard("keep", "Kept Card").encode()
    etag = (await dav(client, "PUT", me.card("keep.vcf"), me, card, {"Content-Type": "text/vcard"})).headers[
        "etag"
    ]
    for body in (BOMB, EXTERNAL, "<broken"):
        await dav(client, "PROPPATCH", me.book, me, body)
        await dav(client, "REPORT", me.book, me, body)
    listing = multistatus(
        await dav(client, "PROPFIND", me.book, me, propfind_body("D:getetag"), {"Depth": "1"})
    )
    assert {href: m.props.get("{DAV:}getetag").text for href, m in listing.items() if href != me.book} == {
        me.card("keep.vcf"): etag
    }


async def test_nul_characters_in_a_card_do_not_500(client, me):
    text = vcard("nul", "Nul\x00Person")
    response = await dav(client, "PUT", me.card("nul.vcf"), me, text.encode(), {"Content-Type": "text/vcard"})
    assert response.status_code < 500


@pytest.mark.parametrize("name", ["%ff%fe.vcf", "%00.vcf", "a%2Fb.vcf", "%2e%2e"])
async def test_odd_card_names_are_404_not_500(client, me, name):
    for method in ("GET", "DELETE"):
        assert (await dav(client, method, me.book + name, me)).status_code == 404
