"""Helpers of the CardDAV tests: an account with an app password, and multistatus reading."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from defusedxml.ElementTree import fromstring

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from httpx import Response

    from tests.conftest import TestUser

D = "{DAV:}"
C = "{urn:ietf:params:xml:ns:carddav}"
CS = "{http://calendarserver.org/ns/}"
NS = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav" xmlns:CS="http://calendarserver.org/ns/"'


def basic(email: str, password: str) -> dict[str, str]:
    """An ``Authorization: Basic`` header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


@dataclass
class DavUser:
    """A user of the tests, with an app password and the paths of their DAV resources."""

    user: TestUser
    password: str

    @property
    def auth(self) -> dict[str, str]:
        """Basic credentials: the email and the app password."""
        return basic(self.user.email, self.password)

    @property
    def principal(self) -> str:
        return f"/dav/principals/{self.user.id}/"

    @property
    def home(self) -> str:
        return f"/dav/addressbooks/{self.user.id}/"

    @property
    def book(self) -> str:
        return f"{self.home}contacts/"

    def card(self, name: str) -> str:
        return f"{self.book}{name}"


async def make_dav_user(client: Any, user: TestUser) -> DavUser:
    """Give ``user`` an app password through the API."""
    response = await client.post("/api/users/me/app-passwords/", json={"name": "phone"}, headers=user.headers)
    assert response.status_code == 201, response.text
    return DavUser(user, response.json()["password"])


async def dav(
    client: Any,
    method: str,
    path: str,
    who: DavUser,
    body: str | bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Send one DAV request as ``who``; an XML body gets its content type."""
    sent = {**who.auth, **(headers or {})}
    if isinstance(body, str):
        body = body.encode()
        sent.setdefault("Content-Type", "application/xml; charset=utf-8")
    return await client.request(method, path, content=body, headers=sent)


def propfind_body(*props: str) -> str:
    """A PROPFIND asking for ``props`` (``D:getetag``, ``C:addressbook-home-set``...)."""
    inner = "".join(f"<{prop}/>" for prop in props)
    return f'<?xml version="1.0"?><D:propfind {NS}><D:prop>{inner}</D:prop></D:propfind>'


@dataclass
class Member:
    """One ``D:response`` of a multistatus."""

    href: str
    status: str | None
    props: dict[str, Element]
    missing: dict[str, str]
    element: Element

    def text(self, name: str) -> str:
        """The text of a found property (``""`` when empty)."""
        return self.props[name].text or ""


def multistatus(response: Response) -> dict[str, Member]:
    """The members of a ``207`` answer by href (found props by Clark name, missing with their status)."""
    assert response.status_code == 207, response.text
    root = fromstring(response.content)
    assert root.tag == f"{D}multistatus"
    members = {}
    for node in root.findall(f"{D}response"):
        found: dict[str, Element] = {}
        missing: dict[str, str] = {}
        for propstat in node.findall(f"{D}propstat"):
            status = propstat.findtext(f"{D}status") or ""
            for prop in propstat.find(f"{D}prop") or []:
                if " 200 " in status:
                    found[prop.tag] = prop
                else:
                    missing[prop.tag] = status
        href = node.findtext(f"{D}href") or ""
        members[href] = Member(href, node.findtext(f"{D}status"), found, missing, node)
    return members


def sync_token(response: Response) -> str:
    """The ``D:sync-token`` of a sync-collection answer."""
    return fromstring(response.content).findtext(f"{D}sync-token") or ""


def error_condition(response: Response) -> str:
    """The Clark name of the precondition element of a ``D:error`` answer."""
    root = fromstring(response.content)
    assert root.tag == f"{D}error", response.text
    return root[0].tag


def vcard(uid: str, fn: str = "Ada Lovelace", *extra: str, version: str = "3.0") -> str:
    """A small vCard (CRLF line ends) with ``extra`` property lines."""
    given, _, family = fn.partition(" ")
    lines = [
        "BEGIN:VCARD",
        f"VERSION:{version}",
        f"UID:{uid}",
        f"FN:{fn}",
        f"N:{family};{given};;;",
        *extra,
        "END:VCARD",
    ]
    return "\r\n".join(lines) + "\r\n"


def sync_body(token: str = "", props: str = "<D:getetag/>", limit: int | None = None) -> str:
    """A sync-collection report."""
    limit_xml = f"<D:limit><D:nresults>{limit}</D:nresults></D:limit>" if limit else ""
    return (
        f'<?xml version="1.0"?><D:sync-collection {NS}><D:sync-token>{token}</D:sync-token>'
        f"<D:sync-level>1</D:sync-level>{limit_xml}<D:prop>{props}</D:prop></D:sync-collection>"
    )
