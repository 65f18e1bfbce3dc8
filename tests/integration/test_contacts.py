# ruff: noqa: RUF001 - Cyrillic names are the point of these tests
"""Contacts CRUD, search, paging, validation, ETags and owner isolation, through HTTP."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import create_async_engine

from app.contacts.models import ContactRow

BASE = "/api/contacts"


def body(**overrides):
    data = {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone_number": "+380 50 123 4567",
        "birthday": "1815-12-10",
        "additional_data": "Analyst",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


async def create(client, user, **overrides):
    response = await client.post(f"{BASE}/", json=body(**overrides), headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
async def db(settings):
    """An engine of the test's own (the app's pooled connections belong to the app's loop)."""
    engine = create_async_engine(settings.database_url)
    yield engine
    await engine.dispose()


async def count_rows(db, **where):
    statement = select(func.count()).select_from(ContactRow)
    for key, value in where.items():
        statement = statement.where(getattr(ContactRow, key) == value)
    async with db.connect() as conn:
        return (await conn.execute(statement)).scalar_one()


# --------------------------------------------------------------------------- create


async def test_create_returns_the_normalised_contact(client, user):
    response = await client.post(
        f"{BASE}/",
        json=body(
            first_name="  Ada ",
            last_name=" Lovelace  ",
            email="  Ada@Example.COM ",
            phone_number="050 123 45 67",
        ),
        headers=user.headers,
    )
    assert response.status_code == 201
    data = response.json()
    assert data["first_name"] == "Ada"
    assert data["last_name"] == "Lovelace"
    assert data["email"] == "ada@example.com"
    assert data["phone_number"] == "+380501234567"
    assert data["birthday"] == "1815-12-10"
    assert data["additional_data"] == "Analyst"
    assert set(data) == {
        "id",
        "first_name",
        "last_name",
        "email",
        "phone_number",
        "birthday",
        "additional_data",
        "created_at",
        "updated_at",
    }
    assert data["created_at"].endswith(("Z", "+00:00"))
    assert response.headers["etag"]
    uuid.UUID(data["id"])


async def test_create_with_only_required_fields(client, user):
    data = await create(client, user, birthday=..., additional_data=...)
    assert data["birthday"] is None
    assert data["additional_data"] is None


async def test_phone_with_country_code_is_e164_and_odd_numbers_keep_their_digits(client, user):
    assert (await create(client, user, phone_number="+1 (650) 253-0000"))["phone_number"] == "+16502530000"
    odd = await create(client, user, email="b@example.com", phone_number="+999 123-4567")
    assert odd["phone_number"] == "+9991234567"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("first_name", ""),
        ("first_name", "   "),
        ("first_name", "x" * 51),
        ("last_name", ""),
        ("last_name", "y" * 51),
        ("first_name", None),
        ("first_name", 42),
        ("email", "not-an-email"),
        ("email", "a@b"),
        ("email", "a b@example.com"),
        ("email", "x" * 250 + "@example.com"),
        ("phone_number", "123"),
        ("phone_number", "1" * 21),
        ("phone_number", "+38 050 abc 4567"),
        ("phone_number", "+-() +-()"),
        ("birthday", "2999-01-01"),
        ("birthday", "not-a-date"),
        ("birthday", "1990-02-30"),
        ("additional_data", "z" * 501),
    ],
)
async def test_create_rejects_invalid_fields_naming_them(client, user, db, field, value):
    response = await client.post(f"{BASE}/", json=body(**{field: value}), headers=user.headers)
    assert response.status_code == 400, response.text
    assert field in response.text
    assert response.json()["status_code"] == 400
    assert await count_rows(db) == 0


async def test_birthday_today_is_not_in_the_past(client, user):
    response = await client.post(
        f"{BASE}/", json=body(birthday=date.today().isoformat()), headers=user.headers
    )
    assert response.status_code == 400
    assert response.json()["extra"][0]["key"] == "birthday"


async def test_create_requires_the_first_name(client, user, db):
    response = await client.post(f"{BASE}/", json=body(first_name=...), headers=user.headers)
    assert response.status_code == 400
    assert "first_name" in response.text
    assert await count_rows(db) == 0


@pytest.mark.parametrize("missing", ["last_name", "email", "phone_number"])
async def test_create_without_an_optional_field_stores_null(client, user, missing):
    response = await client.post(f"{BASE}/", json=body(**{missing: ...}), headers=user.headers)
    assert response.status_code == 201, response.text
    assert response.json()[missing] is None
    fetched = await client.get(f"{BASE}/{response.json()['id']}", headers=user.headers)
    assert fetched.json()[missing] is None


async def test_a_first_name_alone_makes_a_contact_and_null_clears_on_patch(client, user):
    response = await client.post(f"{BASE}/", json={"first_name": "Solo"}, headers=user.headers)
    assert response.status_code == 201, response.text
    assert response.json() | {"id": None, "created_at": None, "updated_at": None} == {
        "id": None,
        "first_name": "Solo",
        "last_name": None,
        "email": None,
        "phone_number": None,
        "birthday": None,
        "additional_data": None,
        "created_at": None,
        "updated_at": None,
    }
    second = await client.post(f"{BASE}/", json={"first_name": "Duo"}, headers=user.headers)
    assert second.status_code == 201, "emails are unique only when present"
    made = await client.post(f"{BASE}/", json=body(), headers=user.headers)
    patched = await client.patch(
        f"{BASE}/{made.json()['id']}",
        json={"email": None, "phone_number": None, "last_name": None},
        headers=user.headers,
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["email"], patched.json()["phone_number"], patched.json()["last_name"]) == (
        None,
    ) * 3
    found = await client.get(f"{BASE}/", params={"q": "solo"}, headers=user.headers)
    assert [c["first_name"] for c in found.json()["items"]] == ["Solo"], (
        "a contact without email is searchable"
    )


async def test_unknown_fields_are_rejected(client, user, db):
    response = await client.post(f"{BASE}/", json=body(owner_id=str(uuid.uuid4())), headers=user.headers)
    assert response.status_code == 400
    assert "owner_id" in response.text
    assert await count_rows(db) == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[]", "application/json", 400),
        (b"first_name=Ada", "application/x-www-form-urlencoded", 415),
        (b'{"first_name": "Ada"}', "text/plain", 415),
    ],
)
async def test_broken_bodies_are_4xx(client, user, content, content_type, status):
    response = await client.post(
        f"{BASE}/", content=content, headers={**user.headers, "Content-Type": content_type}
    )
    assert response.status_code == status, response.text


async def test_duplicate_email_is_a_conflict_per_owner_only(client, user, user_factory, db):
    await create(client, user, email="same@example.com")
    again = await client.post(f"{BASE}/", json=body(email="SAME@example.com "), headers=user.headers)
    assert again.status_code == 409
    other = await user_factory()
    assert (
        await client.post(f"{BASE}/", json=body(email="same@example.com"), headers=other.headers)
    ).status_code == 201
    assert await count_rows(db) == 2


async def test_contacts_need_authentication(client):
    for method, path in [
        ("GET", f"{BASE}/"),
        ("POST", f"{BASE}/"),
        ("GET", f"{BASE}/{uuid.uuid4()}"),
        ("GET", f"{BASE}/birthdays"),
        ("GET", f"{BASE}/export"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer")


# --------------------------------------------------------------------------- read


async def test_get_returns_the_contact_with_an_etag(client, user):
    created = await create(client, user)
    response = await client.get(f"{BASE}/{created['id']}", headers=user.headers)
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == '"v1"'


@pytest.mark.parametrize("contact_id", ["nope", "123", "0" * 64, str(uuid.uuid4())])
async def test_missing_or_malformed_id_is_404(client, user, contact_id):
    response = await client.get(f"{BASE}/{contact_id}", headers=user.headers)
    assert response.status_code == 404
    assert response.json()["status_code"] == 404


async def test_single_contact_costs_one_statement(client, user, queries):
    created = await create(client, user)
    await client.get(f"{BASE}/{created['id']}", headers=user.headers)  # warm the user cache
    queries.reset()
    response = await client.get(f"{BASE}/{created['id']}", headers=user.headers)
    assert response.status_code == 200
    assert queries.count == 1, queries.statements


async def test_a_filtered_list_costs_at_most_two_statements(client, user, queries):
    for i in range(3):
        await create(client, user, email=f"c{i}@example.com")
    await client.get(f"{BASE}/", headers=user.headers)
    queries.reset()
    response = await client.get(
        f"{BASE}/", params={"q": "ada", "order_by": "last_name"}, headers=user.headers
    )
    assert response.json()["total"] == 3
    assert queries.count <= 2, queries.statements


@pytest.mark.parametrize("order_by", ["created_at", "first_name", "last_name", "birthday"])
@pytest.mark.parametrize("sort_order", ["asc", "desc"])
async def test_an_unfiltered_list_costs_one_statement_without_counting(
    client, user, queries, order_by, sort_order
):
    for i in range(3):
        await create(client, user, email=f"c{i}@example.com")
    await client.get(f"{BASE}/", headers=user.headers)  # warm the user cache
    queries.reset()
    params = {"limit": 2, "order_by": order_by, "sort_order": sort_order}
    response = await client.get(f"{BASE}/", params=params, headers=user.headers)
    assert (len(response.json()["items"]), response.json()["total"]) == (2, 3)
    assert queries.count == 1, queries.statements
    assert "count(" not in queries.statements[0].lower(), queries.statements


# --------------------------------------------------------------------------- list, search, paging


@pytest.fixture
async def book(client, user):
    people = [
        ("Ада", "Лавлейс", "ada@example.com", "1990-01-05"),
        ("Alan", "Turing", "alan.turing@example.com", "1912-06-23"),
        ("Grace", "Hopper", "grace_hopper@navy.mil", None),
        ("Édith", "Piaf", "edith%piaf@example.fr", "1915-12-19"),
        ("Straße", "Müller", "strasse@example.de", "1980-03-01"),
        ("Тарас", "Шевченко", "taras@example.ua", "1814-03-09"),
    ]
    made = []
    for first, last, email, born in people:
        made.append(
            await create(
                client,
                user,
                first_name=first,
                last_name=last,
                email=email,
                birthday=born,
                additional_data=None,
            )
        )
    return made


async def names(client, user, **params):
    response = await client.get(f"{BASE}/", params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    return [item["first_name"] for item in response.json()["items"]]


async def test_list_page_shape_and_default_order(client, user, book):
    response = await client.get(f"{BASE}/", headers=user.headers)
    data = response.json()
    assert set(data) == {"items", "total", "limit", "offset"}
    assert data["total"] == 6
    assert data["limit"] == 20
    assert data["offset"] == 0
    assert [c["id"] for c in data["items"]] == [c["id"] for c in book]  # created_at asc


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"first_name": "ал"}, []),
        ({"first_name": "АД"}, ["Ада"]),
        ({"first_name": "ада"}, ["Ада"]),
        ({"last_name": "шевч"}, ["Тарас"]),
        ({"last_name": "ШЕВЧЕНКО"}, ["Тарас"]),
        ({"first_name": "édith"}, ["Édith"]),
        ({"first_name": "ÉDITH"}, ["Édith"]),
        ({"last_name": "MÜLLER"}, ["Straße"]),
        ({"first_name": "STRASSE"}, ["Straße"]),
        ({"email": "TURING"}, ["Alan"]),
        ({"email": "%"}, ["Édith"]),
        ({"email": "_"}, ["Grace"]),
        ({"email": "example.com"}, ["Ада", "Alan"]),
        ({"first_name": "a", "last_name": "tur"}, ["Alan"]),
        ({"first_name": "grace", "email": "example"}, []),
        ({"q": "hopp"}, ["Grace"]),
        ({"q": "ТАРАС"}, ["Тарас"]),
        ({"q": ".ua"}, ["Тарас"]),
        ({"q": "%"}, ["Édith"]),
        ({"q": "zzz"}, []),
        # Case-folded ("strasse") and lower-cased ("straße") forms differ: both are searched.
        ({"q": "STRAßE"}, ["Straße"]),
        ({"q": "straße@"}, []),
        ({"q": "strasse@"}, ["Straße"]),
    ],
)
async def test_filters(client, user, book, params, expected):
    assert await names(client, user, **params) == expected


@pytest.mark.parametrize(
    ("order_by", "sort_order", "expected"),
    [
        # Names sort by their case-folded form (code point order under the test databases'
        # C collation, as on SQLite).
        ("first_name", "asc", None),
        ("first_name", "desc", None),
        ("last_name", "asc", None),
        ("last_name", "desc", None),
        ("birthday", "asc", ["Тарас", "Alan", "Édith", "Straße", "Ада", "Grace"]),
        ("birthday", "desc", ["Ада", "Straße", "Édith", "Alan", "Тарас", "Grace"]),
        ("created_at", "asc", ["Ада", "Alan", "Grace", "Édith", "Straße", "Тарас"]),
        ("created_at", "desc", ["Тарас", "Straße", "Édith", "Grace", "Alan", "Ада"]),
    ],
)
async def test_ordering(client, user, book, order_by, sort_order, expected):
    if expected is None:
        key = order_by
        ordered = sorted(book, key=lambda c: c[key].casefold(), reverse=sort_order == "desc")
        expected = [c["first_name"] for c in ordered]
    assert await names(client, user, order_by=order_by, sort_order=sort_order) == expected


async def test_name_order_is_case_insensitive(client, user):
    for i, name in enumerate(["bob", "Alice", "carol", "Bea"]):
        await create(client, user, first_name=name, email=f"{i}@example.com")
    assert await names(client, user, order_by="first_name") == ["Alice", "Bea", "bob", "carol"]
    assert await names(client, user, order_by="first_name", sort_order="desc") == [
        "carol",
        "bob",
        "Bea",
        "Alice",
    ]


async def test_ties_are_broken_by_id_so_pages_never_overlap(client, user):
    ids = [(await create(client, user, first_name="Same", email=f"s{i}@example.com"))["id"] for i in range(7)]
    seen = []
    for offset in range(0, 7, 3):
        response = await client.get(
            f"{BASE}/", params={"order_by": "first_name", "limit": 3, "offset": offset}, headers=user.headers
        )
        page = response.json()
        assert page["total"] == 7
        assert page["limit"] == 3
        assert page["offset"] == offset
        seen += [c["id"] for c in page["items"]]
    assert seen == sorted(ids)


@pytest.mark.parametrize(
    ("limit", "offset", "items", "statements"),
    [
        (6, 0, 6, 1),  # the page's statement reads the total too
        (7, 0, 6, 1),
        (5, 0, 5, 1),
        (3, 3, 3, 1),
        (2, 2, 2, 1),
        (3, 6, 0, 2),  # an empty page past the end: the counter read alone
        (1, 100, 0, 2),
    ],
)
async def test_an_unfiltered_total_is_read_not_counted(
    client, user, book, queries, limit, offset, items, statements
):
    queries.reset()
    data = (
        await client.get(f"{BASE}/", params={"limit": limit, "offset": offset}, headers=user.headers)
    ).json()
    assert (len(data["items"]), data["total"]) == (items, 6)
    assert [c["id"] for c in data["items"]] == [c["id"] for c in book][offset : offset + limit]
    reads = [s for s in queries.statements if "FROM contact" in s]
    assert len(reads) == statements, reads
    assert not any("count(" in s.lower() for s in reads), reads


@pytest.mark.parametrize(
    ("limit", "offset", "items", "statements"),
    [
        (6, 0, 6, 1),  # every match fits: the page is the total
        (7, 0, 6, 1),
        (5, 0, 5, 2),  # more remain: counted
        (3, 3, 3, 1),  # the last page, full: no row after it, so offset + items
        (4, 3, 3, 1),
        (2, 2, 2, 2),
        (3, 6, 0, 2),  # past the end: counted
    ],
)
async def test_a_filtered_total_is_exact_with_or_without_a_count(
    client, user, book, queries, limit, offset, items, statements
):
    queries.reset()
    params = {"email": "@", "limit": limit, "offset": offset}  # every contact matches
    data = (await client.get(f"{BASE}/", params=params, headers=user.headers)).json()
    assert (len(data["items"]), data["total"]) == (items, 6)
    assert [c["id"] for c in data["items"]] == [c["id"] for c in book][offset : offset + limit]
    assert len([s for s in queries.statements if "FROM contacts" in s]) == statements, queries.statements


async def test_a_filtered_total_is_counted_once_per_state_of_the_book(client, user, book, queries):
    async def total(**params):
        queries.reset()
        params = {"email": "@", "limit": 2, **params}
        data = (await client.get(f"{BASE}/", params=params, headers=user.headers)).json()
        return data["total"], len([s for s in queries.statements if "FROM contacts" in s])

    assert await total() == (6, 2)
    assert await total() == (6, 1)  # the same book: the count is kept
    assert await total(offset=2) == (6, 1)  # the next page of the same search too
    assert await total(email="example") == (5, 2)  # another search is counted
    await create(client, user, email="new@example.com")
    assert await total() == (7, 2)  # a write moves the book on: counted again
    assert await total(email="example") == (6, 2)
    response = await client.patch(
        f"{BASE}/{book[0]['id']}", json={"email": "ada@lovelace.org"}, headers=user.headers
    )
    assert response.status_code == 200
    assert await total(email="example") == (5, 2)
    assert await total(email="example") == (5, 1)
    assert (await client.delete(f"{BASE}/{book[1]['id']}", headers=user.headers)).status_code == 204
    assert await total() == (6, 2)


@pytest.mark.parametrize("offset", [100, 2**62, 2**63, 10**30])  # even past a 64-bit SQL integer
@pytest.mark.parametrize("filters", [{}, {"email": "@"}])
async def test_offset_past_the_end_gives_an_empty_page_with_the_total(client, user, book, offset, filters):
    data = (await client.get(f"{BASE}/", params={"offset": offset, **filters}, headers=user.headers)).json()
    assert data["items"] == []
    assert data["total"] == 6
    assert data["offset"] == offset


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "x"},
        {"offset": -1},
        {"order_by": "email"},
        {"order_by": "id"},
        {"sort_order": "up"},
        {"q": "x" * 300},
    ],
)
async def test_bad_list_parameters_are_400(client, user, params):
    response = await client.get(f"{BASE}/", params=params, headers=user.headers)
    assert response.status_code == 400
    assert next(iter(params)) in response.text


async def test_limit_bounds_are_accepted(client, user, book):
    assert len(await names(client, user, limit=1)) == 1
    assert len(await names(client, user, limit=100)) == 6
    response = await client.get(BASE, headers=user.headers)  # without the trailing slash too
    assert response.status_code == 200


# --------------------------------------------------------------------------- update


async def test_put_replaces_everything_and_clears_missing_optionals(client, user):
    created = await create(client, user)
    response = await client.put(
        f"{BASE}/{created['id']}",
        json=body(first_name="Augusta", email="AUGUSTA@example.com", birthday=..., additional_data=...),
        headers=user.headers,
    )
    assert response.status_code == 200
    data = response.json()
    assert data["first_name"] == "Augusta"
    assert data["email"] == "augusta@example.com"
    assert data["birthday"] is None
    assert data["additional_data"] is None
    assert data["created_at"] == created["created_at"]
    assert data["updated_at"] >= created["updated_at"]
    assert response.headers["etag"] == '"v2"'
    fetched = (await client.get(f"{BASE}/{created['id']}", headers=user.headers)).json()
    assert fetched == data


async def test_put_validates_like_create(client, user):
    created = await create(client, user)
    response = await client.put(f"{BASE}/{created['id']}", json=body(email="bad"), headers=user.headers)
    assert response.status_code == 400
    nameless = await client.put(f"{BASE}/{created['id']}", json={"last_name": "X"}, headers=user.headers)
    assert nameless.status_code == 400
    assert (await client.get(f"{BASE}/{created['id']}", headers=user.headers)).json() == created


async def test_put_without_the_optional_fields_clears_them(client, user):
    created = await create(client, user, birthday="1990-05-17", additional_data="note")
    response = await client.put(f"{BASE}/{created['id']}", json={"first_name": "X"}, headers=user.headers)
    assert response.status_code == 200, response.text
    fetched = (await client.get(f"{BASE}/{created['id']}", headers=user.headers)).json()
    assert fetched == response.json()
    assert {
        key: fetched[key] for key in ("first_name", "last_name", "email", "phone_number", "birthday")
    } == {
        "first_name": "X",
        "last_name": None,
        "email": None,
        "phone_number": None,
        "birthday": None,
    }
    assert fetched["additional_data"] is None


async def test_put_to_a_taken_email_is_409_and_changes_nothing(client, user):
    first = await create(client, user, email="one@example.com")
    await create(client, user, email="two@example.com")
    response = await client.put(
        f"{BASE}/{first['id']}", json=body(email="two@example.com"), headers=user.headers
    )
    assert response.status_code == 409
    assert (await client.get(f"{BASE}/{first['id']}", headers=user.headers)).json() == first


async def test_patch_changes_only_the_given_fields(client, user):
    created = await create(client, user)
    response = await client.patch(
        f"{BASE}/{created['id']}", json={"last_name": " Byron ", "birthday": None}, headers=user.headers
    )
    assert response.status_code == 200
    data = response.json()
    assert data["last_name"] == "Byron"
    assert data["birthday"] is None
    assert data["first_name"] == created["first_name"]
    assert data["additional_data"] == created["additional_data"]
    assert response.headers["etag"] == '"v2"'
    phone = await client.patch(
        f"{BASE}/{created['id']}", json={"phone_number": "(050) 765-43-21"}, headers=user.headers
    )
    assert phone.json()["phone_number"] == "+380507654321"
    assert (
        await client.get(f"{BASE}/{created['id']}", params={"last_name": "byron"}, headers=user.headers)
    ).status_code == 200
    assert await names(client, user, last_name="byr") == ["Ada"]


async def test_empty_patch_changes_nothing(client, user):
    created = await create(client, user)
    response = await client.patch(f"{BASE}/{created['id']}", json={}, headers=user.headers)
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == '"v1"'
    stale = await client.patch(
        f"{BASE}/{created['id']}", json={}, headers={**user.headers, "If-Match": '"v9"'}
    )
    assert stale.status_code == 412


@pytest.mark.parametrize(
    "patch_body",
    [
        {"first_name": None},
        {"email": "bad"},
        {"phone_number": "12"},
        {"birthday": "2999-01-01"},
        {"additional_data": "q" * 501},
        {"first_name": "  "},
        {"owner_id": "x"},
        {"phone_number": "+-()+-()+"},
    ],
)
async def test_patch_rejects_invalid_fields(client, user, patch_body):
    created = await create(client, user)
    response = await client.patch(f"{BASE}/{created['id']}", json=patch_body, headers=user.headers)
    assert response.status_code == 400
    assert next(iter(patch_body)) in response.text
    assert (await client.get(f"{BASE}/{created['id']}", headers=user.headers)).json() == created


async def test_put_and_patch_of_a_missing_contact_are_404(client, user):
    missing = uuid.uuid4()
    assert (await client.put(f"{BASE}/{missing}", json=body(), headers=user.headers)).status_code == 404
    assert (
        await client.patch(f"{BASE}/{missing}", json={"first_name": "X"}, headers=user.headers)
    ).status_code == 404
    assert (
        await client.patch(f"{BASE}/nope", json={"first_name": "X"}, headers=user.headers)
    ).status_code == 404
    headers = {**user.headers, "If-Match": '"v1"'}
    assert (await client.put(f"{BASE}/{missing}", json=body(), headers=headers)).status_code == 404


# --------------------------------------------------------------------------- ETag / If-Match


@pytest.mark.parametrize("method", ["put", "patch"])
async def test_if_match_with_the_current_etag_writes(client, user, method):
    created = await create(client, user)
    etag = (await client.get(f"{BASE}/{created['id']}", headers=user.headers)).headers["etag"]
    payload = body(first_name="New") if method == "put" else {"first_name": "New"}
    response = await getattr(client, method)(
        f"{BASE}/{created['id']}", json=payload, headers={**user.headers, "If-Match": etag}
    )
    assert response.status_code == 200
    assert response.json()["first_name"] == "New"
    assert response.headers["etag"] != etag
    star = await getattr(client, method)(
        f"{BASE}/{created['id']}", json=payload, headers={**user.headers, "If-Match": "*"}
    )
    assert star.status_code == 200
    listed = await getattr(client, method)(
        f"{BASE}/{created['id']}",
        json=payload,
        headers={**user.headers, "If-Match": f'"v99", {star.headers["etag"]}'},
    )
    assert listed.status_code == 200


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize("stale", ['"v0"', 'W/"v1"', '"garbage"', "v1"])
async def test_stale_if_match_is_412_and_writes_nothing(client, user, method, stale):
    created = await create(client, user)
    payload = body(first_name="New") if method == "put" else {"first_name": "New"}
    response = await getattr(client, method)(
        f"{BASE}/{created['id']}", json=payload, headers={**user.headers, "If-Match": stale}
    )
    assert response.status_code == 412
    assert response.json()["status_code"] == 412
    after = await client.get(f"{BASE}/{created['id']}", headers=user.headers)
    assert after.json() == created
    assert after.headers["etag"] == '"v1"'


async def test_if_match_naming_32_versions_works_and_more_is_400(client, user):
    created = await create(client, user)
    url = f"{BASE}/{created['id']}"
    tags = ", ".join(f'"v{v}"' for v in range(100, 131))  # 31 other versions and the current one
    response = await client.patch(
        url, json={"first_name": "B"}, headers={**user.headers, "If-Match": f'{tags}, "v1"'}
    )
    assert response.status_code == 200
    too_many = ", ".join(f'"v{v}"' for v in range(100, 133))
    response = await client.patch(
        url, json={"first_name": "C"}, headers={**user.headers, "If-Match": too_many}
    )
    assert response.status_code == 400
    assert (await client.get(url, headers=user.headers)).json()["first_name"] == "B"


async def test_contact_errors_keep_their_bodies(client, user):
    created = await create(client, user)
    url = f"{BASE}/{created['id']}"
    for missing in (f"{BASE}/{uuid.uuid4()}", f"{BASE}/not-a-uuid"):
        response = await client.get(missing, headers=user.headers)
        assert (response.status_code, response.json()) == (404, {"status_code": 404, "detail": "Not found"})
    stale = await client.patch(url, json={"first_name": "B"}, headers={**user.headers, "If-Match": '"v7"'})
    assert stale.status_code == 412
    assert stale.json() == {
        "status_code": 412,
        "detail": "The contact has changed since this ETag: fetch it again",
    }
    too_many = ", ".join(f'"v{v}"' for v in range(100, 133))
    response = await client.patch(
        url, json={"first_name": "C"}, headers={**user.headers, "If-Match": too_many}
    )
    assert response.status_code == 400
    assert response.json()["extra"] == [
        {"message": "names too many versions", "key": "If-Match", "source": "body"}
    ]
    future = await client.put(url, json=body(birthday="2999-01-01"), headers=user.headers)
    assert future.status_code == 400
    assert future.json()["extra"] == [
        {"message": "must be a date in the past", "key": "birthday", "source": "body"}
    ]
    assert (await client.get(url, headers=user.headers)).json() == created


async def test_a_write_moves_updated_at_and_keeps_created_at(client, user):
    created = await create(client, user)
    changed = (
        await client.patch(f"{BASE}/{created['id']}", json={"last_name": "Z"}, headers=user.headers)
    ).json()
    assert changed["created_at"] == created["created_at"]
    assert changed["updated_at"] > created["updated_at"]


async def test_after_a_write_the_old_etag_is_stale(client, user):
    created = await create(client, user)
    old = '"v1"'
    assert (
        await client.patch(f"{BASE}/{created['id']}", json={"first_name": "B"}, headers=user.headers)
    ).status_code == 200
    response = await client.put(
        f"{BASE}/{created['id']}", json=body(first_name="C"), headers={**user.headers, "If-Match": old}
    )
    assert response.status_code == 412
    assert (await client.get(f"{BASE}/{created['id']}", headers=user.headers)).json()["first_name"] == "B"


async def test_two_writers_with_the_same_etag_exactly_one_wins(client, user):
    created = await create(client, user)
    headers = {**user.headers, "If-Match": '"v1"'}
    responses = await asyncio.gather(
        *(
            client.put(f"{BASE}/{created['id']}", json=body(first_name=f"Writer{i}"), headers=headers)
            for i in range(4)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 412, 412, 412]
    winner = next(r for r in responses if r.status_code == 200).json()["first_name"]
    assert (await client.get(f"{BASE}/{created['id']}", headers=user.headers)).json()["first_name"] == winner


# --------------------------------------------------------------------------- delete


async def test_delete(client, user, db):
    created = await create(client, user)
    response = await client.delete(f"{BASE}/{created['id']}", headers=user.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert (await client.get(f"{BASE}/{created['id']}", headers=user.headers)).status_code == 404
    assert (await client.delete(f"{BASE}/{created['id']}", headers=user.headers)).status_code == 404
    assert (await client.delete(f"{BASE}/nope", headers=user.headers)).status_code == 404
    assert await count_rows(db) == 0


async def test_deleting_the_owner_deletes_their_contacts(client, user, db):
    await create(client, user)
    from app.users.models import User

    async with db.begin() as conn:
        if db.dialect.name == "sqlite":
            await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        await conn.execute(delete(User).where(User.id == user.id))
    assert await count_rows(db) == 0


# --------------------------------------------------------------------------- owner isolation (IDOR)


@pytest.fixture
async def theirs(client, user_factory):
    owner = await user_factory()
    contact = await create(
        client,
        owner,
        email="private@example.com",
        birthday=(date.today() - timedelta(days=365 * 30)).isoformat(),
    )
    return owner, contact


async def test_another_users_contact_is_404_for_every_verb_and_unchanged(client, user, theirs, db):
    owner, contact = theirs
    url = f"{BASE}/{contact['id']}"
    missing = f"{BASE}/{uuid.uuid4()}"
    for method, kwargs in [
        ("GET", {}),
        ("PUT", {"json": body(first_name="Hacked")}),
        ("PATCH", {"json": {"first_name": "Hacked"}}),
        ("DELETE", {}),
    ]:
        response = await client.request(method, url, headers=user.headers, **kwargs)
        assert response.status_code == 404, method
        absent = await client.request(method, missing, headers=user.headers, **kwargs)
        assert response.json() == absent.json(), method
        with_etag = await client.request(method, url, headers={**user.headers, "If-Match": '"v1"'}, **kwargs)
        assert with_etag.status_code == 404, method
    after = await client.get(url, headers=owner.headers)
    assert after.status_code == 200
    assert after.json() == contact
    assert await count_rows(db, id=uuid.UUID(contact["id"])) == 1


async def test_lists_birthdays_and_exports_show_only_your_own(client, user, theirs):
    _owner, contact = theirs
    mine = await create(client, user, email="mine@example.com")
    listed = (await client.get(f"{BASE}/", params={"q": "private"}, headers=user.headers)).json()
    assert listed["total"] == 0
    everything = (await client.get(f"{BASE}/", headers=user.headers)).json()
    assert [c["id"] for c in everything["items"]] == [mine["id"]]
    birthdays = (await client.get(f"{BASE}/birthdays", params={"days": 365}, headers=user.headers)).json()
    assert contact["id"] not in {c["id"] for c in birthdays}
    for fmt in ("vcard", "csv"):
        exported = (await client.get(f"{BASE}/export", params={"format": fmt}, headers=user.headers)).text
        assert "private@example.com" not in exported
        assert "mine@example.com" in exported


async def test_a_user_may_reuse_an_email_another_user_has(client, user, theirs):
    response = await client.post(f"{BASE}/", json=body(email="private@example.com"), headers=user.headers)
    assert response.status_code == 201
