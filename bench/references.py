"""The one-query references: the least any implementation of a read or a write must do.

Two bare Litestar routes on an asyncpg pool, served like the real app (bench/run.py starts them
with the same uvicorn settings), over the database the benchmark seeded:

* ``GET /one-row/{contact_id}``: one ``SELECT`` of a contact by id and owner, JSON out;
* ``POST /one-insert``: one ``INSERT`` of the contact in the JSON body, committed, JSON out.

No auth, no cache, no validation beyond decoding: what is left of a real endpoint's time above
these is its own overhead (issue 18). ``DATABASE_URL`` names the database, ``OWNER_ID`` the
seeded user whose book is read, ``WRITE_OWNER_ID`` the one written to, ``DB_POOL_SIZE`` the pool (the app's default).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, date, datetime

import asyncpg
import msgspec
from litestar import Litestar, Response, get, post
from litestar.datastructures import State

DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/contacts_bench").replace(
    "postgresql+asyncpg://", "postgresql://"
)
OWNER_ID = uuid.UUID(os.environ.get("OWNER_ID", "00000000-0000-0000-0000-000000000000"))
#: The inserts go to a book of their own, so the measured book does not grow under the reads.
WRITE_OWNER_ID = uuid.UUID(os.environ.get("WRITE_OWNER_ID", str(OWNER_ID)))
POOL_SIZE = int(os.environ.get("DB_POOL_SIZE", "20"))

#: The columns the app's single-contact read returns.
COLUMNS = "id, first_name, last_name, email, phone_number, birthday, additional_data, created_at, updated_at"
SELECT_ONE = f"SELECT {COLUMNS} FROM contacts WHERE id = $1 AND owner_id = $2"
INSERT_ONE = (
    "INSERT INTO contacts (id, owner_id, first_name, last_name, email, phone_number, birthday,"
    " additional_data, first_name_search, last_name_search, birthday_md, version, created_at, updated_at)"
    f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $12) RETURNING {COLUMNS}"
)


class ContactIn(msgspec.Struct):
    """The body of ``POST /one-insert`` (the app's create body)."""

    first_name: str
    last_name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    birthday: date | None = None
    additional_data: str | None = None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ContactIn).decode


async def open_pool(app: Litestar) -> None:
    """Open the pool before the first request."""
    app.state.pool = await asyncpg.create_pool(DSN, min_size=POOL_SIZE, max_size=POOL_SIZE)


async def close_pool(app: Litestar) -> None:
    """Close the pool at shutdown."""
    await app.state.pool.close()


def _as_json(row: asyncpg.Record) -> Response[bytes]:
    return Response(_encode(dict(row.items())), media_type="application/json")


@get("/one-row/{contact_id:uuid}")
async def one_row(contact_id: uuid.UUID, state: State) -> Response[bytes]:
    """One ``SELECT`` by id and owner, the row as JSON."""
    row = await state.pool.fetchrow(SELECT_ONE, contact_id, OWNER_ID)
    if row is None:
        return Response(b'{"detail":"Not found"}', status_code=404, media_type="application/json")
    return _as_json(row)


@post("/one-insert")
async def one_insert(body: bytes, state: State) -> Response[bytes]:
    """One ``INSERT`` of the decoded body, committed (autocommit), the row as JSON."""
    data = _decode(body)
    born = data.birthday
    row = await state.pool.fetchrow(
        INSERT_ONE,
        uuid.uuid4(),
        WRITE_OWNER_ID,
        data.first_name,
        data.last_name,
        data.email,
        data.phone_number,
        born,
        data.additional_data,
        data.first_name.casefold(),
        (data.last_name or "").casefold(),
        None if born is None else born.month * 100 + born.day,
        datetime.now(UTC),
    )
    response = _as_json(row)
    response.status_code = 201
    return response


@get("/")
async def ready() -> dict[str, str]:
    """Readiness for bench/run.py."""
    return {"status": "ok"}


app = Litestar(route_handlers=[one_row, one_insert, ready], on_startup=[open_pool], on_shutdown=[close_pool])
