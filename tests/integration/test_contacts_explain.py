"""On PostgreSQL, the list, birthday and search queries use indexes in a 100k-contact book."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.contacts.store import ContactStore
from app.db import DirectPool
from tests.conftest import ON_POSTGRES

pytestmark = pytest.mark.skipif(not ON_POSTGRES, reason="EXPLAIN plans are PostgreSQL's")

BOOK = 100_000
COLUMNS = (
    "id",
    "owner_id",
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "birthday",
    "additional_data",
    "first_name_search",
    "last_name_search",
    "birthday_md",
    "version",
    "created_at",
    "updated_at",
    "card",
    "uid",
    "dav_name",
)


def _records(owner: uuid.UUID, count: int, tag: str):
    now = datetime.now(UTC)
    start = date(1970, 1, 1)
    for i in range(count):
        born = start + timedelta(days=(i * 37) % 20000)
        first = f"Zyxw{i}" if i % 20000 == 7 else f"{tag}first{i}"
        last = f"{tag}last{i}"
        contact_id = uuid.uuid4()
        card = (
            f"BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:{contact_id}\r\nFN:{first} {last}\r\nEND:VCARD\r\n"
        )
        yield (
            contact_id,
            owner,
            first,
            last,
            f"{tag}{i}@example.com",
            "+380501234567",
            born,
            None,
            first.casefold(),
            last.casefold(),
            born.month * 100 + born.day,
            1,
            now,
            now,
            card,
            f"urn:uuid:{contact_id}",
            f"{contact_id}.vcf",
        )


@pytest.fixture
async def big_book(settings):
    engine = create_async_engine(settings.database_url)
    owner, other = uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as conn:
        for uid in (owner, other):
            await conn.execute(
                text(
                    "INSERT INTO users (id, username, email, password_hash, avatar_url, created_at, updated_at) "
                    "VALUES (:id, :u, :e, 'x', 'x', now(), now())"
                ),
                {"id": uid, "u": uid.hex[:12], "e": f"{uid.hex[:12]}@example.com"},
            )
        raw = (await conn.get_raw_connection()).driver_connection
        await raw.copy_records_to_table("contacts", records=_records(owner, BOOK, "a"), columns=COLUMNS)
        await raw.copy_records_to_table("contacts", records=_records(other, 5_000, "b"), columns=COLUMNS)
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE contacts"))
        await conn.commit()
    pool = DirectPool(engine)
    await pool.open()
    yield engine, owner, ContactStore(pool, settings)
    await pool.close()
    await engine.dispose()


async def _plans(engine, store, run) -> list[str]:
    """Run ``run(store)`` and return the EXPLAIN of every SELECT it sent."""
    seen: list[tuple[str, tuple]] = []

    def capture(record):
        if record.query.lstrip().upper().startswith("SELECT"):
            seen.append((record.query, tuple(record.args)))

    store.pool.add_query_logger(capture)
    try:
        await run(store)
        await asyncio.sleep(0)  # asyncpg calls its loggers on the next loop iteration
    finally:
        store.pool.remove_query_logger(capture)
    plans = []
    async with engine.connect() as conn:
        for statement, parameters in seen:
            rows = (await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)).scalars()
            plans.append("\n".join(rows))
    return plans


async def test_list_birthday_and_search_queries_use_indexes(big_book):
    """One 100k book (built once: it is the slow part), several queries."""
    engine, owner, store = big_book
    found = []

    async def birthdays(store):
        for today, days in ((date(2025, 6, 1), 7), (date(2025, 12, 28), 7)):  # plain, and wrapping
            found.append(len(await store.upcoming_birthdays(owner, days, today=today)))

    plans = await _plans(engine, store, birthdays)
    assert all(count > 0 for count in found)
    assert len(plans) == 2
    for plan in plans:
        assert "ix_contacts_owner_birthday_md" in plan, plan
        assert "Seq Scan" not in plan, plan

    # Selective patterns, as a search box sends them; a page shorter than the limit needs
    # no count, so one statement (two at most).
    for query in ({"q": "zyxw"}, {"first_name": "zyxw"}, {"email": "a99999@"}):
        pages = []

        async def search(store, query=query, pages=pages):
            pages.append(await store.list_contacts(owner, **query))

        plans = await _plans(engine, store, search)
        page = pages[0]
        assert page.total >= 1, query
        assert len(page.items) == page.total, query
        assert 1 <= len(plans) <= 2, query
        for plan in plans:
            assert "_trgm" in plan, (query, plan)
            if "q" in query:
                # One scan of the owner + search-text trigram index, not three trigram scans
                # over every owner's rows ANDed with the owner's 100k rows.
                assert "ix_contacts_owner_search_trgm" in plan, (query, plan)
                assert "BitmapAnd" not in plan, (query, plan)
            assert "Seq Scan" not in plan, (query, plan)

    # The unfiltered list: one statement in every ordering, its total the owner's counter
    # (kept through COPY by the triggers), never a count of the 100k rows.
    for order_by in ("created_at", "first_name", "last_name", "birthday"):
        for descending in (False, True):
            # Not yet: birthday DESC NULLS LAST is no direction of the (owner, birthday, id)
            # index, so that page sorts the whole book (with or without the counter).
            indexed = not (order_by == "birthday" and descending)
            pages = []

            async def listing(store, order_by=order_by, descending=descending, pages=pages):
                pages.append(
                    await store.list_contacts(owner, order_by=order_by, descending=descending, offset=40)
                )

            plans = await _plans(engine, store, listing)
            page = pages[0]
            assert (len(page.items), page.total) == (20, BOOK)
            assert len(plans) == 1, plans
            assert "Aggregate" not in plans[0], plans[0]
            if indexed:
                assert "Seq Scan on contacts" not in plans[0], plans[0]
                assert "Index Scan" in plans[0] and "using ix_contacts_owner_" in plans[0], plans[0]
