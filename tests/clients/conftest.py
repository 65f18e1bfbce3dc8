"""The address books the real clients talk to: ours at ``/dav/``, and Radicale as a reference.

``book`` is parametrized over two servers, both on 127.0.0.1:

* ``ours``: the whole application served by uvicorn (the browser tests' ``live_server``, on the
  backend under test), a confirmed user and an app password made through
  ``POST /api/users/me/app-passwords``. The server side of a test goes through the JSON API.
  The clients are given the server's root URL and find ``/dav/`` by themselves.
* ``radicale``: the reference CardDAV server, run only where a ``radicale`` executable is given
  (``RADICALE=/path/to/radicale``) or on ``PATH``; it is no dependency of the project and the
  gate does not install it, so there these are skipped. The server side goes through plain
  CardDAV requests. It shows that the harness (the clients' configs, what vdirsyncer does in a
  conflict, how khard is driven) is right on its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import vobject

from tests.browser.conftest import LiveServer, live_server  # noqa: F401 - the fixture, reused
from tests.clients.harness import executable, parse
from tests.conftest import TestUser

CLIENTS = ("vdirsyncer", "khard")


@pytest.fixture(scope="session")
def binaries() -> dict[str, str]:
    """The clients' executables; the test is skipped, saying so, when one is missing."""
    found = {name: executable(name) for name in CLIENTS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (the dev dependency group has them: uv sync)")
    return {name: path for name, path in found.items() if path}


class Book(Protocol):
    """An address book on a CardDAV server, with a way to change it on the server's side."""

    name: str
    url: str
    documented_url: str
    username: str
    password: str

    async def create(self, first_name: str, last_name: str, email: str, phone: str | None = None) -> str:
        """Make a contact on the server; its key for the other methods."""
        ...

    async def update(self, key: str, **fields: str) -> None:
        """Change JSON-view fields (``first_name``, ``last_name``, ``email``) of a contact."""
        ...

    async def delete(self, key: str) -> None:
        """Delete a contact on the server."""
        ...

    async def contacts(self) -> list[dict[str, Any]]:
        """Every contact in the JSON view: ``key``, ``first_name``, ``last_name``, ``email``."""
        ...


async def by_email(book: Book, email: str) -> dict[str, Any] | None:
    """The server's contact with ``email``, or ``None``."""
    found = [c for c in await book.contacts() if (c.get("email") or "").lower() == email.lower()]
    assert len(found) <= 1, f"{email} is on {len(found)} contacts on the server"
    return found[0] if found else None


# --------------------------------------------------------------------------- our service


class OurBook:
    """The service's address book; its server side is the JSON API."""

    name = "ours"

    def __init__(self, base_url: str, user: TestUser, password: str) -> None:
        self.url = f"{base_url}/"
        #: The server URL docs/sync.rst gives to people.
        self.documented_url = f"{base_url}/dav/"
        self.base_url = base_url
        self.username = user.email
        self.password = password
        self.user = user
        self.http = httpx.AsyncClient(base_url=base_url, headers=user.headers, timeout=30, trust_env=False)

    async def create(self, first_name: str, last_name: str, email: str, phone: str | None = None) -> str:
        body = {"first_name": first_name, "last_name": last_name, "email": email, "phone_number": phone}
        # A contact needs only a name now: the fields not given are left out.
        response = await self.http.post(
            "/api/contacts/", json={k: v for k, v in body.items() if v is not None}
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def update(self, key: str, **fields: str) -> None:
        response = await self.http.patch(f"/api/contacts/{key}", json=fields)
        assert response.status_code == 200, response.text

    async def delete(self, key: str) -> None:
        response = await self.http.delete(f"/api/contacts/{key}")
        assert response.status_code == 204, response.text

    async def contacts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            response = await self.http.get("/api/contacts/", params={"limit": 100, "offset": len(found)})
            assert response.status_code == 200, response.text
            page = response.json()
            items = page["items"] if isinstance(page, dict) else page
            found.extend({**item, "key": item["id"]} for item in items)
            if len(items) < 100:
                return found


async def make_app_password(base_url: str, user: TestUser) -> str:
    """A new app password of ``user``, made through the API as a person would."""
    async with httpx.AsyncClient(base_url=base_url, headers=user.headers, trust_env=False) as http:
        response = await http.post("/api/users/me/app-passwords", json={"name": "vdirsyncer"})
    assert response.status_code == 201, response.text
    return response.json()["password"]


@pytest.fixture
async def our_book(
    live_server: LiveServer,  # noqa: F811 - the fixture imported above
    user_factory: Callable[..., Awaitable[TestUser]],
) -> AsyncIterator[OurBook]:
    """A confirmed user's book on the live service, with an app password for the clients."""
    user = await user_factory()
    password = await make_app_password(live_server.url, user)
    book = OurBook(live_server.url, user, password)
    yield book
    await book.http.aclose()


# --------------------------------------------------------------------------- Radicale


def radicale_executable() -> str | None:
    """Radicale's executable when asked for (``$RADICALE``) or on ``PATH``; it is no dependency of ours."""
    given = os.environ.get("RADICALE")
    if given:
        assert Path(given).is_file(), f"RADICALE={given} is not a file"
        return given
    return shutil.which("radicale")


class RadicaleBook:
    """A Radicale address book; its server side is plain CardDAV (PUT, DELETE, PROPFIND, GET)."""

    name = "radicale"

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.url = f"{base_url}/"
        self.documented_url = self.url
        self.username = username
        self.password = password
        self.collection = f"/{username}/contacts/"
        self.http = httpx.AsyncClient(
            base_url=base_url, auth=(username, password), timeout=30, trust_env=False
        )

    async def create(self, first_name: str, last_name: str, email: str, phone: str | None = None) -> str:
        uid = str(uuid.uuid4())
        card = vobject.vCard()
        card.add("uid").value = uid
        card.add("n").value = vobject.vcard.Name(family=last_name, given=first_name)
        card.add("fn").value = f"{first_name} {last_name}"
        card.add("email").value = email
        if phone:
            card.add("tel").value = phone
        response = await self.http.put(
            f"{self.collection}{uid}.vcf",
            content=card.serialize(),
            headers={"Content-Type": "text/vcard", "If-None-Match": "*"},
        )
        assert response.status_code == 201, response.text
        return f"{self.collection}{uid}.vcf"

    async def update(self, key: str, **fields: str) -> None:
        response = await self.http.get(key)
        assert response.status_code == 200, response.text
        card = parse(response.text)
        name = card.n.value
        name.given = fields.get("first_name", name.given)
        name.family = fields.get("last_name", name.family)
        card.fn.value = f"{name.given} {name.family}"
        if "email" in fields:
            card.email.value = fields["email"]
        put = await self.http.put(
            key,
            content=card.serialize(),
            headers={"Content-Type": "text/vcard", "If-Match": response.headers["ETag"]},
        )
        assert put.status_code in (201, 204), put.text

    async def delete(self, key: str) -> None:
        response = await self.http.delete(key)
        assert response.status_code in (200, 204), response.text

    async def contacts(self) -> list[dict[str, Any]]:
        body = '<propfind xmlns="DAV:"><prop><getetag/></prop></propfind>'
        listing = await self.http.request("PROPFIND", self.collection, headers={"Depth": "1"}, content=body)
        assert listing.status_code == 207, listing.text
        found = []
        for href in _hrefs(listing.text):
            if not href.endswith(".vcf"):
                continue
            response = await self.http.get(href)
            assert response.status_code == 200, response.text
            card = parse(response.text)
            emails = card.contents.get("email", [])
            found.append(
                {
                    "key": href,
                    "first_name": card.n.value.given,
                    "last_name": card.n.value.family,
                    "email": emails[0].value if emails else None,
                }
            )
        return found


def _hrefs(multistatus: str) -> list[str]:
    from xml.etree import ElementTree

    root = ElementTree.fromstring(multistatus)  # noqa: S314 - the local reference server's answer
    return [element.text or "" for element in root.iter("{DAV:}href")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def radicale(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Radicale on 127.0.0.1 with one user (htpasswd, plain): ``(url, user name, password)``."""
    binary = radicale_executable()
    if binary is None:
        pytest.skip(
            "the reference server runs on request: python3 -m venv /tmp/radicale-venv && "
            "/tmp/radicale-venv/bin/pip install radicale, then RADICALE=/tmp/radicale-venv/bin/radicale"
        )
    root = tmp_path / "radicale"
    root.mkdir()
    username, password = "alice@example.com", "radicale-app-password"
    (root / "users").write_text(f"{username}:{password}\n", encoding="utf-8")
    port = _free_port()
    (root / "config").write_text(
        f"[server]\nhosts = 127.0.0.1:{port}\n"
        f"[auth]\ntype = htpasswd\nhtpasswd_filename = {root / 'users'}\nhtpasswd_encryption = plain\n"
        f"[storage]\nfilesystem_folder = {root / 'collections'}\n"
        "[logging]\nlevel = warning\n",
        encoding="utf-8",
    )
    log = (root / "radicale.log").open("w")
    process = subprocess.Popen([binary, "--config", str(root / "config")], stdout=log, stderr=log)  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "radicale.log").read_text()) from None
                time.sleep(0.1)
        mkcol = (
            '<?xml version="1.0"?><mkcol xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><set><prop>'
            "<resourcetype><collection/><CR:addressbook/></resourcetype><displayname>Contacts</displayname>"
            "</prop></set></mkcol>"
        )
        made = httpx.request(
            "MKCOL",
            f"{url}/{username}/contacts/",
            content=mkcol,
            auth=(username, password),
            headers={"Content-Type": "application/xml"},
            trust_env=False,
        )
        assert made.status_code == 201, made.text
        yield url, username, password
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


@pytest.fixture
async def radicale_book(radicale: tuple[str, str, str]) -> AsyncIterator[RadicaleBook]:
    """The Radicale user's address book."""
    book = RadicaleBook(*radicale)
    yield book
    await book.http.aclose()


@pytest.fixture(params=["ours", "radicale"])
def book(request: pytest.FixtureRequest) -> Book:
    """The address book of the server under test (ours, or the reference Radicale)."""
    return request.getfixturevalue({"ours": "our_book", "radicale": "radicale_book"}[request.param])
