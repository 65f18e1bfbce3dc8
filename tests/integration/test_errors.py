"""Errors mapped once, centrally, for every route."""

import uuid
from datetime import timedelta

import pytest

from app.errors import database_unavailable
from app.security.tokens import Purpose, create_token
from tests.conftest import ON_POSTGRES, SECRET


async def test_deeply_nested_json_is_400_on_any_json_route(client, user):
    body = "[" * 100_000 + "]" * 100_000
    for path in ("/api/contacts/", "/api/auth/register"):
        response = await client.post(
            path, content=body, headers={**user.headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 400, path
        assert "nested too deeply" in response.json()["detail"]


async def test_error_details_never_repeat_a_token_from_the_path(client):
    response = await client.post("/api/auth/confirm_update_password/SECRETTOKEN123", json={"password": 5})
    assert response.status_code == 400
    assert response.json()["extra"][0]["key"] == "password"
    assert "SECRETTOKEN123" not in response.text


async def test_an_unreachable_database_is_503_with_retry_after_not_500(
    make_client, settings, tmp_path, caplog
):
    if ON_POSTGRES:
        down = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"
    else:
        down = f"sqlite+aiosqlite:///{tmp_path}/missing-dir/db.sqlite"
    token, _ = create_token(
        SECRET, Purpose.ACCESS, str(uuid.uuid4()), timedelta(minutes=5), sid=str(uuid.uuid4())
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with make_client(database_url=down) as client:
        for method, path in [
            ("GET", "/api/contacts/"),
            ("GET", "/api/users/me"),
            ("POST", "/api/auth/login"),
        ]:
            response = await client.request(
                method, path, headers=headers, data={"username": "a@example.com", "password": "x" * 12}
            )
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == "1"
            assert response.json()["status_code"] == 503
    assert not [r for r in caplog.records if r.levelname == "ERROR"], "an outage is not logged as a bug"


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (FileNotFoundError(), False),  # a bug (or a missing file) stays a 500
        (ValueError("bug"), False),
        (KeyError("bug"), False),
    ],
)
def test_only_connection_failures_count_as_an_outage(error, unavailable):
    assert database_unavailable(error) is unavailable
    wrapped = RuntimeError("wrapped")  # as a library re-raises it
    wrapped.__cause__ = error
    assert database_unavailable(wrapped) is unavailable
