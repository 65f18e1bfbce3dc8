"""Reads on the pool (:class:`app.db.Database`): the driver path and what it does on errors."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

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


async def test_the_session_book_and_the_pool_book_agree(client, app, user, in_app_loop):
    """The same rules over an ORM session (ContactService) and over the pool (the endpoints)."""
    from app.contacts.schemas import ContactCreate
    from app.contacts.service import ContactService

    async def through_a_session():
        async with app.state.db_config.get_session() as session:
            service = ContactService(session, app.state.settings)
            data = ContactCreate(
                first_name="Ses", last_name="Sion", email="ses@example.com", phone_number="+380501234567"
            )
            contact, tag = await service.add_contact(user.id, data)
            changed, new_tag = await service.patch_contact(
                user.id, contact.id, _patch("Changed"), if_match=tag
            )
            return contact.id, changed.first_name, new_tag

    contact_id, first_name, tag = await in_app_loop(through_a_session)
    response = await client.get(f"{BASE}/{contact_id}", headers=user.headers)
    assert response.status_code == 200  # committed by the session path, read by the pool path
    assert (
        (response.json()["first_name"], response.headers["etag"]) == (first_name, tag) == ("Changed", '"v2"')
    )


def _patch(first_name):
    from app.contacts.schemas import ContactUpdate

    return ContactUpdate(first_name=first_name)
