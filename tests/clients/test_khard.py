"""khard reads the vdir vdirsyncer keeps, and its edits sync back to the server."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from tests.clients.conftest import Book, by_email
from tests.clients.harness import Khard, Vdirsyncer, card_with_email


def _email(word: str) -> str:
    return f"{word}-{uuid.uuid4().hex[:6]}@example.com"


async def _pair(binaries: dict[str, str], book: Book, root: Path) -> Vdirsyncer:
    sync = Vdirsyncer(
        binaries["vdirsyncer"], root, url=book.url, username=book.username, password=book.password
    )
    await sync.discover()
    await sync.sync()
    return sync


def _set(yaml: str, key: str, value: str) -> str:
    """The khard YAML with the top-level ``key`` set to ``value``."""
    changed, count = re.subn(rf"(?m)^{re.escape(key)}\s*:.*$", f"{key}: {value}", yaml)
    assert count == 1, f"no single {key!r} line in:\n{yaml}"
    return changed


async def test_khard_lists_shows_and_searches_the_synced_book(
    binaries: dict[str, str], book: Book, tmp_path: Path
) -> None:
    ada, alan = _email("ada"), _email("alan")
    await book.create("Ada", "Lovelace", ada, "+44 20 7946 0000")
    await book.create("Alan", "Turing", alan)
    sync = await _pair(binaries, book, tmp_path)
    khard = Khard(binaries["khard"], tmp_path, sync.collection())

    everyone = await khard.uids()
    assert sorted(everyone.values()) == ["Ada Lovelace", "Alan Turing"]

    assert list((await khard.uids("Lovelace")).values()) == ["Ada Lovelace"]
    assert list((await khard.uids(alan)).values()) == ["Alan Turing"]
    assert await khard.uids("Nobody-Like-This") == {}

    ada_uid = next(uid for uid, name in everyone.items() if name == "Ada Lovelace")
    shown = (await khard("show", f"uid:{ada_uid}")).check().stdout
    assert "Ada Lovelace" in shown
    assert ada in shown
    assert "7946" in shown

    emails = (await khard("email", "--parsable", "Turing")).check().stdout
    assert alan in emails
    assert ada not in emails


async def test_a_khard_edit_and_a_khard_new_contact_sync_back(
    binaries: dict[str, str], book: Book, tmp_path: Path
) -> None:
    ada = _email("ada")
    await book.create("Ada", "Lovelace", ada, "+44 20 7946 0000")
    sync = await _pair(binaries, book, tmp_path)
    khard = Khard(binaries["khard"], tmp_path, sync.collection())
    (uid,) = (await khard.uids("Lovelace")).keys()

    yaml = (await khard("show", "--format", "yaml", f"uid:{uid}")).check().stdout
    yaml = _set(yaml, "Last name", "King")
    yaml = _set(yaml, "Organisation", "Analytical Engines Ltd")
    template = tmp_path / "ada.yaml"
    template.write_text(yaml, encoding="utf-8")
    edited = await khard.edit(uid, template)
    assert "Nothing changed" not in edited.stdout, edited.describe()
    found = card_with_email(sync.collection(), ada)
    assert found is not None
    assert str(found[1].n.value.family) == "King"

    grace = _email("grace")
    new = f"First name : Grace\nLast name : Hopper\nEmail :\n    work : {grace}\n"
    (tmp_path / "grace.yaml").write_text(new, encoding="utf-8")
    (await khard("new", "--addressbook", "book", "--input-file", str(tmp_path / "grace.yaml"))).check()

    await sync.sync()

    contact = await by_email(book, ada)
    assert contact is not None
    assert (contact["first_name"], contact["last_name"]) == ("Ada", "King")
    contact = await by_email(book, grace)
    assert contact is not None, await book.contacts()
    assert (contact["first_name"], contact["last_name"]) == ("Grace", "Hopper")

    # A fresh client sees what khard wrote, the organisation the JSON view has no field for too.
    fresh = await _pair(binaries, book, tmp_path / "fresh")
    found = card_with_email(fresh.collection(), ada)
    assert found is not None
    assert str(found[1].n.value.family) == "King"
    assert "Analytical Engines Ltd" in found[1].org.value
    assert card_with_email(fresh.collection(), grace) is not None
