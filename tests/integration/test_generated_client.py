"""A client generated from the served document works end to end (issue 20).

``openapi-python-client`` generates a package from ``/schema/openapi.json`` (any warning
fails the test), then a short flow runs through that package against the app.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

PACKAGE = "contacts_api_client"
BASE_URL = "http://testserver.local"


@pytest.fixture
async def auth_client(make_client, smtp_server):
    """An app that mails to the test SMTP sink."""
    async with make_client(**smtp_server.settings) as client:
        yield client


def generate(document: bytes, where: Path) -> Any:
    """Generate the client package into ``where`` and import it."""
    spec = where / "openapi.json"
    spec.write_bytes(document)
    config = where / "config.yaml"
    config.write_text("post_hooks: []\n")  # no ruff run on the output: the test only imports it
    generator = Path(sys.executable).parent / "openapi-python-client"
    result = subprocess.run(  # noqa: S603 - our own tool on our own files
        [
            *(str(generator), "generate", "--path", str(spec), "--output-path", str(where / PACKAGE)),
            *("--meta", "none", "--config", str(config)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A clean run prints only "Generating <path>": anything else is a warning or an error.
    said = [line for line in output.splitlines() if line.strip() and not line.startswith("Generating ")]
    assert said == [], output
    sys.path.insert(0, str(where))
    try:
        return importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))


@pytest.fixture
def unload():
    yield
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
        del sys.modules[name]


async def test_a_generated_client_runs_the_main_flow(auth_client, smtp_server, tmp_path, unload):
    generated = generate((await auth_client.get("/schema/openapi.json")).content, tmp_path)
    m = importlib.import_module(f"{PACKAGE}.models")
    auth = importlib.import_module(f"{PACKAGE}.api.auth")
    contacts = importlib.import_module(f"{PACKAGE}.api.contacts")
    users = importlib.import_module(f"{PACKAGE}.api.users")
    for module in ("register", "confirm_email", "login"):
        importlib.import_module(f"{auth.__name__}.{module}")
    for module in ("create_contact", "list_contacts", "get_contact", "update_contact", "export_contacts"):
        importlib.import_module(f"{contacts.__name__}.{module}")
    importlib.import_module(f"{contacts.__name__}.delete_contact")
    importlib.import_module(f"{users.__name__}.get_me")
    importlib.import_module(f"{users.__name__}.change_password")
    # The generated client's own httpx client, sending its requests into the test app (which
    # runs on the test client's loop, where its pooled connections live).
    httpx_args = {"transport": auth_client._transport}
    anonymous = generated.Client(base_url=BASE_URL, httpx_args=httpx_args)

    registered = await auth.register.asyncio(
        client=anonymous, body=m.Register(username="ada", email="ada@example.com", password="correct horse 1")
    )
    assert isinstance(registered, m.UserRead)
    assert registered.confirmed is False
    (mail,) = await smtp_server.sink.wait_for(1)
    (link,) = smtp_server.sink.links(mail)
    confirmed = await auth.confirm_email.asyncio(token=link.rsplit("/", 1)[1], client=anonymous)
    assert isinstance(confirmed, m.Message)

    tokens = await auth.login.asyncio(
        client=anonymous, body=m.LoginForm(username="ada", password="correct horse 1")
    )
    assert isinstance(tokens, m.Tokens)
    client = generated.AuthenticatedClient(
        base_url=BASE_URL, token=tokens.access_token, httpx_args=httpx_args
    )
    me = await users.get_me.asyncio(client=client)
    assert isinstance(me, m.UserRead)
    assert me.confirmed is True

    new = m.ContactCreate(
        first_name="Grace", last_name="Hopper", email="grace@example.com", phone_number="+1 212 555 0100"
    )
    created = await contacts.create_contact.asyncio_detailed(client=client, body=new)
    assert created.status_code == 201
    assert isinstance(created.parsed, m.Contact)
    assert isinstance(created.parsed.id, UUID)
    contact_id = created.parsed.id

    page = await contacts.list_contacts.asyncio(client=client, q="grace", limit=10)
    assert isinstance(page, m.ContactPage)
    assert [c.id for c in page.items] == [contact_id]

    fetched = await contacts.get_contact.asyncio_detailed(contact_id, client=client)
    assert isinstance(fetched.parsed, m.Contact)
    etag = fetched.headers["ETag"]
    patched = await contacts.update_contact.asyncio_detailed(
        contact_id, client=client, body=m.ContactUpdate(additional_data="COBOL"), if_match=etag
    )
    assert isinstance(patched.parsed, m.Contact)
    assert patched.parsed.additional_data == "COBOL"
    stale = await contacts.update_contact.asyncio_detailed(
        contact_id, client=client, body=m.ContactUpdate(additional_data="Navy"), if_match=etag
    )
    assert stale.status_code == 412
    assert isinstance(stale.parsed, m.ErrorBody)

    exported = await contacts.export_contacts.asyncio(client=client)
    assert isinstance(exported, str)
    assert "FN:Grace Hopper" in exported

    duplicate = await contacts.create_contact.asyncio_detailed(client=client, body=new)
    assert duplicate.status_code == 409
    assert isinstance(duplicate.parsed, m.ErrorBody)
    assert duplicate.parsed.status_code == 409

    invalid = await contacts.create_contact.asyncio_detailed(
        client=client,
        body=m.ContactCreate(
            first_name="", last_name="X", email="x@example.com", phone_number="+1 212 555 0101"
        ),
    )
    assert isinstance(invalid.parsed, m.ErrorBody)
    (problem,) = invalid.parsed.extra
    assert isinstance(problem, m.ValidationError)
    assert (problem.key, problem.source) == ("first_name", "body")

    deleted = await contacts.delete_contact.asyncio_detailed(contact_id, client=client)
    assert deleted.status_code == 204
    gone = await contacts.get_contact.asyncio_detailed(contact_id, client=client)
    assert gone.status_code == 404
    assert isinstance(gone.parsed, m.ErrorBody)

    changed = await users.change_password.asyncio_detailed(
        client=client,
        body=m.PasswordChange(current_password="correct horse 1", new_password="battery staple 2"),
    )
    assert changed.status_code == 204
    assert changed.parsed is None
