"""The direct pool (:class:`app.db.DirectPool`): the driver path, its errors, its transactions."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from advanced_alchemy.exceptions import DuplicateKeyError, IntegrityError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.contacts.store import INSERT, ContactStore
from app.db import _is_disconnect
from tests.conftest import ON_POSTGRES

BASE = "/api/contacts"


@pytest.mark.parametrize(
    ("error", "disconnect"),
    [
        (asyncpg.UniqueViolationError("duplicate"), False),  # an SQL error: the connection is fine
        (asyncpg.UndefinedTableError("no table"), False),
        (asyncpg.ConnectionDoesNotExistError("gone"), True),
        (asyncpg.AdminShutdownError("terminating connection"), True),
        (ConnectionResetError(), True),
        # A killed backend's notice can leave the protocol mid-operation: the query was never sent.
        (
            asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
            True,
        ),
        (asyncio.CancelledError(), True),  # a timed-out query may still run on that connection
    ],
)
def test_only_errors_that_break_the_connection_drop_it(error, disconnect):
    assert _is_disconnect(error) is disconnect


@pytest.mark.skipif(not ON_POSTGRES, reason="the driver path is asyncpg's")
async def test_a_read_on_a_killed_connection_is_retried_on_a_fresh_one(client, settings, user):
    created = (
        await client.post(
            f"{BASE}/",
            json={
                "first_name": "A",
                "last_name": "B",
                "email": "a@example.com",
                "phone_number": "+380501234567",
            },
            headers=user.headers,
        )
    ).json()
    url = f"{BASE}/{created['id']}"
    assert (await client.get(url, headers=user.headers)).status_code == 200

    # From a connection of our own (another application name), as an operator would.
    engine = create_async_engine(settings.database_url)
    async with engine.connect() as connection:
        killed = await connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'contacts-api' AND datname = current_database()"
            )
        )
        assert killed.scalar_one() >= 1
    await engine.dispose()
    statuses = [(await client.get(url, headers=user.headers)).status_code for _ in range(3)]
    # The pooled connection the read gets is a dead one: the read is retried on a fresh one.
    assert statuses == [200, 200, 200], statuses


def _new_row(owner_id, email="tx@example.com"):
    values = {"first_name": "Trans", "last_name": "Action", "email": email, "phone_number": "+380501234567"}
    return ContactStore._new_row(owner_id, values | {"birthday": None, "additional_data": None})


async def _total(client, user) -> int:
    response = await client.get(f"{BASE}/", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()["total"]


async def test_a_transaction_keeps_all_of_its_statements_or_none(client, app, user, in_app_loop):
    pool = app.state.direct_pool

    async def two_with_one_email():
        async with pool.transaction() as transaction:
            await transaction.fetch(INSERT, **_new_row(user.id))
            await transaction.fetch(INSERT, **_new_row(user.id))  # the owner has this email now

    with pytest.raises(IntegrityError):  # a DuplicateKeyError where the driver's message tells
        await in_app_loop(two_with_one_email)
    assert await _total(client, user) == 0  # the first insert was rolled back with the second

    async def two():
        async with pool.transaction() as transaction:
            await transaction.fetch(INSERT, **_new_row(user.id))
            await transaction.fetch(INSERT, **_new_row(user.id, "other@example.com"))

    await in_app_loop(two)
    assert await _total(client, user) == 2


async def test_a_write_that_breaks_a_constraint_is_an_integrity_error(client, app, user, in_app_loop):
    with pytest.raises(IntegrityError) as caught:
        await in_app_loop(
            lambda: app.state.direct_pool.write(INSERT, **_new_row(uuid.uuid4()))
        )  # no such owner
    assert not isinstance(caught.value, DuplicateKeyError)
    assert await _total(client, user) == 0


@pytest.mark.skipif(not ON_POSTGRES, reason="the direct pool has asyncpg connections on PostgreSQL only")
async def test_query_loggers_see_the_pools_statements_while_registered(client, app, user, queries):
    pool = app.state.direct_pool
    assert await _total(client, user) == 0  # the user is cached from now on
    queries.reset()
    seen = []
    pool.add_query_logger(seen.append)
    assert await _total(client, user) == 0
    pool.remove_query_logger(seen.append)
    assert await _total(client, user) == 0
    assert len(seen) == 1, seen
    assert "FROM contacts" in seen[0].query
    assert queries.count == 2  # the fixture's logger stayed
