"""The full vCard of each contact, the CardDAV store API and the change log behind sync.

Store methods run on the app's loop (``in_app_loop``); what they write is checked through the
JSON API and the store's own reads, on both backends.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import create_async_engine

from app.contacts.cards import (
    CardError,
    CardTooLargeError,
    CardWithoutNameError,
    NotACardError,
    parse_card,
)
from app.contacts.controller import contact_store
from app.contacts.models import ContactRow, ContactSync, ContactTombstone
from app.contacts.schemas import ContactCreate
from app.contacts.store import (
    ContactNotFoundError,
    EmailTakenError,
    InvalidContactError,
    StaleContactError,
    SyncTokenExpiredError,
    UidConflictError,
    purge_tombstones,
)
from app.users.models import User
from tests.conftest import ON_POSTGRES

BASE = "/api/contacts"

RICH = (
    "BEGIN:VCARD\r\n"
    "VERSION:4.0\r\n"
    "UID:urn:uuid:11111111-2222-3333-4444-555555555555\r\n"
    "FN:Ada Lovelace\r\n"
    "N:Lovelace;Ada;Augusta;Countess;\r\n"
    "TEL;VALUE=uri;TYPE=cell;PREF=1:tel:+380501234567\r\n"
    "TEL;TYPE=work:+44 20 7946 0958\r\n"
    "EMAIL;TYPE=home:ada@example.com\r\n"
    "EMAIL;TYPE=work:countess@example.com\r\n"
    "ADR;TYPE=home:;;12 St James's Square;London;;SW1Y 4JH;UK\r\n"
    "ORG:Analytical Engine Society\r\n"
    "TITLE:Mathematician\r\n"
    "URL:https://example.com/a,b\r\n"
    "NOTE:First programmer\\, probably\r\n"
    "PHOTO:data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\r\n"
    "CATEGORIES:friends,science\r\n"
    "X-ABLABEL;X-SOURCE=phone:Lady\\; Countess\r\n"
    "BDAY:18151210\r\n"
    "END:VCARD\r\n"
)


def card_text(
    given: str = "Grace", family: str = "Hopper", uid: str | None = None, email: str | None = None
) -> str:
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"N:{family};{given};;;", f"FN:{given} {family}"]
    if uid:
        lines.append(f"UID:{uid}")
    if email:
        lines.append(f"EMAIL;TYPE=INTERNET:{email}")
    return "\r\n".join([*lines, "END:VCARD", ""])


def props(text: str) -> list[tuple[str, str, str]]:
    """A card's properties (name, parameters, value), sorted, the revision left out: compared parsed, not as bytes."""
    card = parse_card(text)
    return sorted(
        (line.name, repr(sorted((k, sorted(v)) for k, v in line.params.items())), line.value)
        for line in card.lines
        if line.name != "REV"
    )


@pytest.fixture
async def db(settings):
    """An engine of the test's own (the app's pooled connections belong to the app's loop)."""
    engine = create_async_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(app):
    return contact_store(app.state)


@pytest.fixture
def run(in_app_loop):
    """``await run(fn, *args, **kwargs)`` on the app's loop."""

    async def call(fn, *args, **kwargs):
        return await in_app_loop(functools.partial(fn, *args, **kwargs))

    return call


async def put(run, store, user, name, text, *, if_match=None, if_none_match_any=False):
    return await run(
        store.put_card, user.id, name, text, if_match=if_match, if_none_match_any=if_none_match_any
    )


async def collect(store, owner_id, batch):
    return [card async for card in store.iter_cards(owner_id, batch=batch)]


async def rows(db, **where) -> int:
    statement = select(func.count()).select_from(ContactRow)
    for key, value in where.items():
        statement = statement.where(getattr(ContactRow, key) == value)
    async with db.connect() as conn:
        return (await conn.execute(statement)).scalar_one()


# --------------------------------------------------------------------------- the card is kept


async def test_a_rich_card_is_kept_whole_and_its_json_view_follows(client, user, run, store):
    stored, created = await put(run, store, user, "ada.vcf", RICH)
    assert created
    assert stored.name == "ada.vcf"
    assert stored.uid == "urn:uuid:11111111-2222-3333-4444-555555555555"
    assert props(stored.card) == props(RICH)

    response = await client.get(f"{BASE}/{stored.id}", headers=user.headers)
    assert response.status_code == 200
    assert response.headers["etag"] == stored.etag
    view = response.json()
    assert (view["first_name"], view["last_name"]) == ("Ada", "Lovelace")
    assert view["email"] == "ada@example.com"
    assert view["phone_number"] == "+380501234567"  # the preferred TEL
    assert view["birthday"] == "1815-12-10"
    assert view["additional_data"] == "First programmer, probably"


async def test_json_patch_rewrites_only_its_properties(client, user, run, store):
    stored, _ = await put(run, store, user, "ada.vcf", RICH)
    response = await client.patch(
        f"{BASE}/{stored.id}",
        json={"first_name": "Augusta", "phone_number": "+1 650 253 0000", "additional_data": None},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    after = await run(store.card_by_name, user.id, "ada.vcf")
    assert after.etag == response.headers["etag"] != stored.etag
    assert after.sync_seq > stored.sync_seq
    before, now = props(RICH), props(after.card)
    changed = {"N", "FN", "TEL", "NOTE"}
    assert [p for p in now if p[0] not in changed] == [p for p in before if p[0] not in changed]
    card = parse_card(after.card)
    assert card.first("N").value == "Lovelace;Augusta;Augusta;Countess;"
    assert card.first("FN").value == "Augusta Lovelace"
    tels = [(line.value, line.params.get("PREF")) for line in card.lines if line.name == "TEL"]
    assert tels == [("tel:+16502530000", ["1"]), ("+44 20 7946 0958", None)]
    assert card.first("NOTE") is None
    assert card.first("REV") is not None


async def test_json_put_keeps_the_other_properties_and_clears_its_fields(client, user, run, store):
    stored, _ = await put(run, store, user, "ada.vcf", RICH)
    response = await client.put(f"{BASE}/{stored.id}", json={"first_name": "Ada"}, headers=user.headers)
    assert response.status_code == 200, response.text
    card = parse_card((await run(store.card_by_name, user.id, "ada.vcf")).card)
    emails = [line.value for line in card.lines if line.name == "EMAIL"]
    assert emails == ["countess@example.com"], "the preferred-else-first EMAIL went, the other stayed"
    assert [line.value for line in card.lines if line.name == "TEL"] == ["+44 20 7946 0958"]
    assert card.first("BDAY") is None
    for name in ("ADR", "ORG", "TITLE", "URL", "PHOTO", "CATEGORIES", "X-ABLABEL"):
        assert card.first(name) is not None, name
    view = (await client.get(f"{BASE}/{stored.id}", headers=user.headers)).json()
    assert (view["email"], view["phone_number"], view["birthday"]) == (None, None, None), "as the PUT said"


async def test_a_json_contact_is_a_vcard_4_with_its_id_as_uid(client, user, run, store):
    body = {
        "first_name": "Ann",
        "last_name": "Lee",
        "email": "ann@example.com",
        "phone_number": "+380501234567",
    }
    made = (await client.post(f"{BASE}/", json=body, headers=user.headers)).json()
    stored = await run(store.card_by_name, user.id, f"{made['id']}.vcf")
    assert stored.uid == f"urn:uuid:{made['id']}"
    card = parse_card(stored.card)
    assert card.version == "4.0"
    assert card.uid == stored.uid
    assert card.fields()["email"] == "ann@example.com"
    assert card.first("FN").value == "Ann Lee"


# --------------------------------------------------------------------------- put_card rules


async def test_put_conditions(run, store, user):
    with pytest.raises(StaleContactError):
        await put(run, store, user, "a.vcf", card_text(), if_match='"v1"')  # If-Match on a missing card
    stored, created = await put(run, store, user, "a.vcf", card_text(), if_none_match_any=True)
    assert created
    with pytest.raises(StaleContactError):
        await put(run, store, user, "a.vcf", card_text(given="Other"), if_none_match_any=True)
    with pytest.raises(StaleContactError):
        await put(run, store, user, "a.vcf", card_text(given="Other"), if_match='"v99"')
    again, created = await put(run, store, user, "a.vcf", card_text(given="Other"), if_match=stored.etag)
    assert not created
    assert again.id == stored.id
    assert again.etag != stored.etag
    assert again.uid == stored.uid, "a card without UID keeps the one it was given"
    assert parse_card(again.card).fields()["first_name"] == "Other"


async def test_uid_conflicts(run, store, user):
    await put(run, store, user, "a.vcf", card_text(uid="same"))
    with pytest.raises(UidConflictError) as taken:
        await put(run, store, user, "b.vcf", card_text(given="B", uid="same"))
    assert taken.value.href_name == "a.vcf"
    assert taken.value.status_code == 409
    with pytest.raises(UidConflictError) as changed:
        await put(run, store, user, "a.vcf", card_text(uid="another"))
    assert changed.value.href_name == "a.vcf"
    assert await run(store.card_by_name, user.id, "b.vcf") is None


async def test_email_rule_of_the_json_api_holds(run, store, user, client):
    await client.post(
        f"{BASE}/", json={"first_name": "X", "email": "taken@example.com"}, headers=user.headers
    )
    with pytest.raises(EmailTakenError) as taken:
        await put(run, store, user, "b.vcf", card_text(email="TAKEN@example.com"))
    assert taken.value.status_code == 409
    with pytest.raises(InvalidContactError):
        await put(run, store, user, "c.vcf", card_text(email="not an email"))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (card_text().replace("Grace", "Gr\x00ace"), CardError),
        ("BEGIN:VCARD\r\nVERSION:4.0\r\nEMAIL:a@example.com\r\nEND:VCARD\r\n", CardWithoutNameError),
        ("BEGIN:VCARD\r\nVERSION:4.0\r\nN:;;;;\r\nFN:\r\nEND:VCARD\r\n", CardWithoutNameError),
        ("hello, world", NotACardError),
        ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n", NotACardError),
        ("BEGIN:VCARD\r\nVERSION:2.1\r\nFN:Old\r\nEND:VCARD\r\n", NotACardError),
        (card_text() + card_text(given="Two"), NotACardError),
        (card_text().replace("END:VCARD\r\n", ""), NotACardError),
        (card_text(uid="u" * 256), CardError),
        (card_text().replace("FN:", "NOTE:" + "x" * 1_000_001 + "\r\nFN:"), CardTooLargeError),
        (card_text(given="g" * 51), InvalidContactError),
        (card_text().replace("FN:", "NOTE:" + "n" * 501 + "\r\nFN:"), InvalidContactError),
        (card_text().replace("FN:", "BDAY:soon\r\nFN:"), InvalidContactError),
    ],
)
async def test_bad_cards_are_refused_and_nothing_changes(run, store, user, db, text, error):
    before = await run(store.sync_token, user.id)
    with pytest.raises(error) as refused:
        await put(run, store, user, "bad.vcf", text)
    assert 400 <= refused.value.status_code < 500
    assert await rows(db) == 0
    assert await run(store.sync_token, user.id) == before


async def test_an_over_long_name_is_refused(run, store, user, db):
    with pytest.raises(CardError):
        await put(run, store, user, "n" * 252 + ".vcf", card_text())
    assert await rows(db) == 0


async def test_a_card_in_3_0_is_kept_in_3_0_and_read_in_the_json_view(run, store, user, client):
    text = (
        "BEGIN:VCARD\nVERSION:3.0\nN:Shevchenko;Taras;;;\nFN:Taras Shevchenko\n"
        "TEL;TYPE=CELL:050 111 22 33\nTEL;TYPE=HOME,PREF:+380 44 123 4567\n"
        "PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQ==\nBDAY;X-APPLE-OMIT-YEAR=1604:1604-03-09\nEND:VCARD\n"
    )
    stored, _ = await put(run, store, user, "taras.vcf", text)
    assert stored.card.startswith("BEGIN:VCARD\r\nVERSION:3.0\r\n")
    view = (await client.get(f"{BASE}/{stored.id}", headers=user.headers)).json()
    assert view["phone_number"] == "+380441234567"
    assert view["birthday"] == "1604-03-09"
    assert view["email"] is None


# --------------------------------------------------------------------------- reads and deletes


async def test_reads_are_owner_scoped(run, store, user, user_factory):
    other = await user_factory()
    stored, _ = await put(run, store, user, "a.vcf", card_text())
    assert await run(store.card_by_name, other.id, "a.vcf") is None
    assert await run(store.cards_by_names, other.id, ["a.vcf"]) == []
    assert await run(collect, store, other.id, 10) == []
    with pytest.raises(ContactNotFoundError):
        await run(store.delete_card, other.id, "a.vcf", if_match=None)
    assert await run(store.card_by_name, user.id, "a.vcf") == stored


async def test_cards_by_names_and_iter_cards(run, store, user):
    names = [f"c{i}.vcf" for i in range(70)]
    for i, name in enumerate(names):
        await put(run, store, user, name, card_text(given=f"G{i}"))
    found = await run(store.cards_by_names, user.id, [*names[:67], "missing.vcf", names[0]])
    assert sorted(card.name for card in found) == sorted(names[:67])
    streamed = await run(collect, store, user.id, 8)
    assert sorted(card.name for card in streamed) == sorted(names)
    assert len({card.id for card in streamed}) == 70


async def test_delete_card(run, store, user, client):
    stored, _ = await put(run, store, user, "a.vcf", card_text())
    with pytest.raises(ContactNotFoundError):
        await run(store.delete_card, user.id, "missing.vcf", if_match=None)
    with pytest.raises(StaleContactError):
        await run(store.delete_card, user.id, "a.vcf", if_match='"v7"')
    await run(store.delete_card, user.id, "a.vcf", if_match=stored.etag)
    assert (await client.get(f"{BASE}/{stored.id}", headers=user.headers)).status_code == 404
    with pytest.raises(ContactNotFoundError):
        await run(store.delete_card, user.id, "a.vcf", if_match=None)


# --------------------------------------------------------------------------- the change log


async def test_every_kind_of_change_moves_the_sync_token(run, store, user, client):
    tokens = [await run(store.sync_token, user.id)]
    assert tokens == [0]

    async def moved() -> None:
        tokens.append(await run(store.sync_token, user.id))
        assert tokens[-1] > tokens[-2]

    made = (await client.post(f"{BASE}/", json={"first_name": "J"}, headers=user.headers)).json()
    await moved()
    await client.patch(f"{BASE}/{made['id']}", json={"last_name": "K"}, headers=user.headers)
    await moved()
    await client.put(f"{BASE}/{made['id']}", json={"first_name": "L"}, headers=user.headers)
    await moved()
    await put(run, store, user, "d.vcf", card_text())
    await moved()
    await put(run, store, user, "d.vcf", card_text(given="E"))
    await moved()
    await run(store.delete_card, user.id, "d.vcf", if_match=None)
    await moved()
    await client.delete(f"{BASE}/{made['id']}", headers=user.headers)
    await moved()
    csv = b"first_name,email\r\nA,a@example.com\r\nB,b@example.com\r\nC,c@example.com\r\n"
    result = await client.post(
        f"{BASE}/import", files={"file": ("c.csv", csv, "text/csv")}, headers=user.headers
    )
    assert result.json()["created"] == 3
    await moved()
    assert tokens[-1] - tokens[-2] == 3, "an import takes one number per contact"


async def test_changes_show_each_contact_once_in_its_latest_state(run, store, user, client):
    ids = []
    for n in range(3):
        made = await client.post(f"{BASE}/", json={"first_name": f"N{n}"}, headers=user.headers)
        ids.append(made.json()["id"])
    first = await run(store.changes, user.id, None, 100)
    assert [str(c.id) for c in first.contacts] == ids
    assert [c.name for c in first.changed] == [f"{i}.vcf" for i in ids]
    assert first.deleted == []
    assert not first.more
    token = first.next

    nothing = await run(store.changes, user.id, token, 100)
    assert (nothing.changed, nothing.deleted, nothing.next, nothing.more) == ([], [], token, False)

    await client.patch(f"{BASE}/{ids[0]}", json={"last_name": "One"}, headers=user.headers)
    await client.patch(f"{BASE}/{ids[0]}", json={"last_name": "Two"}, headers=user.headers)
    await client.delete(f"{BASE}/{ids[1]}", headers=user.headers)
    later = await run(store.changes, user.id, token, 100)
    assert [(str(c.id), c.last_name) for c in later.contacts] == [(ids[0], "Two")]
    assert [(str(d.id), d.name) for d in later.deleted] == [(ids[1], f"{ids[1]}.vcf")]
    assert later.next == await run(store.sync_token, user.id)


async def test_a_name_deleted_and_used_again_is_not_gone_for_carddav(run, store, user):
    first, _ = await put(run, store, user, "same.vcf", card_text(uid="one"))
    token = await run(store.sync_token, user.id)
    await run(store.delete_card, user.id, "same.vcf", if_match=None)
    second, _ = await put(run, store, user, "same.vcf", card_text(given="New", uid="two"))
    await put(run, store, user, "other.vcf", card_text(given="Other"))
    await run(store.delete_card, user.id, "other.vcf", if_match=None)
    changes = await run(store.changes, user.id, token, 100)
    assert [d.id for d in changes.deleted] == [first.id, changes.deleted[1].id]
    assert [c.id for c in changes.changed] == [second.id]
    assert changes.gone_names() == ["other.vcf"]


async def test_changes_come_in_pages(run, store, user, client):
    for n in range(5):
        await client.post(f"{BASE}/", json={"first_name": f"P{n}"}, headers=user.headers)
    start = await run(store.sync_token, user.id)
    made = [
        (await client.post(f"{BASE}/", json={"first_name": f"Q{n}"}, headers=user.headers)).json()
        for n in range(3)
    ]
    for item in made[:2]:
        await client.delete(f"{BASE}/{item['id']}", headers=user.headers)
    seen_changed, seen_deleted, token, pages = [], [], start, 0
    while True:
        page = await run(store.changes, user.id, token, 2)
        pages += 1
        seen_changed += [c.first_name for c in page.contacts]
        seen_deleted += [str(d.id) for d in page.deleted]
        token = page.next
        if not page.more:
            break
    assert pages == 2
    assert seen_changed == ["Q2"]
    assert seen_deleted == [made[0]["id"], made[1]["id"]]
    assert token == await run(store.sync_token, user.id)


async def test_other_users_changes_are_never_seen(run, store, user, user_factory, client):
    other = await user_factory()
    await client.post(f"{BASE}/", json={"first_name": "Mine"}, headers=user.headers)
    token = (await run(store.changes, user.id, None, 100)).next
    theirs = (await client.post(f"{BASE}/", json={"first_name": "Theirs"}, headers=other.headers)).json()
    await client.delete(f"{BASE}/{theirs['id']}", headers=other.headers)
    assert await run(store.sync_token, user.id) == token
    later = await run(store.changes, user.id, token, 100)
    assert (later.changed, later.deleted) == ([], [])
    assert [c.first_name for c in (await run(store.changes, user.id, None, 100)).contacts] == ["Mine"]


async def test_a_token_from_the_future_or_before_the_purge_has_expired(run, store, user, client, app):
    made = [
        (await client.post(f"{BASE}/", json={"first_name": f"T{n}"}, headers=user.headers)).json()
        for n in range(3)
    ]
    old_token = await run(store.sync_token, user.id)
    with pytest.raises(SyncTokenExpiredError) as future:
        await run(store.changes, user.id, old_token + 1, 10)
    assert future.value.status_code == 410
    await client.delete(f"{BASE}/{made[0]['id']}", headers=user.headers)
    after_first = await run(store.sync_token, user.id)
    await client.delete(f"{BASE}/{made[1]['id']}", headers=user.headers)

    async def age_and_purge() -> int:
        async with app.state.db_config.get_session() as session:
            await session.execute(
                update(ContactTombstone)
                .where(ContactTombstone.owner_id == user.id, ContactTombstone.sync_seq == after_first)
                .values(deleted_at=datetime.now(UTC) - timedelta(days=31))
            )
            purged = await purge_tombstones(session, datetime.now(UTC))
            await session.commit()
            return purged

    assert await run(age_and_purge) == 1
    with pytest.raises(SyncTokenExpiredError):
        await run(store.changes, user.id, old_token, 10)  # it would miss the purged deletion
    fresh = await run(store.changes, user.id, after_first, 10)
    assert [str(d.id) for d in fresh.deleted] == [made[1]["id"]]
    assert (await run(store.changes, user.id, None, 10)).contacts[0].first_name == "T2"


async def test_concurrent_writes_get_distinct_numbers_in_commit_order(run, store, user, client):
    responses = await asyncio.gather(
        *(client.post(f"{BASE}/", json={"first_name": f"C{n}"}, headers=user.headers) for n in range(12))
    )
    assert all(r.status_code == 201 for r in responses)
    changes = await run(store.changes, user.id, None, 100)
    seqs = [card.sync_seq for card in changes.changed]
    assert len(changes.changed) == 12
    assert seqs == sorted(set(seqs))
    assert changes.next == max(seqs) == await run(store.sync_token, user.id)


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite has one writer at a time: nothing is ever pending")
async def test_a_pending_change_hides_the_later_ones(run, store, user, client, db):
    """Numbers commit in order: while number N is uncommitted, N+1 cannot commit before it."""
    made = (await client.post(f"{BASE}/", json={"first_name": "Held"}, headers=user.headers)).json()
    token = await run(store.sync_token, user.id)
    async with db.connect() as conn:
        transaction = await conn.begin()
        await conn.execute(
            update(ContactRow).where(ContactRow.owner_id == user.id).values(last_name="Pending")
        )
        # Through the store on the app's loop: the test client would block this loop meanwhile.
        later = asyncio.ensure_future(run(store.add_contact, user.id, ContactCreate(first_name="Later")))
        await asyncio.sleep(0.3)
        assert not later.done(), "the second writer waits on the owner's counter row"
        changes = await run(store.changes, user.id, token, 100)
        assert changes.changed == []
        await transaction.commit()
    await asyncio.wait_for(later, timeout=30)
    changes = await run(store.changes, user.id, token, 100)
    assert [(c.first_name, c.last_name) for c in changes.contacts] == [("Held", "Pending"), ("Later", None)]
    assert str(changes.contacts[0].id) == made["id"]


async def test_deleting_the_account_leaves_no_sync_rows(run, store, user, client, db, app):
    for n in range(3):
        await client.post(f"{BASE}/", json={"first_name": f"D{n}"}, headers=user.headers)
    await put(run, store, user, "x.vcf", card_text())
    await run(store.delete_card, user.id, "x.vcf", if_match=None)

    async def erase() -> None:  # through the app's engine: SQLite cascades with its pragma only
        async with app.state.db_config.get_session() as session:
            await session.execute(delete(User).where(User.id == user.id))
            await session.commit()

    await run(erase)
    async with db.connect() as conn:
        for model in (ContactRow, ContactSync, ContactTombstone):
            assert (await conn.execute(select(func.count()).select_from(model))).scalar_one() == 0


async def test_a_rich_card_survives_patch_export_and_import(run, store, user, user_factory, client):
    stored, _ = await put(run, store, user, "ada.vcf", RICH)
    patched = await client.patch(f"{BASE}/{stored.id}", json={"first_name": "Augusta"}, headers=user.headers)
    assert patched.status_code == 200
    exported = await client.get(f"{BASE}/export", headers=user.headers)
    assert exported.content.count(b"BEGIN:VCARD") == 1
    other = await user_factory()
    imported = await client.post(
        f"{BASE}/import", files={"file": ("c.vcf", exported.content, "text/vcard")}, headers=other.headers
    )
    assert imported.json() == {"created": 1, "skipped": 0, "errors": []}
    (card,) = await run(collect, store, other.id, 10)
    expected = [p for p in props(RICH) if p[0] not in {"N", "FN"}]
    assert [p for p in props(card.card) if p[0] not in {"N", "FN"}] == expected
    assert parse_card(card.card).names() == ("Augusta", "Lovelace")
    again = await client.post(
        f"{BASE}/import", files={"file": ("c.vcf", exported.content, "text/vcard")}, headers=user.headers
    )
    assert again.json() == {"created": 0, "skipped": 1, "errors": []}, "its UID is in the book"


async def test_a_3_0_card_is_exported_as_4_0(run, store, user, client):
    await put(run, store, user, "g.vcf", card_text(email="grace@example.com"))
    exported = (await client.get(f"{BASE}/export", headers=user.headers)).text
    card = parse_card(exported)
    assert card.version == "4.0"
    assert card.fields()["email"] == "grace@example.com"
