"""The one error style: a domain error carries its status, detail and field."""

from __future__ import annotations

from litestar import Litestar, get
from litestar.status_codes import HTTP_401_UNAUTHORIZED, HTTP_409_CONFLICT
from litestar.testing import TestClient

from app.errors import EXCEPTION_HANDLERS, AppError


class Taken(AppError):
    """A test error with its own status."""

    status_code = HTTP_409_CONFLICT
    detail = "Taken"


class Denied(AppError):
    """A 401, which must name its scheme."""

    status_code = HTTP_401_UNAUTHORIZED
    detail = "Denied"


@get("/taken", sync_to_thread=False)
def taken() -> None:
    """Raise the class's own answer."""
    raise Taken


@get("/field", sync_to_thread=False)
def field() -> None:
    """Raise with a detail and a field."""
    raise AppError("Too short", field="password", headers={"X-Why": "policy"})


@get("/denied", sync_to_thread=False)
def denied() -> None:
    """Raise a 401."""
    raise Denied


def _client() -> TestClient[Litestar]:
    return TestClient(Litestar([taken, field, denied], exception_handlers=EXCEPTION_HANDLERS))


def test_a_domain_error_answers_its_own_status_and_detail() -> None:
    with _client() as client:
        response = client.get("/taken")
    assert response.status_code == 409
    assert response.json() == {"status_code": 409, "detail": "Taken"}


def test_a_field_is_listed_as_a_400_lists_it_and_headers_are_kept() -> None:
    with _client() as client:
        response = client.get("/field")
    assert response.status_code == 400
    assert response.json() == {
        "status_code": 400,
        "detail": "Too short",
        "extra": [{"message": "Too short", "key": "password", "source": "body"}],
    }
    assert response.headers["X-Why"] == "policy"


def test_a_401_names_the_bearer_scheme() -> None:
    with _client() as client:
        response = client.get("/denied")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
