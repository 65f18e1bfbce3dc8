"""App password routes: ``/api/users/me/app-passwords`` (JWT-authenticated, like ``/api/users/me``).

The passwords themselves work only as HTTP Basic credentials on ``/dav/``
(:func:`app.users.app_passwords.authenticate_basic`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import (
    HTTP_201_CREATED,
    HTTP_204_NO_CONTENT,
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
)

from app import cache
from app.errors import error_response
from app.users.app_passwords import (
    MAX_PER_USER,
    AppPasswordCreate,
    AppPasswordCreated,
    AppPasswordNotFoundError,
    AppPasswordRead,
    AppPasswordService,
)
from app.users.schemas import CurrentUser

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from sqlalchemy.ext.asyncio import AsyncSession

_AUTH_ERRORS = {HTTP_401_UNAUTHORIZED: error_response("Missing, invalid or expired access token")}


async def provide_app_password_service(
    db_session: NamedDependency[AsyncSession], request: Request
) -> AsyncGenerator[AppPasswordService, None]:
    """Dependency: an :class:`AppPasswordService` on the request's database session.

    Args:
        db_session: The request's session (advanced-alchemy plugin).
        request: The current request (for the ``user_cache`` store).

    Yields:
        The service.
    """
    yield AppPasswordService(db_session, request.app.stores.get(cache.USER_CACHE))


class AppPasswordController(Controller):
    """The current user's app passwords."""

    path = "/api/users/me/app-passwords"
    tags = ["users"]
    dependencies = {"app_passwords": Provide(provide_app_password_service)}

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Create an app password",
        description="A password for one client that cannot log in with tokens (a CardDAV address book): "
        "it works only as HTTP Basic credentials on `/dav/`, with the account's email as user name, never "
        "on `/api/...` or at login. The password (160 random bits) is in this answer only; the service "
        f"keeps a hash. An account holds at most {MAX_PER_USER}.",
        responses={
            **_AUTH_ERRORS,
            HTTP_400_BAD_REQUEST: error_response(
                "Malformed body, unknown field, or a name not 1-50 characters"
            ),
            HTTP_409_CONFLICT: error_response(f"The account already holds {MAX_PER_USER} app passwords"),
            HTTP_415_UNSUPPORTED_MEDIA_TYPE: error_response("The body is not JSON"),
        },
    )
    async def create_app_password(
        self,
        request: Request[CurrentUser, Any, Any],
        data: JSONBody[AppPasswordCreate],
        app_passwords: NamedDependency[AppPasswordService],
    ) -> Response[AppPasswordCreated]:
        """Make an app password and show its secret, once."""
        created = await app_passwords.create(request.user.id, data.name)
        return Response(created, status_code=HTTP_201_CREATED)

    @get(
        "/",
        summary="List my app passwords",
        description="Newest first, with when each was last used (updated at most once a minute). "
        "The passwords themselves are never shown again.",
        responses=_AUTH_ERRORS,
    )
    async def list_app_passwords(
        self, request: Request[CurrentUser, Any, Any], app_passwords: NamedDependency[AppPasswordService]
    ) -> list[AppPasswordRead]:
        """The current user's app passwords."""
        return await app_passwords.list_of(request.user.id)

    @delete(
        "/{app_password_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Revoke an app password",
        description="The password is refused at once afterwards, by every replica.",
        responses={
            **_AUTH_ERRORS,
            HTTP_404_NOT_FOUND: error_response("No such app password of yours (or a malformed id)"),
        },
    )
    async def revoke_app_password(
        self,
        request: Request[CurrentUser, Any, Any],
        app_password_id: Annotated[str, PathParameter(description="The app password's id.", format="uuid")],
        app_passwords: NamedDependency[AppPasswordService],
    ) -> None:
        """Delete one of the current user's app passwords."""
        try:
            uid = UUID(app_password_id)
        except ValueError:
            # Ids are opaque to clients: a malformed one names no app password.
            raise AppPasswordNotFoundError from None
        await app_passwords.revoke(request.user.id, uid)
