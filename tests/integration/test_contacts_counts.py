"""The per-owner contact counter (``contact_counts``, kept by triggers) and the list's total.

An unfiltered list reads its total from the counter instead of counting the book, so the
counter must be exact after every kind of write: the API's create, delete and import, bulk
SQL across owners, ``COPY``, a user's deletion, concurrent writers of one owner.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import create_async_engine

from app.contacts.cards import new_card
from app.contacts.models import ContactCount, ContactRow, derived_columns
from app.users.models import User
from tests.conftest import ON_POSTGRES

BASE = "/api/contacts"


@pytest.fixture
async def db(settings):
    """An engine of the test's own (the app's pooled connections belong to the app's loop)."""
    engine = create_async_engine(settings.database_url, pool_size=25, max_overflow=0)
    yield engine
    await engine.dispose()


async def create(client, user, n: int) -> str:
    response = await client.post(
        f"{BASE}/",
        json={
            "first_name": f"Ann{n}",
            "last_name": "Count",
            "email": f"count{n}@example.com",
            "phone_number": "+380501234567",
        },
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def listed_total(client, user, **params) -> int:
    response = await client.get(f"{BASE}/", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()["total"]


async def counters(db) -> dict[uuid.UUID, tuple[int | None, int]]:
    """Each owner's counter and real number of contacts (``None``: no counter row)."""
    async with db.connect() as conn:
        real = dict(
            (
                await conn.execute(select(ContactRow.owner_id, func.count()).group_by(ContactRow.owner_id))
            ).all()
        )
        kept = dict((await conn.execute(select(ContactCount.owner_id, ContactCount.total))).all())
    return {owner: (kept.get(owner), real.get(owner, 0)) for owner in real.keys() | kept.keys()}


async def assert_exact(db) -> None:
    """Every counter equals its owner's real number of contacts; no contact is uncounted."""
    for owner, (kept, real) in (await counters(db)).items():
        assert (kept or 0) == real, (owner, kept, real)


def row(owner: uuid.UUID, n: int) -> dict:
    now = datetime.now(UTC)
    values = {
        "id": uuid.uuid4(),
        "owner_id": owner,
        "first_name": f"Bulk{n}",
        "last_name": "Row",
        "email": f"bulk{n}@example.com",
        "phone_number": "+380501234567",
        "birthday": None,
        "created_at": now,
        "updated_at": now,
    }
    contact_id = values["id"]
    values |= {
        "card": new_card(f"urn:uuid:{contact_id}", values),
        "uid": str(contact_id),
        "dav_name": f"{contact_id}.vcf",
    }
    return derived_columns(values)


async def test_create_delete_and_import_keep_the_total_exact(client, user, db, queries):
    assert await listed_total(client, user) == 0
    ids = [await create(client, user, n) for n in range(3)]
    assert await listed_total(client, user) == 3
    assert (await client.delete(f"{BASE}/{ids[0]}", headers=user.headers)).status_code == 204
    assert await listed_total(client, user) == 2
    assert (await client.delete(f"{BASE}/{ids[0]}", headers=user.headers)).status_code == 404
    assert await listed_total(client, user) == 2

    # 150 new rows and a duplicate the import skips: one multi-row INSERT, counted once.
    lines = [f"Imp{i},Orted,imp{i}@example.com,+380501234567" for i in range(150)]
    lines.append("Dup,Licate,count1@example.com,+380501234567")
    csv = "first_name,last_name,email,phone_number\r\n" + "\r\n".join(lines)
    queries.reset()
    response = await client.post(
        f"{BASE}/import", files={"file": ("c.csv", csv.encode(), "text/csv")}, headers=user.headers
    )
    assert response.json()["created"] == 150, response.text
    inserts = [s for s in queries.statements if s.lstrip().upper().startswith("INSERT INTO CONTACTS")]
    assert len(inserts) == 1, inserts
    assert await listed_total(client, user) == 152
    assert await listed_total(client, user, limit=5, offset=150, order_by="last_name") == 152
    await assert_exact(db)


async def test_another_users_contacts_are_never_counted(client, user, user_factory, db):
    other = await user_factory()
    for n in range(4):
        await create(client, other, n)
    await create(client, user, 0)
    assert await listed_total(client, user) == 1
    assert await listed_total(client, other) == 4
    assert await listed_total(client, await user_factory()) == 0
    await assert_exact(db)


async def test_bulk_statements_across_owners_count_each_owner(client, user, user_factory, db):
    other = await user_factory()
    await create(client, user, 0)
    async with db.begin() as conn:
        # One multi-row INSERT and one DELETE, each touching two owners.
        rows = [row(user.id, n) for n in range(1, 8)] + [row(other.id, n) for n in range(5)]
        await conn.execute(ContactRow.__table__.insert().values(rows))
        await conn.execute(delete(ContactRow).where(ContactRow.first_name.in_(["Bulk1", "Bulk2", "Bulk3"])))
    assert await listed_total(client, user) == 8 - 3
    assert await listed_total(client, other) == 5 - 3
    await assert_exact(db)


async def test_moving_a_contact_to_another_owner_moves_it_in_the_counts(client, user, user_factory, db):
    other = await user_factory()
    moved = await create(client, user, 0)
    await create(client, user, 1)
    async with db.begin() as conn:
        await conn.execute(
            update(ContactRow).where(ContactRow.id == uuid.UUID(moved)).values(owner_id=other.id)
        )
        # Setting owner_id to the same owner moves nothing.
        await conn.execute(update(ContactRow).where(ContactRow.owner_id == user.id).values(owner_id=user.id))
    assert await listed_total(client, user) == 1
    assert await listed_total(client, other) == 1
    await assert_exact(db)


async def test_deleting_the_user_deletes_the_counter_and_leaves_others_alone(client, user, user_factory, db):
    other = await user_factory()
    for n in range(3):
        await create(client, user, n)
    await create(client, other, 0)
    async with db.begin() as conn:
        if db.dialect.name == "sqlite":
            await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        await conn.execute(delete(User).where(User.id == user.id))
    assert await counters(db) == {other.id: (1, 1)}


@pytest.mark.skipif(not ON_POSTGRES, reason="COPY and TRUNCATE are PostgreSQL's")
async def test_copy_and_truncate_keep_the_counter_exact(client, user, db):
    await create(client, user, 0)
    columns = [c.name for c in ContactRow.__table__.columns if c.name != "sa_orm_sentinel"]
    records = [tuple({"version": 1, **row(user.id, n)}.get(c) for c in columns) for n in range(1, 1001)]
    async with db.begin() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        await raw.copy_records_to_table("contacts", records=records, columns=columns)
    assert await listed_total(client, user) == 1001
    async with db.begin() as conn:
        await conn.execute(text("TRUNCATE contacts"))
    assert await listed_total(client, user) == 0
    await assert_exact(db)


async def test_concurrent_creates_and_deletes_of_one_owner_keep_the_total_exact(client, user, db):
    """Writers of one owner queue on its counter row: none is lost, none deadlocks."""
    doomed = [await create(client, user, n) for n in range(10)]
    responses = await asyncio.gather(
        *(create_response(client, user, n) for n in range(100, 130)),
        *(client.delete(f"{BASE}/{contact_id}", headers=user.headers) for contact_id in doomed),
    )
    assert sorted({r.status_code for r in responses}) == [201, 204]
    assert await listed_total(client, user) == 30
    await assert_exact(db)


async def create_response(client, user, n: int):
    return await client.post(
        f"{BASE}/",
        json={
            "first_name": "C",
            "last_name": "C",
            "email": f"c{n}@example.com",
            "phone_number": "+380501234567",
        },
        headers=user.headers,
    )


async def test_overlapping_transactions_of_one_owner_keep_the_count_exact(user, db):
    """Transactions that hold their insert or delete open while others write the same owner."""

    async def insert(n: int) -> None:
        async with db.begin() as conn:
            await conn.execute(ContactRow.__table__.insert(), [row(user.id, n)])
            await asyncio.sleep(0.005)  # still uncommitted: the next writer of this owner waits

    async def remove(n: int) -> None:
        async with db.begin() as conn:
            await conn.execute(
                delete(ContactRow).where(ContactRow.owner_id == user.id, ContactRow.first_name == f"Bulk{n}")
            )
            await asyncio.sleep(0.005)

    await asyncio.gather(*(insert(n) for n in range(20)))
    await asyncio.wait_for(
        asyncio.gather(*(insert(n) for n in range(20, 40)), *(remove(n) for n in range(20))), timeout=60
    )
    assert await counters(db) == {user.id: (20, 20)}
