"""Migrations on the backend under test: up from empty, down to base, up again, no drift."""

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from anyio import to_thread
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import downgrade_database, make_db_config, upgrade_database
from app.models import metadata
from tests.conftest import ON_POSTGRES, TEST_DATABASE_URL, _admin_sql, _base_settings


@pytest.fixture
async def empty_database_url(tmp_path):
    if not ON_POSTGRES:
        yield f"sqlite+aiosqlite:///{tmp_path}/empty.db"
        return
    from sqlalchemy.engine import make_url

    name = f"contacts_mig_{uuid.uuid4().hex[:8]}"
    await _admin_sql(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
    yield make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    await _admin_sql(TEST_DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


async def _drift(url: str) -> list:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
        )
    await engine.dispose()
    # SQLite reflects GUID (BINARY(16)) columns as NUMERIC: a known false positive there.
    # Indexes declared for PostgreSQL only (``ddl_if``, e.g. pg_trgm) don't exist elsewhere.
    return [
        d for d in diff if not (not ON_POSTGRES and (_is_guid_type_change(d) or _is_postgres_only_index(d)))
    ]


def _is_postgres_only_index(diff) -> bool:
    if not isinstance(diff, tuple) or diff[0] != "add_index":
        return False
    declared = {index.name: index for index in metadata.tables[diff[1].table.name].indexes}
    ddl_if = getattr(declared.get(diff[1].name), "_ddl_if", None)
    return ddl_if is not None and ddl_if.dialect == "postgresql"


def _is_guid_type_change(diff) -> bool:
    from advanced_alchemy.types import GUID

    change = diff[0] if isinstance(diff, list) else diff
    return change[0] == "modify_type" and isinstance(change[-1], GUID)


async def test_upgrade_downgrade_upgrade_without_drift(empty_database_url):
    config = make_db_config(_base_settings(database_url=empty_database_url))
    await to_thread.run_sync(upgrade_database, config)
    assert await _tables(empty_database_url) == set(metadata.tables)
    assert await _drift(empty_database_url) == []

    await to_thread.run_sync(downgrade_database, config, "base")
    assert await _tables(empty_database_url) == set()

    await to_thread.run_sync(upgrade_database, config)
    assert await _tables(empty_database_url) == set(metadata.tables)
    assert await _drift(empty_database_url) == []
    await config.get_engine().dispose()


async def test_start_up_applies_pending_migrations(empty_database_url, make_client):
    async with make_client(database_url=empty_database_url, auto_migrate=True) as client:
        assert (await client.get("/api/healthchecker")).json()["database"] == "ok"
    assert await _tables(empty_database_url) == set(metadata.tables)
    engine = create_async_engine(empty_database_url)
    async with engine.connect() as conn:
        head = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    await engine.dispose()
    assert head


@pytest.mark.skipif(not ON_POSTGRES, reason="the advisory lock exists on PostgreSQL only")
async def test_replicas_starting_together_migrate_once(empty_database_url):
    """Replicas wait on the migration lock, then all start: one migrates, the others find nothing to do."""
    import asyncio
    import os
    import sys

    from app.db import MIGRATION_LOCK_KEY

    code = (
        "from app.db import make_db_config, upgrade_database; from app.config import get_settings; "
        "upgrade_database(make_db_config(get_settings()))"
    )
    env = {**os.environ, "DATABASE_URL": empty_database_url, "SECRET_KEY": "k" * 40}
    holder = create_async_engine(empty_database_url)
    async with holder.connect() as conn:
        # Hold the lock as a slow replica would; separate processes, as replicas are.
        await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, env=env, stderr=asyncio.subprocess.PIPE
            )
            for _ in range(3)
        ]
        waiting = 0
        for _ in range(300):
            waiting = (
                await conn.execute(
                    text("SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND NOT granted")
                )
            ).scalar_one()
            if waiting == 3 or any(p.returncode is not None for p in procs):
                break
            await asyncio.sleep(0.1)
        assert waiting == 3, "the replicas did not queue on the migration lock"
        assert await _tables(empty_database_url) == set()
        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        results = await asyncio.gather(*(p.communicate() for p in procs))
    await holder.dispose()
    assert [p.returncode for p in procs] == [0, 0, 0], [r[1].decode()[-500:] for r in results]
    assert await _tables(empty_database_url) == set(metadata.tables)


async def test_0006_gives_existing_contacts_cards_uids_names_and_sequence_numbers(empty_database_url):
    """Rows from before the cards get a vCard of their fields, and each owner a change counter."""
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa
    from advanced_alchemy.types import GUID, DateTimeUTC

    from app.contacts.cards import parse_card

    config = make_db_config(_base_settings(database_url=empty_database_url))
    await to_thread.run_sync(upgrade_database, config, "0005")
    users = sa.table(
        "users",
        *(sa.column(name) for name in ("username", "email", "password_hash", "avatar_url")),
        sa.column("id", GUID(length=16)),
        sa.column("created_at", DateTimeUTC(timezone=True)),
        sa.column("updated_at", DateTimeUTC(timezone=True)),
    )
    contacts = sa.table(
        "contacts",
        *(
            sa.column(name)
            for name in (
                "first_name",
                "last_name",
                "email",
                "phone_number",
                "first_name_search",
                "last_name_search",
                "version",
            )
        ),
        sa.column("id", GUID(length=16)),
        sa.column("owner_id", GUID(length=16)),
        sa.column("birthday", sa.Date),
        sa.column("created_at", DateTimeUTC(timezone=True)),
        sa.column("updated_at", DateTimeUTC(timezone=True)),
    )
    now = datetime.now(UTC)
    owners = [uuid.uuid4(), uuid.uuid4()]
    ids = [uuid.uuid4() for _ in range(3)]
    engine = create_async_engine(empty_database_url)
    async with engine.begin() as conn:
        for n, owner in enumerate(owners):
            await conn.execute(
                users.insert().values(
                    id=owner,
                    username=f"u{n}",
                    email=f"u{n}@example.com",
                    password_hash="x",
                    avatar_url="x",
                    created_at=now,
                    updated_at=now,
                )
            )
        for n, (contact_id, owner) in enumerate(zip(ids, [owners[0], owners[0], owners[1]], strict=True)):
            await conn.execute(
                contacts.insert().values(
                    id=contact_id,
                    owner_id=owner,
                    first_name=f"Old{n}",
                    last_name="Row",
                    email=f"o{n}@example.com",
                    phone_number="+380501234567",
                    first_name_search=f"old{n}",
                    last_name_search="row",
                    version=1,
                    birthday=None if n else datetime(1990, 5, 17).date(),
                    created_at=now + timedelta(seconds=n),
                    updated_at=now,
                )
            )
    await to_thread.run_sync(upgrade_database, config)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT card, uid, dav_name, sync_seq FROM contacts ORDER BY created_at"))
        ).all()
        counters = sorted(row[0] for row in (await conn.execute(text("SELECT seq FROM contact_sync"))).all())
    await engine.dispose()
    await config.get_engine().dispose()
    assert [row.sync_seq for row in rows] == [1, 2, 1]
    assert counters == [1, 2]
    for contact_id, row in zip(ids, rows, strict=True):
        assert row.uid == f"urn:uuid:{contact_id}"
        assert row.dav_name == f"{contact_id}.vcf"
        card = parse_card(row.card)
        assert card.uid == row.uid
        assert card.version == "4.0"
    assert parse_card(rows[0].card).fields() == {
        "first_name": "Old0",
        "last_name": "Row",
        "email": "o0@example.com",
        "phone_number": "+380501234567",
        "birthday": datetime(1990, 5, 17).date(),
        "additional_data": None,
    }
