"""vdirsyncer keeps a local vdir and the server's address book in step, both ways.

Each test on ``book`` runs against our service (server side: the JSON API) and against Radicale
(the reference; server side: plain CardDAV), with the same client config and the same
assertions; the credentials test is about our app passwords alone.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.clients.conftest import Book, OurBook, by_email
from tests.clients.harness import (
    Vdirsyncer,
    card_with_email,
    family_name,
    given_name,
    local_cards,
    write_atomically,
)


def _email(word: str) -> str:
    return f"{word}-{uuid.uuid4().hex[:6]}@example.com"


async def _synced(binaries: dict[str, str], book: Book, root: Path, conflict: str = "a wins") -> Vdirsyncer:
    sync = Vdirsyncer(
        binaries["vdirsyncer"],
        root,
        url=book.url,
        username=book.username,
        password=book.password,
        conflict=conflict,
    )
    discovered = await sync.discover()
    assert "contacts" in discovered.stdout + discovered.stderr, discovered.describe()
    await sync.sync()
    return sync


@pytest.mark.parametrize("config", ["server root", "as documented"])
async def test_discover_and_first_sync_bring_the_whole_book(
    binaries: dict[str, str], book: Book, tmp_path: Path, config: str
) -> None:
    """From the server's root (found through /.well-known/carddav), or as docs/sync.rst says."""
    ada, alan = _email("ada"), _email("alan")
    await book.create("Ada", "Lovelace", ada, "+44 20 7946 0000")
    await book.create("Alan", "Turing", alan)

    if config == "server root":
        sync = await _synced(binaries, book, tmp_path)
    else:
        sync = Vdirsyncer(
            binaries["vdirsyncer"],
            tmp_path,
            url=book.documented_url,
            username=book.username,
            password=book.password,
            conflict="b wins",
            collections='["from a", "from b"]',
        )
        await sync.discover()
        await sync.sync()

    folder = sync.collection()
    cards = local_cards(folder)
    assert len(cards) == 2, cards
    found = card_with_email(folder, ada)
    assert found is not None
    _, card = found
    assert (given_name(card), family_name(card)) == ("Ada", "Lovelace")
    assert str(card.fn.value) == "Ada Lovelace"
    assert any("7946" in tel.value for tel in card.contents.get("tel", []))
    assert card_with_email(folder, alan) is not None
    # A second sync with nothing changed anywhere changes nothing.
    again = await sync.sync()
    assert "Copying" not in again.stdout + again.stderr, again.describe()
    assert local_cards(folder).keys() == cards.keys()


async def test_server_side_create_edit_delete_reach_the_vdir(
    binaries: dict[str, str], book: Book, tmp_path: Path
) -> None:
    keeper = _email("keeper")
    await book.create("Kept", "Always", keeper)
    sync = await _synced(binaries, book, tmp_path)
    folder = sync.collection()
    assert len(local_cards(folder)) == 1

    grace = _email("grace")
    key = await book.create("Grace", "Hopper", grace)
    await sync.sync()
    found = card_with_email(folder, grace)
    assert found is not None, local_cards(folder)
    assert given_name(found[1]) == "Grace"

    await book.update(key, first_name="Amazing", last_name="Grace")
    await sync.sync()
    found = card_with_email(folder, grace)
    assert found is not None
    assert (given_name(found[1]), family_name(found[1])) == ("Amazing", "Grace")

    await book.delete(key)
    await sync.sync()
    assert card_with_email(folder, grace) is None
    assert card_with_email(folder, keeper) is not None
    assert len(local_cards(folder)) == 1


async def test_local_create_edit_delete_reach_the_server(
    binaries: dict[str, str], book: Book, tmp_path: Path
) -> None:
    # One card stays: vdirsyncer refuses to sync a side that was emptied completely.
    keeper = _email("keeper")
    await book.create("Kept", "Always", keeper)
    sync = await _synced(binaries, book, tmp_path)
    folder = sync.collection()
    email = _email("local")
    uid = f"made-locally-{uuid.uuid4().hex}"
    path = folder / f"{uid}.vcf"
    path.write_text(
        "BEGIN:VCARD\r\nVERSION:3.0\r\n"
        f"UID:{uid}\r\n"
        "FN:Katherine Johnson\r\nN:Johnson;Katherine;;;\r\n"
        f"EMAIL;TYPE=INTERNET:{email}\r\n"
        "TEL;TYPE=CELL:+1 757 555 0100\r\n"
        "END:VCARD\r\n",
        encoding="utf-8",
        newline="",
    )

    await sync.sync()
    contact = await by_email(book, email)
    assert contact is not None, await book.contacts()
    assert (contact["first_name"], contact["last_name"]) == ("Katherine", "Johnson")

    write_atomically(path, path.read_text(encoding="utf-8").replace("Katherine", "Kathy"))
    await sync.sync()
    contact = await by_email(book, email)
    assert contact is not None
    assert contact["first_name"] == "Kathy"

    path.unlink()
    await sync.sync()
    assert await by_email(book, email) is None
    assert [c["email"] for c in await book.contacts()] == [keeper]


@pytest.mark.parametrize("winner", ["a wins", "b wins"])
async def test_a_conflict_is_settled_by_conflict_resolution_and_no_card_is_lost(
    binaries: dict[str, str], book: Book, tmp_path: Path, winner: str
) -> None:
    """Both sides edit the same card between two syncs: the side named wins on both sides.

    vdirsyncer's ``conflict_resolution = "a wins"`` (``a`` is the local vdir here) uploads the
    local card over the server's; ``"b wins"`` writes the server's over the local file. The
    losing edit is gone (that is what the setting asks for); no card is lost or duplicated.
    """
    other = _email("other")
    await book.create("Other", "Person", other)
    email = _email("conflict")
    key = await book.create("Rosalind", "Franklin", email)
    sync = await _synced(binaries, book, tmp_path, conflict=winner)
    folder = sync.collection()
    found = card_with_email(folder, email)
    assert found is not None
    path, _ = found

    write_atomically(path, path.read_text(encoding="utf-8").replace("Rosalind", "Localedit"))
    await book.update(key, first_name="Serveredit")
    await sync.sync()

    expected = "Localedit" if winner == "a wins" else "Serveredit"
    found = card_with_email(folder, email)
    assert found is not None
    assert given_name(found[1]) == expected
    contact = await by_email(book, email)
    assert contact is not None
    assert contact["first_name"] == expected
    # Nothing lost, nothing doubled, on either side.
    assert len(local_cards(folder)) == 2
    assert sorted((c["email"] or "").lower() for c in await book.contacts()) == sorted([email, other])
    assert card_with_email(folder, other) is not None
    # And the next sync finds the two sides equal.
    again = await sync.sync()
    assert "Copying" not in again.stdout + again.stderr, again.describe()


async def test_a_revoked_app_password_or_the_account_password_gets_vdirsyncer_nowhere(
    binaries: dict[str, str], our_book: OurBook, tmp_path: Path
) -> None:
    kept = _email("kept")
    await our_book.create("Kept", "Always", kept)
    sync = await _synced(binaries, our_book, tmp_path / "app-password")
    folder = sync.collection()
    before = {path.name: path.read_bytes() for path in folder.glob("*.vcf")}
    assert len(before) == 1

    listed = await our_book.http.get("/api/users/me/app-passwords")
    assert listed.status_code == 200, listed.text
    (entry,) = listed.json()
    revoked = await our_book.http.delete(f"/api/users/me/app-passwords/{entry['id']}")
    assert revoked.status_code == 204, revoked.text
    await our_book.create("Late", "Comer", _email("late"))

    refused = await sync.run("sync")
    assert refused.returncode != 0, refused.describe()
    assert "401" in refused.stdout + refused.stderr, refused.describe()
    assert {path.name: path.read_bytes() for path in folder.glob("*.vcf")} == before

    # The account's own password is no CardDAV credential either.
    account = Vdirsyncer(
        binaries["vdirsyncer"],
        tmp_path / "account-password",
        url=our_book.url,
        username=our_book.username,
        password=our_book.user.password,
    )
    refused = await account.run("discover", "book", stdin="y\n" * 8)
    assert refused.returncode != 0, refused.describe()
    assert "401" in refused.stdout + refused.stderr, refused.describe()
    assert not any(account.vdir.iterdir())
