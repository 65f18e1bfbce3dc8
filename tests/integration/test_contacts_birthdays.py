"""The birthday window: HTTP behaviour, and the SQL query against a plain model of the rule."""

from __future__ import annotations

import asyncio
import calendar
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from app.contacts.cards import new_card
from app.contacts.models import ContactRow, derived_columns
from app.contacts.store import ContactStore
from app.db import DirectPool
from app.users.models import User

BASE = "/api/contacts"


# --------------------------------------------------------------------------- the rule, plainly


def celebrates(born: date, day: date) -> bool:
    """Whether someone born on ``born`` has their birthday on ``day``."""
    if (day.month, day.day) == (born.month, born.day):
        return True
    return (
        (born.month, born.day) == (2, 29)
        and (day.month, day.day) == (2, 28)
        and not calendar.isleap(day.year)
    )


def model(people: dict[uuid.UUID, date | None], today: date, days: int) -> dict[uuid.UUID, date]:
    """Walk the window day by day: each person's first birthday in it."""
    found: dict[uuid.UUID, date] = {}
    for offset in range(days + 1):
        day = today + timedelta(days=offset)
        for pid, born in people.items():
            if born is not None and pid not in found and celebrates(born, day):
                found[pid] = day
    return found


# --------------------------------------------------------------------------- HTTP


def _born(day: date, years: int = 30) -> str:
    year = day.year - years
    if (day.month, day.day) == (2, 29) and not calendar.isleap(year):
        year -= 2 if calendar.isleap(year - 2) else 1
    return date(year, day.month, day.day).isoformat()


async def _add(client, user, i: int, birthday: str | None) -> dict:
    response = await client.post(
        f"{BASE}/",
        json={
            "first_name": f"P{i}",
            "last_name": "Born",
            "email": f"p{i}@example.com",
            "phone_number": "+380501234567",
            "birthday": birthday,
        },
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_default_window_is_seven_days_soonest_first(client, user):
    today = datetime.now(UTC).date()
    offsets = [8, 3, 0, 7, -1, 1]
    made = {
        (await _add(client, user, i, _born(today + timedelta(days=off))))["id"]: off
        for i, off in enumerate(offsets)
    }
    await _add(client, user, 99, None)
    response = await client.get(f"{BASE}/birthdays", headers=user.headers)
    assert response.status_code == 200
    items = response.json()
    assert [made[c["id"]] for c in items] == [0, 1, 3, 7]
    first = items[0]
    assert first["next_birthday"] == today.isoformat()
    assert set(first) >= {
        "id",
        "first_name",
        "last_name",
        "email",
        "phone_number",
        "birthday",
        "next_birthday",
    }
    assert [c["next_birthday"] for c in items] == sorted(c["next_birthday"] for c in items)


async def test_days_zero_is_today_only_and_365_is_a_whole_year(client, user):
    today = datetime.now(UTC).date()
    for i, off in enumerate([0, 1, 200, 364]):
        await _add(client, user, i, _born(today + timedelta(days=off)))
    today_only = (await client.get(f"{BASE}/birthdays", params={"days": 0}, headers=user.headers)).json()
    assert [c["next_birthday"] for c in today_only] == [today.isoformat()]
    year = (await client.get(f"{BASE}/birthdays", params={"days": 365}, headers=user.headers)).json()
    assert len(year) == 4


@pytest.mark.parametrize("days", ["-1", "366", "x", "1.5"])
async def test_days_out_of_range_is_400(client, user, days):
    response = await client.get(f"{BASE}/birthdays", params={"days": days}, headers=user.headers)
    assert response.status_code == 400
    assert "days" in response.text


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12"])
async def test_today_is_taken_in_the_configured_time_zone(make_client, user_factory, zone):
    async with make_client(timezone=zone) as client:
        local_today = datetime.now(ZoneInfo(zone)).date()
        # Users live in the database, so the fixture's users work with this app too.
        user = await user_factory()
        await _add(client, user, 1, _born(local_today))
        await _add(client, user, 2, _born(local_today - timedelta(days=1)))
        items = (await client.get(f"{BASE}/birthdays", params={"days": 0}, headers=user.headers)).json()
        assert [c["next_birthday"] for c in items] == [local_today.isoformat()]


# --------------------------------------------------------------------------- the query against the model


BIRTHDAYS = [
    date(2000, 2, 28),
    date(2000, 2, 29),
    date(1996, 2, 29),
    date(2001, 3, 1),
    date(1990, 12, 31),
    date(1991, 1, 1),
    date(1985, 12, 24),
    date(1985, 1, 8),
    date(1970, 6, 15),
    None,
]


class Book:
    """Contacts inserted once (with an event loop of their own), queried for many "today"s."""

    def __init__(self, url: str, settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = create_async_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.settings = settings
        self.owner = uuid.uuid4()
        self.people: dict[uuid.UUID, date | None] = {}
        self.run(self._fill())
        self.pool = DirectPool(self.engine)
        self.run(self.pool.open())
        self.store = ContactStore(self.pool, settings)

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _fill(self) -> None:
        other = uuid.uuid4()
        async with self.sessions() as session:
            for uid in (self.owner, other):
                session.add(
                    User(
                        id=uid,
                        username=f"b{uid.hex[:8]}",
                        email=f"{uid.hex[:8]}@example.com",
                        password_hash="x",
                        avatar_url="x",
                    )
                )
            await session.flush()
            rows = []
            for owner in (self.owner, other):
                for i, born in enumerate(BIRTHDAYS):
                    cid = uuid.uuid4()
                    if owner == self.owner:
                        self.people[cid] = born
                    rows.append(
                        derived_columns(
                            {
                                "id": cid,
                                "owner_id": owner,
                                "first_name": f"F{i}",
                                "last_name": f"L{i}",
                                "email": f"{i}@example.com",
                                "phone_number": "+380501234567",
                                "birthday": born,
                                "card": new_card(f"urn:uuid:{cid}", {"first_name": f"F{i}"}),
                                "uid": str(cid),
                                "dav_name": f"{cid}.vcf",
                            }
                        )
                    )
            await session.execute(insert(ContactRow), rows)
            await session.commit()

    def query(self, today: date, days: int) -> list[tuple[uuid.UUID, date]]:
        async def go():
            items = await self.store.upcoming_birthdays(self.owner, days, today=today)
            return [(item.id, item.next_birthday) for item in items]

        return self.run(go())

    def check(self, today: date, days: int) -> None:
        got = self.query(today, days)
        expected = model(self.people, today, days)
        assert dict(got) == expected, (today, days)
        assert len(got) == len(expected), "a contact was listed twice"
        assert [d for _, d in got] == sorted(d for _, d in got), (today, days)

    def close(self) -> None:
        self.run(self.pool.close())
        self.run(self.engine.dispose())
        self.loop.close()


@pytest.fixture
def book(settings):
    book = Book(settings.database_url, settings)
    yield book
    book.close()


@pytest.mark.parametrize("year", [2023, 2024])
def test_every_day_of_a_common_and_a_leap_year(book, year):
    day = date(year, 1, 1)
    while day.year == year:
        for days in (0, 1, 7):
            book.check(day, days)
        day += timedelta(days=1)
    for month_day in ((2, 28), (3, 1), (12, 31), (1, 1)):
        book.check(date(year, *month_day), 365)
        book.check(date(year, *month_day), 364)
    if calendar.isleap(year):
        book.check(date(year, 2, 29), 365)


def _around(month: int, day: int, before: int, after: int):
    def build(year: int) -> list[date]:
        centre = date(year, month, day)
        return [centre + timedelta(days=k) for k in range(-before, after + 1)]

    return st.integers(2019, 2030).flatmap(lambda y: st.sampled_from(build(y)))


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    today=st.one_of(
        _around(12, 31, 7, 8), _around(2, 28, 2, 3), st.dates(date(2019, 1, 1), date(2030, 12, 31))
    ),
    days=st.one_of(st.integers(0, 10), st.integers(0, 365), st.sampled_from([0, 1, 59, 60, 364, 365])),
)
def test_window_matches_the_model(book, today, days):
    book.check(today, days)
