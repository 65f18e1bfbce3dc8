"""``GET /api/contacts/changes``: the incremental sync feed of the JSON API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.contacts.models import ContactTombstone
from app.contacts.store import purge_tombstones

CHANGES = "/api/contacts/changes"
BASE = "/api/contacts"


async def feed(client, user, **params):
    response = await client.get(CHANGES, params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def make(client, user, name: str, **fields) -> dict:
    response = await client.post(f"{BASE}/", json={"first_name": name, **fields}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_without_a_token_every_contact_and_a_token(client, user):
    empty = await feed(client, user)
    assert empty == {"changed": [], "deleted": [], "next": "0", "more": False}
    made = [await make(client, user, f"A{n}") for n in range(3)]
    first = await feed(client, user)
    assert first["changed"] == made, "the contacts as the API shows them"
    assert first["deleted"] == []
    assert first["more"] is False
    assert isinstance(first["next"], str)


async def test_json_changes_show_up_once_in_their_latest_state(client, user):
    kept, edited, gone = [await make(client, user, name) for name in ("Kept", "Edited", "Gone")]
    token = (await feed(client, user))["next"]
    assert await feed(client, user, since=token) == {
        "changed": [],
        "deleted": [],
        "next": token,
        "more": False,
    }

    await client.patch(f"{BASE}/{edited['id']}", json={"last_name": "Once"}, headers=user.headers)
    final = await client.put(f"{BASE}/{edited['id']}", json={"first_name": "Twice"}, headers=user.headers)
    await client.delete(f"{BASE}/{gone['id']}", headers=user.headers)
    new = await make(client, user, "New")
    later = await feed(client, user, since=token)
    assert later["changed"] == [final.json(), new]
    assert later["deleted"] == [gone["id"]]
    assert later["more"] is False
    assert kept["id"] not in {c["id"] for c in later["changed"]}
    assert int(later["next"]) > int(token)
    assert (await feed(client, user, since=later["next"]))["changed"] == []


async def test_pages_with_more_until_done(client, user):
    token = (await feed(client, user))["next"]
    made = [await make(client, user, f"P{n}") for n in range(5)]
    await client.delete(f"{BASE}/{made[0]['id']}", headers=user.headers)
    changed, deleted, pages = [], [], []
    while True:
        page = await feed(client, user, since=token, limit=2)
        pages.append(len(page["changed"]) + len(page["deleted"]))
        changed += [c["first_name"] for c in page["changed"]]
        deleted += page["deleted"]
        token = page["next"]
        if not page["more"]:
            break
    assert pages == [2, 2, 1]
    assert changed == ["P1", "P2", "P3", "P4"]
    assert deleted == [made[0]["id"]]


async def test_other_users_changes_are_never_visible(client, user, user_factory):
    other = await user_factory()
    mine = await make(client, user, "Mine")
    token = (await feed(client, user))["next"]
    theirs = await make(client, other, "Theirs")
    await client.patch(f"{BASE}/{theirs['id']}", json={"last_name": "X"}, headers=other.headers)
    await client.delete(f"{BASE}/{theirs['id']}", headers=other.headers)
    assert await feed(client, user, since=token) == {
        "changed": [],
        "deleted": [],
        "next": token,
        "more": False,
    }
    assert [c["id"] for c in (await feed(client, user))["changed"]] == [mine["id"]]
    assert (await feed(client, other))["changed"] == []


async def test_a_token_before_the_purged_deletions_is_410(client, user, app, in_app_loop):
    made = [await make(client, user, f"E{n}") for n in range(2)]
    old = (await feed(client, user))["next"]
    await client.delete(f"{BASE}/{made[0]['id']}", headers=user.headers)
    after = (await feed(client, user, since=old))["next"]

    async def age_and_purge() -> None:
        async with app.state.db_config.get_session() as session:
            await session.execute(
                update(ContactTombstone)
                .where(ContactTombstone.owner_id == user.id)
                .values(deleted_at=datetime.now(UTC) - timedelta(days=30, minutes=1))
            )
            await purge_tombstones(session, datetime.now(UTC))
            await session.commit()

    await in_app_loop(age_and_purge)
    response = await client.get(CHANGES, params={"since": old}, headers=user.headers)
    assert response.status_code == 410
    assert "sync" in response.json()["detail"]
    assert (await feed(client, user, since=after))["changed"] == []
    restart = await feed(client, user)
    assert [c["id"] for c in restart["changed"]] == [made[1]["id"]]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"since": "abc"}, 400),
        ({"since": "-1"}, 400),
        ({"since": "1" * 19}, 400),
        ({"since": "1\x00"}, 400),
        ({"since": ""}, 400),
        ({"limit": 0}, 400),
        ({"limit": 1001}, 400),
        ({"since": "999999"}, 410),
    ],
)
async def test_bad_tokens_and_limits(client, user, params, status):
    await make(client, user, "B")
    response = await client.get(CHANGES, params=params, headers=user.headers)
    assert response.status_code == status, response.text


async def test_the_feed_needs_a_login(client):
    assert (await client.get(CHANGES)).status_code == 401
