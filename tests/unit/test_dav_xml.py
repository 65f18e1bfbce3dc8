"""The WebDAV XML layer: safe parsing of request bodies and the multistatus it writes."""

from __future__ import annotations

import pytest
from defusedxml.ElementTree import fromstring

from app.dav import xml
from app.dav.query import card_matches

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&lol2;</D:displayname></D:prop></D:propfind>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>
<D:propfind xmlns:D="DAV:"><D:prop>&ext;</D:prop></D:propfind>"""

DTD_ONLY = b"""<?xml version="1.0"?><!DOCTYPE propfind><D:propfind xmlns:D="DAV:"/>"""


@pytest.mark.parametrize("body", [BOMB, EXTERNAL, DTD_ONLY])
def test_dtds_and_entities_are_refused(body: bytes) -> None:
    with pytest.raises(xml.DavError) as caught:
        xml.parse(body)
    assert caught.value.status_code == 400
    assert "DTD" in caught.value.detail


@pytest.mark.parametrize("body", [b"<D:propfind xmlns:D='DAV:'>", b"not xml", b"<a><b></a>", b"\xff\xfe<"])
def test_malformed_xml_is_400(body: bytes) -> None:
    with pytest.raises(xml.DavError) as caught:
        xml.parse(body)
    assert caught.value.status_code == 400


def test_empty_propfind_is_allprop() -> None:
    assert xml.parse(b"  \n") is None
    assert xml.parse_propfind(None).kind == "allprop"


def test_propfind_lists_names_and_address_data_version() -> None:
    root = xml.parse(
        b"""<propfind xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav" xmlns:X="urn:x">
        <prop><getetag/><C:address-data content-type="text/vcard" version="4.0"/><X:odd/></prop></propfind>"""
    )
    request = xml.parse_propfind(root)
    assert request.kind == "prop"
    assert request.names == [(xml.DAV, "getetag"), xml.ADDRESS_DATA, ("urn:x", "odd")]
    assert request.address_data_version == "4.0"


def test_unsupported_address_data_is_403() -> None:
    root = xml.parse(
        b"""<C:addressbook-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
        <D:prop><C:address-data content-type="application/vcard+json"/></D:prop></C:addressbook-multiget>"""
    )
    with pytest.raises(xml.DavError) as caught:
        xml.parse_report(root)
    assert caught.value.status_code == 403
    assert caught.value.condition == "<C:supported-address-data/>"


def test_propfind_root_must_be_propfind() -> None:
    with pytest.raises(xml.DavError):
        xml.parse_propfind(xml.parse(b"<D:other xmlns:D='DAV:'/>"))


def test_query_report() -> None:
    root = xml.parse(
        b"""<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
        <D:prop><D:getetag/></D:prop>
        <C:filter test="allof">
          <C:prop-filter name="fn" test="allof">
            <C:text-match match-type="starts-with" collation="i;octet">Ada</C:text-match>
            <C:text-match negate-condition="yes">x</C:text-match>
          </C:prop-filter>
          <C:prop-filter name="EMAIL"><C:is-not-defined/></C:prop-filter>
        </C:filter>
        <C:limit><C:nresults>5</C:nresults></C:limit>
        </C:addressbook-query>"""
    )
    query = xml.parse_report(root)
    assert isinstance(query, xml.Query)
    assert query.test == "allof"
    assert query.limit == 5
    fn, email = query.filters
    assert fn.name == "FN"
    assert fn.test == "allof"
    assert [(m.text, m.match_type, m.collation, m.negate) for m in fn.text_matches] == [
        ("Ada", "starts-with", "i;octet", False),
        ("x", "contains", "i;unicode-casemap", True),
    ]
    assert email.is_not_defined


def test_query_limit() -> None:
    root = xml.parse(
        b"""<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
        <C:limit><D:nresults>2</D:nresults></C:limit></C:addressbook-query>"""
    )
    query = xml.parse_report(root)
    assert isinstance(query, xml.Query)
    assert query.limit == 2


@pytest.mark.parametrize(
    ("attribute", "status"),
    [('match-type="sounds-like"', 400), ('collation="i;klingon"', 403), ('negate-condition="maybe"', 400)],
)
def test_bad_text_match(attribute: str, status: int) -> None:
    root = xml.parse(
        f"""<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
        <C:filter><C:prop-filter name="FN"><C:text-match {attribute}>a</C:text-match></C:prop-filter></C:filter>
        </C:addressbook-query>""".encode()
    )
    with pytest.raises(xml.DavError) as caught:
        xml.parse_report(root)
    assert caught.value.status_code == status


def test_sync_collection_report() -> None:
    root = xml.parse(
        b"""<D:sync-collection xmlns:D="DAV:"><D:sync-token/><D:sync-level>1</D:sync-level>
        <D:prop><D:getetag/></D:prop></D:sync-collection>"""
    )
    report = xml.parse_report(root)
    assert isinstance(report, xml.SyncCollection)
    assert report.token == ""
    assert report.props.names == [(xml.DAV, "getetag")]


def test_sync_collection_level() -> None:
    legacy = xml.parse_report(
        xml.parse(b"<D:sync-collection xmlns:D='DAV:'><D:sync-token/></D:sync-collection>")
    )
    assert isinstance(legacy, xml.SyncCollection)
    assert legacy.level == ""
    with pytest.raises(xml.DavError):
        xml.parse_report(
            xml.parse(
                b"<D:sync-collection xmlns:D='DAV:'><D:sync-token/><D:sync-level>2</D:sync-level></D:sync-collection>"
            )
        )


def test_unknown_report_is_403_supported_report() -> None:
    with pytest.raises(xml.DavError) as caught:
        xml.parse_report(xml.parse(b"<D:expand-property xmlns:D='DAV:'/>"))
    assert caught.value.status_code == 403
    assert caught.value.condition == "<D:supported-report/>"


def test_proppatch_names() -> None:
    root = xml.parse(
        b"""<D:propertyupdate xmlns:D="DAV:" xmlns:A="http://apple.com/ns/ical/">
        <D:set><D:prop><D:displayname>x</D:displayname><A:calendar-color>#f00</A:calendar-color></D:prop></D:set>
        <D:remove><D:prop><D:displayname/></D:prop></D:remove></D:propertyupdate>"""
    )
    assert xml.parse_proppatch(root) == [
        (xml.DAV, "displayname"),
        ("http://apple.com/ns/ical/", "calendar-color"),
    ]


def test_multistatus_is_well_formed_and_escaped() -> None:
    body = (
        xml.multistatus_open()
        + xml.response(
            "/dav/a%20b/",
            [((xml.DAV, "displayname"), xml.text("<Ada & co>")), ((xml.CALENDARSERVER, "getctag"), "1")],
            [("urn:x", "odd")],
        )
        + xml.status_response("/dav/gone.vcf", 404)
        + xml.multistatus_close("http://x/sync/1")
    )
    root = fromstring(body)
    assert root.tag == "{DAV:}multistatus"
    ok, missing = root.findall("{DAV:}response/{DAV:}propstat")
    assert ok.find("{DAV:}prop/{DAV:}displayname").text == "<Ada & co>"
    assert ok.find("{DAV:}status").text == "HTTP/1.1 200 OK"
    assert missing.find("{DAV:}prop/{urn:x}odd") is not None
    assert missing.find("{DAV:}status").text == "HTTP/1.1 404 Not Found"
    assert root.find("{DAV:}sync-token").text == "http://x/sync/1"


def test_error_body() -> None:
    root = fromstring(xml.error_body(xml.element((xml.CARDDAV, "no-uid-conflict"), xml.href("/dav/x.vcf"))))
    assert root.find("{urn:ietf:params:xml:ns:carddav}no-uid-conflict/{DAV:}href").text == "/dav/x.vcf"


CARD = """BEGIN:VCARD
VERSION:3.0
UID:1
FN:Ada Lovelace
N:Lovelace;Ada;;;
EMAIL;TYPE=work:ada@work.example
EMAIL;TYPE=home:ada@home.example
TEL:+44 20 1234
END:VCARD
"""


def _query(filters: str, test: str = "anyof") -> xml.Query:
    report = xml.parse_report(
        xml.parse(
            f"""<C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
            <C:filter test="{test}">{filters}</C:filter></C:addressbook-query>""".encode()
        )
    )
    assert isinstance(report, xml.Query)
    return report


@pytest.mark.parametrize(
    ("filters", "test", "expected"),
    [
        ('<C:prop-filter name="FN"><C:text-match>LOVE</C:text-match></C:prop-filter>', "anyof", True),
        (
            '<C:prop-filter name="FN"><C:text-match collation="i;octet">LOVE</C:text-match></C:prop-filter>',
            "anyof",
            False,
        ),
        (
            '<C:prop-filter name="FN"><C:text-match match-type="equals">ada lovelace</C:text-match></C:prop-filter>',
            "anyof",
            True,
        ),
        (
            '<C:prop-filter name="FN"><C:text-match match-type="equals">ada</C:text-match></C:prop-filter>',
            "anyof",
            False,
        ),
        (
            '<C:prop-filter name="N"><C:text-match match-type="starts-with">lovelace;ada</C:text-match></C:prop-filter>',
            "anyof",
            True,
        ),
        (
            '<C:prop-filter name="EMAIL"><C:text-match match-type="ends-with">@home.example</C:text-match></C:prop-filter>',
            "anyof",
            True,
        ),
        (
            '<C:prop-filter name="EMAIL"><C:text-match negate-condition="yes">ada</C:text-match></C:prop-filter>',
            "anyof",
            False,
        ),
        ('<C:prop-filter name="TEL"><C:text-match>1234</C:text-match></C:prop-filter>', "anyof", True),
        ('<C:prop-filter name="NICKNAME"><C:is-not-defined/></C:prop-filter>', "anyof", True),
        ('<C:prop-filter name="NICKNAME"/>', "anyof", False),
        ('<C:prop-filter name="TEL"/>', "anyof", True),
        ('<C:prop-filter name="TEL"/><C:prop-filter name="NICKNAME"/>', "anyof", True),
        ('<C:prop-filter name="TEL"/><C:prop-filter name="NICKNAME"/>', "allof", False),
        (
            '<C:prop-filter name="EMAIL" test="allof"><C:text-match>work</C:text-match>'
            "<C:text-match>home</C:text-match></C:prop-filter>",
            "anyof",
            False,  # no single EMAIL holds both
        ),
    ],
)
def test_card_matches(filters: str, test: str, expected: bool) -> None:
    assert card_matches(CARD, _query(filters, test)) is expected
