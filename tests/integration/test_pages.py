"""The HTML pages through HTTP, where a browser test can't reach: a form that skipped its own checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import urlparse

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.security.headers import PAGE_CSP
from tests.conftest import PASSWORD, SmtpServer, TestUser


@pytest.fixture
async def client(
    make_client: Callable[..., AsyncTestClient[Litestar]], smtp_server: SmtpServer
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with make_client(**smtp_server.settings) as c:
        yield c


async def _reset_path(client: AsyncTestClient[Litestar], smtp_server: SmtpServer, email: str) -> str:
    assert (await client.post("/api/auth/update_password", json={"email": email})).status_code == 202
    (mail,) = await smtp_server.sink.wait_for(1)
    (link,) = smtp_server.sink.links(mail)
    return urlparse(link).path


@pytest.mark.parametrize("password", ["Sh0rt!x", "x" * 129])
async def test_reset_form_out_of_bounds_gets_the_form_back_with_the_rule(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser, password: str
) -> None:
    path = await _reset_path(client, smtp_server, user.email)

    page = await client.post(path, data={"password": password, "password_confirm": password})

    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == PAGE_CSP
    assert "must be 8 to 128 characters long" in page.text
    assert f'action="{path}"' in page.text  # the same form, the link still usable
    assert password not in page.text  # never echoed back
    login = await client.post("/api/auth/login", data={"username": user.email, "password": PASSWORD})
    assert login.status_code == 200  # nothing changed


async def test_reset_json_out_of_bounds_stays_a_json_validation_error(
    client: AsyncTestClient[Litestar], smtp_server: SmtpServer, user: TestUser
) -> None:
    path = await _reset_path(client, smtp_server, user.email)

    response = await client.post(path, json={"password": "short"})

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["extra"][0]["key"] == "password"
