"""Races: the same write sent concurrently must have exactly one (or at most one) winner.

The in-loop client lets ``asyncio.gather`` interleave the requests inside the app (password
hashing runs in worker threads, database calls await), so these are real races, not
requests queued one after another.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from tests.conftest import PASSWORD

CONTACT = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "phone_number": "+380501234567",
    "birthday": "1990-12-10",
    "additional_data": "original",
}


async def test_two_puts_with_the_same_if_match_exactly_one_wins(client, user):
    created = await client.post("/api/contacts/", json=CONTACT, headers=user.headers)
    assert created.status_code == 201, created.text
    contact_id = created.json()["id"]
    etag = (await client.get(f"/api/contacts/{contact_id}", headers=user.headers)).headers["etag"]
    headers = {**user.headers, "If-Match": etag}
    bodies = [{**CONTACT, "additional_data": f"writer {i}"} for i in range(2)]

    responses = await asyncio.gather(
        *(client.put(f"/api/contacts/{contact_id}", json=body, headers=headers) for body in bodies)
    )

    assert sorted(r.status_code for r in responses) == [200, 412], [r.text for r in responses]
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    stored = (await client.get(f"/api/contacts/{contact_id}", headers=user.headers)).json()
    assert stored["additional_data"] == f"writer {winner}"
    loser = responses[1 - winner]
    assert loser.json()["status_code"] == 412


async def test_many_writers_with_the_same_if_match_exactly_one_wins(client, user):
    created = await client.post("/api/contacts/", json=CONTACT, headers=user.headers)
    contact_id = created.json()["id"]
    etag = (
        created.headers.get("etag")
        or (await client.get(f"/api/contacts/{contact_id}", headers=user.headers)).headers["etag"]
    )
    headers = {**user.headers, "If-Match": etag}

    responses = await asyncio.gather(
        *(
            client.patch(f"/api/contacts/{contact_id}", json={"additional_data": f"w{i}"}, headers=headers)
            if i % 2
            else client.put(
                f"/api/contacts/{contact_id}", json={**CONTACT, "additional_data": f"w{i}"}, headers=headers
            )
            for i in range(8)
        )
    )

    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] == 1, [r.text for r in responses]
    assert statuses[412] >= 6, [r.text for r in responses]
    assert all(r.status_code < 500 for r in responses), [r.text for r in responses]


async def test_concurrent_registrations_with_one_email_exactly_one_201_rest_409(client):
    tag = uuid.uuid4().hex[:8]
    email = f"race-{tag}@example.com"
    # The same address, spelled with different cases, under different user names.
    bodies = [
        {"username": f"racer{i}_{tag}", "email": email.upper() if i % 2 else email, "password": PASSWORD}
        for i in range(6)
    ]

    responses = await asyncio.gather(*(client.post("/api/auth/register", json=b) for b in bodies))

    assert Counter(r.status_code for r in responses) == {201: 1, 409: 5}, [r.text for r in responses]
    listed = [r for r in responses if r.status_code == 409]
    assert all(r.json()["status_code"] == 409 for r in listed)


async def test_concurrent_registrations_with_one_username_exactly_one_201_rest_409(client):
    tag = uuid.uuid4().hex[:8]
    bodies = [
        {
            "username": f"Same_{tag}" if i % 2 else f"same_{tag}",
            "email": f"u{i}-{tag}@example.com",
            "password": PASSWORD,
        }
        for i in range(6)
    ]

    responses = await asyncio.gather(*(client.post("/api/auth/register", json=b) for b in bodies))

    assert Counter(r.status_code for r in responses) == {201: 1, 409: 5}, [r.text for r in responses]


async def _login(client, user) -> dict:
    response = await client.post("/api/auth/login", data={"username": user.email, "password": user.password})
    assert response.status_code == 200, response.text
    return response.json()


async def test_concurrent_refreshes_with_one_refresh_token_at_most_one_succeeds(client, user):
    tokens = await _login(client, user)

    responses = await asyncio.gather(
        *(
            client.post("/api/auth/refresh_token", json={"refresh_token": tokens["refresh_token"]})
            for _ in range(8)
        )
    )

    statuses = Counter(r.status_code for r in responses)
    assert statuses[200] <= 1, [r.text for r in responses]
    assert set(statuses) <= {200, 401}, [r.text for r in responses]
    # Whatever the outcome, the old refresh token is dead now.
    again = await client.post("/api/auth/refresh_token", json={"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 401
