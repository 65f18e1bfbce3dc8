"""``GET /api/users/me/export``: the account's data as a zip, streamed, per user, rate limited."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
import tracemalloc
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import anyio
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from moto.server import ThreadedMotoServer

from app import cache
from app.contacts.controller import contact_store
from app.contacts.store import EXPORT_BATCH
from app.export.service import ExportService
from app.users.app_passwords import AppPasswordService
from app.users.deps import user_service_on
from app.users.models import User
from tests import images, s3
from tests.browser.conftest import live_server  # noqa: F401 - the fixture: the app on a real socket
from tests.conftest import TestUser

PATH = "/api/users/me/export"
InAppLoop = Callable[..., Awaitable[Any]]
UserFactory = Callable[..., Awaitable[TestUser]]
MEMBERS = ["account.json", "contacts.vcf", "contacts.csv"]


def archive(response: Any) -> zipfile.ZipFile:
    """The zip of a successful export answer, after checking its headers."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    today = datetime.now(UTC).date().isoformat()
    assert (
        response.headers["content-disposition"] == f'attachment; filename="contacts-api-export-{today}.zip"'
    )
    assert response.headers["cache-control"] == "no-store"
    assert "content-length" not in response.headers  # streamed: its length is known only at the end
    zipped = zipfile.ZipFile(io.BytesIO(response.content))
    assert zipped.testzip() is None  # every member's CRC checks out
    return zipped


async def add_contacts(client: AsyncTestClient[Litestar], user: TestUser, *names: str) -> None:
    for index, name in enumerate(names):
        created = await client.post(
            "/api/contacts/",
            json={
                "first_name": name,
                "last_name": "Lovelace",
                "email": f"{name.lower()}-{index}@{user.username.replace('_', '-')}.example.com",
                "phone_number": f"+3805012345{index:02d}",
                "additional_data": "=1+2, a formula, and a line\nbreak",
            },
            headers=user.headers,
        )
        assert created.status_code == 201, created.text


async def import_contacts(client: AsyncTestClient[Litestar], user: TestUser, count: int) -> None:
    lines = ["first_name,last_name,email,phone_number,additional_data"] + [
        f"N{i},L{i},n{i}@example.com,+38050{i:07d},{'note ' * 20}" for i in range(count)
    ]
    response = await client.post(
        "/api/contacts/import",
        files={"file": ("book.csv", "\n".join(lines).encode(), "text/csv")},
        headers=user.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["created"] == count


async def login(client: AsyncTestClient[Litestar], user: TestUser) -> dict[str, Any]:
    response = await client.post("/api/auth/login", data={"username": user.email, "password": user.password})
    assert response.status_code == 200
    return response.json()


# --------------------------------------------------------------------------- what the zip holds


async def test_every_member_is_the_accounts_data(
    client: AsyncTestClient[Litestar], admin: TestUser, user_factory: UserFactory
) -> None:
    avatar = images.png(64, 64)
    uploaded = await client.patch(
        "/api/users/avatar", files={"file": ("me.png", avatar, "image/png")}, headers=admin.headers
    )
    assert uploaded.status_code == 200
    await add_contacts(client, admin, "Ada", "Grace", "Zoë")
    await login(client, admin)  # a second session
    phone = await client.post("/api/users/me/app-passwords", json={"name": "Phone"}, headers=admin.headers)
    assert phone.status_code == 201
    me = (await client.get("/api/users/me", headers=admin.headers)).json()

    zipped = archive(await client.get(PATH, headers=admin.headers))

    assert zipped.namelist() == [*MEMBERS, "avatar.png"]
    account = json.loads(zipped.read("account.json"))
    assert account["format"] == "contacts-api-export/1"
    assert account["user"] == {**me, "updated_at": account["user"]["updated_at"]}
    assert len(account["sessions"]) == 2
    assert str(admin.session_id) in {s["id"] for s in account["sessions"]}
    assert {"id", "created_at", "expires_at", "revoked_at"} <= set(account["sessions"][0])
    assert {"user_agent", "ip", "last_used_at"} <= set(account["sessions"][0])
    assert "refresh_token_hash" not in zipped.read("account.json").decode()
    assert [(p["id"], p["name"]) for p in account["app_passwords"]] == [(phone.json()["id"], "Phone")]
    assert set(account["app_passwords"][0]) == {"id", "name", "created_at", "last_used_at"}
    everything = b"".join(zipped.read(name) for name in zipped.namelist())
    assert phone.json()["password"].encode() not in everything
    assert set(account["files"]) == {"contacts.vcf", "contacts.csv", "avatar.png"}
    # The contacts exactly as the contacts export writes them.
    vcards = await client.get("/api/contacts/export", headers=admin.headers)
    rows = await client.get("/api/contacts/export", params={"format": "csv"}, headers=admin.headers)
    assert zipped.read("contacts.vcf") == vcards.content
    assert zipped.read("contacts.csv") == rows.content
    assert zipped.read("contacts.vcf").count(b"BEGIN:VCARD") == 3
    assert "Zoë".encode() in zipped.read("contacts.vcf")
    assert b"'=1+2" in zipped.read("contacts.csv")  # defused as in the CSV export
    assert zipped.read("avatar.png") == avatar


async def test_another_users_data_is_absent(
    client: AsyncTestClient[Litestar], user_factory: UserFactory
) -> None:
    mine, theirs = await user_factory(), await user_factory()
    await add_contacts(client, mine, "Mine")
    await add_contacts(client, theirs, "Theirs", "Secret")

    zipped = archive(await client.get(PATH, headers=mine.headers))

    everything = b"".join(zipped.read(name) for name in zipped.namelist())
    assert b"Mine" in everything
    for trace in (b"Theirs", b"Secret", theirs.email.encode(), str(theirs.id).encode()):
        assert trace not in everything
    assert str(theirs.session_id).encode() not in everything
    account = json.loads(zipped.read("account.json"))
    assert [s["id"] for s in account["sessions"]] == [str(mine.session_id)]


async def test_an_empty_account_without_a_stored_avatar(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    zipped = archive(await client.get(PATH, headers=user.headers))

    assert zipped.namelist() == MEMBERS  # a Gravatar is a URL, not a file of ours
    assert zipped.read("contacts.vcf") == b""
    assert zipped.read("contacts.csv").decode().splitlines() == [
        "id,first_name,last_name,email,phone_number,birthday,additional_data,created_at,updated_at"
    ]
    account = json.loads(zipped.read("account.json"))
    assert account["user"]["avatar_url"] == "https://www.gravatar.com/avatar/x"


@pytest.mark.skipif(shutil.which("unzip") is None, reason="no unzip on this machine")
async def test_info_zip_reads_the_archive(
    client: AsyncTestClient[Litestar], user: TestUser, tmp_path: Any
) -> None:
    await add_contacts(client, user, "Ada")
    response = await client.get(PATH, headers=user.headers)
    path = tmp_path / "export.zip"
    path.write_bytes(response.content)

    tested = await anyio.run_process(["unzip", "-t", str(path)], check=False)

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert b"No errors detected" in tested.stdout


async def test_the_export_needs_a_token(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.get(PATH)).status_code == 401


# --------------------------------------------------------------------------- streamed, not built in memory


async def _export_watched(app: Litestar, user_id: UUID) -> tuple[list[int], list[int], int, int]:
    """Run one export's body on the app's loop.

    Returns the batches of contacts (cards, then rows) read when each chunk came out, each
    chunk's size, the batches read in all, and the peak of memory traced while the body ran.
    """
    store = contact_store(app.state)
    batches_read = 0

    def counted(read: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def reading(owner_id: UUID, batch: int = EXPORT_BATCH) -> AsyncIterator[Any]:
            nonlocal batches_read
            async for rows in read(owner_id, batch):
                batches_read += 1
                yield rows

        return reading

    async with app.state.db_config.get_session() as session:
        service = ExportService(
            users=user_service_on(session, app),
            app_passwords=AppPasswordService(session, app.stores.get(cache.USER_CACHE)),
            contacts=store,
            storage=app.state.avatar_storage,
        )
        export = await service.prepare(user_id)
    export.contacts = _Counting(counted(store.card_batches), counted(store.export_batches))  # type: ignore[assignment]
    read_at, sizes = [], []
    tracemalloc.start()
    try:
        async for chunk in export.chunks():
            read_at.append(batches_read)
            sizes.append(len(chunk))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return read_at, sizes, batches_read, peak


class _Counting:
    """The contacts store's two batch readers, counted."""

    def __init__(
        self,
        card_batches: Callable[..., AsyncIterator[Any]],
        export_batches: Callable[..., AsyncIterator[Any]],
    ) -> None:
        self.card_batches = card_batches
        self.export_batches = export_batches


async def test_the_zip_streams_while_the_book_is_read_and_memory_stays_flat(
    client: AsyncTestClient[Litestar], user_factory: UserFactory, app: Litestar, in_app_loop: InAppLoop
) -> None:
    small, large = await user_factory(), await user_factory()
    await import_contacts(client, small, 1000)
    await import_contacts(client, large, 5000)

    read_at, sizes, batches, large_peak = await in_app_loop(_export_watched, app, large.id)
    *_, small_peak = await in_app_loop(_export_watched, app, small.id)

    per_member = -(-5000 // EXPORT_BATCH)
    assert batches == 2 * per_member  # the vCards, then the CSV
    # Bytes went out after the first batch and between every later one: the archive is sent
    # as the book is read, not once it has all been read.
    assert read_at[1] <= 1
    # (zlib keeps a little back, so not every batch makes bytes at once: most do.)
    assert len(set(read_at)) > batches / 2
    assert max(sizes) < sum(sizes) / 8
    # Five times the book, about the same memory: one batch and zlib's window (measured: 1.4 MB
    # for 1,000 contacts, 1.7 MB for 5,000).
    assert large_peak < small_peak * 1.5 + 512 * 1024, (small_peak, large_peak)


async def test_the_streamed_body_unzips_whole(
    client: AsyncTestClient[Litestar], user_factory: UserFactory
) -> None:
    user = await user_factory()
    await import_contacts(client, user, 1201)

    zipped = archive(await client.get(PATH, headers=user.headers))

    assert zipped.read("contacts.vcf").count(b"BEGIN:VCARD") == 1201
    assert len(zipped.read("contacts.csv").decode().splitlines()) == 1202


# --------------------------------------------------------------------------- rate limit


async def test_a_few_exports_an_hour_per_user(
    make_client: Callable[..., AsyncTestClient[Litestar]], user_factory: UserFactory
) -> None:
    alice, bob = await user_factory(), await user_factory()
    async with make_client(rate_limit_enabled=True, rate_limit_export_per_hour=2) as client:
        assert (await client.get(PATH, headers=alice.headers)).status_code == 200
        assert (await client.get(PATH, headers=alice.headers)).status_code == 200

        refused = await client.get(PATH, headers=alice.headers)

        assert refused.status_code == 429
        assert refused.json()["status_code"] == 429
        assert 60 < int(refused.headers["retry-after"]) <= 3600
        # Another user, from the same address, has an allowance of their own.
        assert (await client.get(PATH, headers=bob.headers)).status_code == 200


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="module")
def moto_server() -> Iterator[ThreadedMotoServer]:
    """One moto server for the module."""
    yield from s3.serving()


async def test_an_avatar_in_the_bucket_is_in_the_zip(
    make_client: Callable[..., AsyncTestClient[Litestar]], moto_server: ThreadedMotoServer, admin: TestUser
) -> None:
    bucket = s3.new_bucket(moto_server)
    avatar = images.jpeg(64, 64)
    async with make_client(**bucket.settings()) as client:
        uploaded = await client.patch(
            "/api/users/avatar", files={"file": ("me.jpg", avatar, "image/jpeg")}, headers=admin.headers
        )
        assert uploaded.status_code == 200

        zipped = archive(await client.get(PATH, headers=admin.headers))

    assert zipped.namelist() == [*MEMBERS, "avatar.jpg"]
    assert zipped.read("avatar.jpg") == avatar


async def test_a_client_asking_for_generic_binary_gets_the_same_zip(
    client: AsyncTestClient[Litestar], user: TestUser
) -> None:
    response = await client.get(PATH, headers={**user.headers, "Accept": "application/octet-stream"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert zipfile.ZipFile(io.BytesIO(response.content)).namelist() == MEMBERS
    anything = await client.get(PATH, headers={**user.headers, "Accept": "*/*"})
    assert anything.headers["content-type"] == "application/zip"


async def test_an_unreachable_bucket_is_a_502_before_any_byte(
    make_client: Callable[..., AsyncTestClient[Litestar]], user: TestUser, in_app_loop: InAppLoop
) -> None:
    dead = {"avatar_storage": "s3", "s3_bucket": "avatars", "s3_endpoint_url": "http://127.0.0.1:9"}
    async with make_client(**dead) as client:
        url = f"{client.app.state.avatar_storage.base_url}avatars/{user.id}-0123456789abcdef.png"
        await asyncio.to_thread(client.blocking_portal.call, _set_avatar_url, client.app, user.id, url)

        response = await client.get(PATH, headers=user.headers)

    assert response.status_code == 502
    assert response.json()["detail"] == "The avatar could not be read"


async def _set_avatar_url(app: Litestar, user_id: UUID, url: str) -> None:
    async with app.state.db_config.get_session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.avatar_url = url
        await session.commit()


async def test_over_a_socket_the_first_bytes_come_long_before_the_last(
    live_server: Any,  # noqa: F811 - the fixture imported above
    user_factory: UserFactory,
) -> None:
    user = await user_factory()
    async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as http:
        lines = ["first_name,last_name,email,phone_number"] + [
            f"N{i},L{i},n{i}@example.com,+38050{i:07d}" for i in range(5000)
        ]
        imported = await http.post(
            "/api/contacts/import",
            files={"file": ("book.csv", "\n".join(lines).encode(), "text/csv")},
            headers=user.headers,
        )
        assert imported.status_code == 200, imported.text
        arrivals: list[tuple[float, int]] = []
        started = time.monotonic()
        async with http.stream("GET", PATH, headers=user.headers) as response:
            assert response.status_code == 200
            assert response.headers["transfer-encoding"] == "chunked"
            body = bytearray()
            async for piece in response.aiter_raw():
                arrivals.append((time.monotonic() - started, len(piece)))
                body += piece

    zipped = zipfile.ZipFile(io.BytesIO(bytes(body)))
    assert zipped.read("contacts.vcf").count(b"BEGIN:VCARD") == 5000
    # The archive came in many pieces, the first of them while most of it was still being made.
    assert len(arrivals) >= 10, arrivals
    first, last = arrivals[0][0], arrivals[-1][0]
    assert first < last / 2, arrivals


async def test_the_full_cards_are_in_the_zip(client: AsyncTestClient[Litestar], user: TestUser) -> None:
    card = (
        "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Ada Lovelace\r\nN:Lovelace;Ada;;;\r\n"
        "EMAIL:ada@example.com\r\nTEL:+44 20 7946 0018\r\nORG:Analytical Engines\r\n"
        "X-NOTEBOOK:Note G\r\nEND:VCARD\r\n"
    )
    imported = await client.post(
        "/api/contacts/import", files={"file": ("ada.vcf", card.encode(), "text/vcard")}, headers=user.headers
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["created"] == 1

    zipped = archive(await client.get(PATH, headers=user.headers))

    cards = zipped.read("contacts.vcf")
    # What the JSON fields do not show is there too: the card is exported whole.
    assert b"ORG:Analytical Engines" in cards
    assert b"X-NOTEBOOK:Note G" in cards
    assert b"Lovelace" in zipped.read("contacts.csv")
