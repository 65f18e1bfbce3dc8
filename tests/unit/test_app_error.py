"""The one error style: a domain error carries its status, detail and field."""

from __future__ import annotations

from litestar import Litestar, MediaType, Request, Response, get
from litestar.status_codes import HTTP_401_UNAUTHORIZED, HTTP_409_CONFLICT
from litestar.testing import TestClient

from app.errors import ERROR_PAGE, EXCEPTION_HANDLERS, AppError


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


def _taken_page(_request: Request, exc: AppError) -> Response | None:
    """An HTML page for :class:`Taken` only."""
    if isinstance(exc, Taken):
        return Response("<p>taken</p>", status_code=exc.status_code, media_type=MediaType.HTML)
    return None


@get("/page/taken", sync_to_thread=False, opt={ERROR_PAGE: _taken_page})
def page_taken() -> None:
    """Raise an error the route has a page for."""
    raise Taken


@get("/page/denied", sync_to_thread=False, opt={ERROR_PAGE: _taken_page})
def page_denied() -> None:
    """Raise an error the route has no page for."""
    raise Denied


def _client() -> TestClient[Litestar]:
    return TestClient(
        Litestar([taken, field, denied, page_taken, page_denied], exception_handlers=EXCEPTION_HANDLERS)
    )


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


def test_a_field_is_listed_for_a_400_only() -> None:
    class Conflict(AppError):
        status_code = HTTP_409_CONFLICT

    @get("/conflict", sync_to_thread=False)
    def conflict() -> None:
        raise Conflict("This email is already taken", field="email")

    with TestClient(Litestar([conflict], exception_handlers=EXCEPTION_HANDLERS)) as client:
        response = client.get("/conflict")
    assert response.json() == {"status_code": 409, "detail": "This email is already taken"}


def test_a_route_answers_its_page_for_the_errors_it_has_one_for() -> None:
    with _client() as client:
        page = client.get("/page/taken")
        other = client.get("/page/denied")
    assert page.status_code == 409
    assert page.headers["content-type"].startswith("text/html")
    assert page.text == "<p>taken</p>"
    assert other.status_code == 401
    assert other.json() == {"status_code": 401, "detail": "Denied"}
