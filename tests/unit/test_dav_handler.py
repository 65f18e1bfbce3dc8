"""Pure helpers of the CardDAV handler: paths, sync tokens, version negotiation, ETag lists."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from app.dav.handler import (
    Target,
    _member_name,
    etag_matches,
    parse_sync_token,
    requested_version,
    resolve,
    sync_token_uri,
)
from app.dav.xml import DavError

ME = UUID("01a24e56-ff01-73a6-a78e-d21fa6a844ce")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/dav", Target("root", ME)),
        ("/dav/", Target("root", ME)),
        (f"/dav/principals/{ME}/", Target("principal", ME)),
        (f"/dav/principals/{ME}", Target("principal", ME)),
        (f"/dav/addressbooks/{ME}/", Target("home", ME)),
        (f"/dav/addressbooks/{ME}/contacts/", Target("book", ME)),
        (f"/dav/addressbooks/{ME}/contacts/a b.vcf", Target("card", ME, "a b.vcf")),
        (f"/dav/addressbooks/{ME}/contacts/a.vcf/", None),
        (f"/dav/addressbooks/{ME}/contacts/x/y.vcf", None),
        (f"/dav/addressbooks/{ME}/other/", None),
        (f"/dav/addressbooks/{uuid4()}/contacts/", None),
        (f"/dav/principals/{uuid4()}/", None),
        ("/dav/principals/", None),
        (f"/dav/addressbooks/{ME}/contacts/..", None),
        (f"/dav/addressbooks/{ME}/contacts/a\x00.vcf", None),
    ],
)
def test_resolve(path: str, expected: Target | None) -> None:
    assert resolve(path, ME) == expected


def test_card_paths_are_percent_encoded() -> None:
    assert Target("card", ME, "a b/c.vcf").path == f"/dav/addressbooks/{ME}/contacts/a%20b%2Fc.vcf"


def test_sync_tokens() -> None:
    assert parse_sync_token("") is None
    assert parse_sync_token(sync_token_uri(42)) == 42
    for bad in (
        "42",
        "urn:x-contacts:sync:",
        "urn:x-contacts:sync:4x",
        "urn:x-contacts:sync:" + "9" * 30,
        "urn:x-contacts:sync:٣",
    ):
        with pytest.raises(DavError) as caught:
            parse_sync_token(bad)
        assert caught.value.status_code == 403


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        (None, "3.0"),
        ("*/*", "3.0"),
        ("text/vcard", "3.0"),
        ("text/vcard; version=4.0", "4.0"),
        ('text/vcard;q=0.9, text/vcard; version="4.0"', "4.0"),
        ("text/vcard; version=2.1", "3.0"),
        ("application/json; version=4.0", "3.0"),
    ],
)
def test_requested_version(accept: str | None, version: str) -> None:
    assert requested_version(accept) == version


def test_etag_lists() -> None:
    assert etag_matches('"v1", "v2"', '"v2"')
    assert etag_matches("*", '"v9"')
    assert etag_matches('W/"v1"', '"v1"')  # If-None-Match compares weakly
    assert not etag_matches('"v1"', '"v2"')
    assert not etag_matches(None, '"v1"')


def test_member_names_of_hrefs() -> None:
    book = f"/dav/addressbooks/{ME}/contacts/"
    assert _member_name(f"{book}a%20b.vcf", book) == "a b.vcf"
    assert _member_name(f"https://host.example{book}a.vcf", book) == "a.vcf"
    assert _member_name(f"/dav/addressbooks/{uuid4()}/contacts/a.vcf", book) is None
    assert _member_name(f"{book}%ff.vcf", book) is None
    assert _member_name(f"{book}sub/a.vcf", book) is None
