"""OWASP ASVS 5.0 chapter 8 (authorization): function, data and field level, applied at once."""

from __future__ import annotations

import uuid

import pytest

from tests.security.flows import new_account
from tests.security.images import png

CONTACT = {
    "first_name": "Grace",
    "last_name": "Hopper",
    "email": "grace@example.com",
    "phone_number": "+380671234567",
    "birthday": "1980-12-09",
    "additional_data": "only mine",
}
ONE_PIXEL_PNG = png()


# --------------------------------------------------------------------------- 8.2.1 function level


def _admin_routes(some_id: str) -> list[tuple[str, str, dict]]:
    return [
        ("GET", "/api/users", {}),
        ("GET", "/api/users/", {}),
        ("PATCH", f"/api/users/{some_id}/role", {"json": {"role": "admin"}}),
        ("PATCH", "/api/users/avatar", {"files": {"file": ("a.png", ONE_PIXEL_PNG, "image/png")}}),
    ]


async def test_asvs_8_2_1_admin_routes_refuse_a_user_with_403(client, user):
    for method, path, kwargs in _admin_routes(str(user.id)):
        response = await client.request(method, path, headers=user.headers, **kwargs)
        assert response.status_code == 403, (method, path, response.text)


async def test_asvs_8_2_1_admin_routes_refuse_anonymous_callers_with_401(client, user):
    for method, path, kwargs in _admin_routes(str(user.id)):
        response = await client.request(method, path, **kwargs)
        assert response.status_code == 401, (method, path, response.text)


async def test_asvs_8_2_1_admin_routes_serve_an_admin(client, admin, user):
    assert (await client.get("/api/users", headers=admin.headers)).status_code == 200
    response = await client.patch(f"/api/users/{user.id}/role", json={"role": "user"}, headers=admin.headers)
    assert response.status_code == 200, response.text
    files = {"file": ("a.png", ONE_PIXEL_PNG, "image/png")}
    assert (await client.patch("/api/users/avatar", files=files, headers=admin.headers)).status_code == 200


# --------------------------------------------------------------------------- 8.2.2 data level


async def test_asvs_8_2_2_every_contact_verb_on_another_users_contact_is_404(client, user_factory):
    alice, mallory = await user_factory(), await user_factory()
    created = await client.post("/api/contacts/", json=CONTACT, headers=alice.headers)
    assert created.status_code == 201, created.text
    contact = created.json()
    path = f"/api/contacts/{contact['id']}"
    etag = (await client.get(path, headers=alice.headers)).headers.get("etag", '"v1"')

    attempts = [
        ("GET", {}),
        ("PUT", {"json": {**CONTACT, "first_name": "Stolen"}}),
        ("PUT", {"json": {**CONTACT, "first_name": "Stolen"}, "headers_extra": {"If-Match": etag}}),
        ("PATCH", {"json": {"first_name": "Stolen"}}),
        ("DELETE", {}),
    ]
    for method, kwargs in attempts:
        headers = {**mallory.headers, **kwargs.pop("headers_extra", {})}
        response = await client.request(method, path, headers=headers, **kwargs)
        assert response.status_code == 404, (method, response.text)
        assert "Grace" not in response.text

    # Nothing leaks through the collection routes either.
    listed = await client.get("/api/contacts/", params={"q": "Grace"}, headers=mallory.headers)
    assert listed.status_code == 200
    assert listed.json()["total"] == 0
    birthdays = await client.get("/api/contacts/birthdays", params={"days": 365}, headers=mallory.headers)
    assert all(c["id"] != contact["id"] for c in birthdays.json())
    exported = await client.get("/api/contacts/export", params={"format": "csv"}, headers=mallory.headers)
    assert exported.status_code == 200
    assert "Grace" not in exported.text

    # And Alice's contact is untouched.
    mine = await client.get(path, headers=alice.headers)
    assert mine.status_code == 200
    assert mine.json() == contact | {"updated_at": mine.json()["updated_at"]}
    assert mine.json()["first_name"] == "Grace"


async def test_asvs_8_2_2_the_same_email_in_two_address_books_does_not_collide(client, user_factory):
    alice, bob = await user_factory(), await user_factory()
    assert (await client.post("/api/contacts/", json=CONTACT, headers=alice.headers)).status_code == 201
    assert (await client.post("/api/contacts/", json=CONTACT, headers=bob.headers)).status_code == 201


# --------------------------------------------------------------------------- 8.2.3 field level


async def test_asvs_8_2_3_a_user_cannot_register_as_admin(client):
    body = new_account("amber-meadow-quartz-9", role="admin")
    response = await client.post("/api/auth/register", json=body)
    # Either the unknown field is refused, or it is ignored: never an admin.
    if response.status_code == 201:
        assert response.json()["role"] == "user"
    else:
        assert response.status_code == 400, response.text
    body.pop("role")
    body.update(confirmed=True)
    response = await client.post("/api/auth/register", json=body)
    if response.status_code == 201:
        assert response.json()["confirmed"] is False
    else:
        assert response.status_code == 400, response.text


async def test_asvs_8_2_3_a_user_cannot_change_its_own_role(client, user):
    response = await client.patch(f"/api/users/{user.id}/role", json={"role": "admin"}, headers=user.headers)
    assert response.status_code == 403
    assert (await client.get("/api/users/me", headers=user.headers)).json()["role"] == "user"


async def test_asvs_8_2_3_a_contact_cannot_be_planted_in_another_users_book(client, user_factory):
    alice, mallory = await user_factory(), await user_factory()
    for field in ("user_id", "owner_id", "id"):
        body = {**CONTACT, "email": f"{field}@example.com", field: str(alice.id)}
        response = await client.post("/api/contacts/", json=body, headers=mallory.headers)
        assert response.status_code in (201, 400), response.text
    listed = await client.get("/api/contacts/", headers=alice.headers)
    assert listed.json()["total"] == 0


# --------------------------------------------------------------------------- 8.3.2 applied at once


async def test_asvs_8_3_2_role_changes_apply_on_the_very_next_request(client, admin, user):
    # Warm the user's cached snapshot first: the change must not wait for it to expire.
    assert (await client.get("/api/users/me", headers=user.headers)).json()["role"] == "user"
    assert (await client.get("/api/users", headers=user.headers)).status_code == 403

    promoted = await client.patch(f"/api/users/{user.id}/role", json={"role": "admin"}, headers=admin.headers)
    assert promoted.status_code == 200, promoted.text
    assert (await client.get("/api/users/me", headers=user.headers)).json()["role"] == "admin"
    assert (await client.get("/api/users", headers=user.headers)).status_code == 200

    demoted = await client.patch(f"/api/users/{user.id}/role", json={"role": "user"}, headers=admin.headers)
    assert demoted.status_code == 200, demoted.text
    assert (await client.get("/api/users", headers=user.headers)).status_code == 403
    assert (await client.get("/api/users/me", headers=user.headers)).json()["role"] == "user"


@pytest.mark.parametrize("user_id", ["not-a-uuid", str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000"])
async def test_asvs_8_2_1_role_change_of_a_missing_user_is_404_not_500(client, admin, user_id):
    response = await client.patch(f"/api/users/{user_id}/role", json={"role": "admin"}, headers=admin.headers)
    assert response.status_code in (400, 404), response.text
