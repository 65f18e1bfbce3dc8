"""Query budgets of the hot reads: a regression that adds a statement per request fails here.

Budgets (issue 6): the current user on a warm cache costs no statement; a single contact and
an unfiltered list (its total is the owner's counter, read by the page's statement) one; a
filtered list, a search and the birthdays at most two (an unfiltered page past the end reads
the counter in a second statement: tested in test_contacts).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest


async def _contact(client, user, n: int, birthday: date | None = None) -> str:
    body = {
        "first_name": f"Ann{n}",
        "last_name": "Budget",
        "email": f"budget{n}@example.com",
        "phone_number": "+380501234567",
    }
    if birthday is not None:
        body["birthday"] = birthday.isoformat()
    response = await client.post("/api/contacts/", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def test_current_user_on_a_warm_cache_costs_no_statement(client, user, queries) -> None:
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200  # fills the cache
    queries.reset()
    response = await client.get("/api/users/me", headers=user.headers)
    assert response.status_code == 200
    assert queries.count == 0, queries.statements


@pytest.mark.parametrize(
    ("path", "budget"),
    [
        ("/api/contacts/{id}", 1),
        ("/api/contacts/?limit=20", 1),
        ("/api/contacts/?limit=2&offset=2&order_by=last_name", 1),
        ("/api/contacts/?limit=20&offset=3", 1),
        ("/api/contacts/?q=budget&limit=20", 2),
        ("/api/contacts/?first_name=ann&order_by=birthday&sort_order=desc", 2),
        ("/api/contacts/birthdays?days=7", 2),
    ],
)
async def test_contact_reads_stay_within_their_statement_budget(client, user, queries, path, budget) -> None:
    soon = datetime.now(UTC).date() + timedelta(days=2)  # 1992 is a leap year: 29 February fits
    ids = [await _contact(client, user, n, soon.replace(year=1992) if n % 2 else None) for n in range(5)]
    assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200  # warm cache
    queries.reset()
    response = await client.get(path.format(id=ids[0]), headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json(), "an empty answer would make the budget meaningless"
    assert 1 <= queries.count <= budget, queries.statements
