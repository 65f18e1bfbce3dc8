"""Users routes: the current user, avatars, and (for admins) the user list and roles.

``PATCH /api/users/me/password`` belongs to the password flows and lives with them.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Router, get, patch
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.exceptions import HTTPException
from litestar.params import Body, JSONBody, PathParameter, QueryParameter
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_502_BAD_GATEWAY,
)

from app.config import Settings
from app.errors import error_response
from app.http import MULTIPART_OVERHEAD
from app.ratelimit import ME, limited
from app.security.guards import requires_admin
from app.storage.adapters import AvatarStorage
from app.storage.images import inspect_image
from app.users.deps import provide_user_service
from app.users.schemas import CurrentUser, RoleUpdate, UserPage, UserRead
from app.users.service import UserService

_AUTH_ERRORS = {HTTP_401_UNAUTHORIZED: error_response("Missing, invalid or expired access token")}
_ADMIN_ERRORS = {**_AUTH_ERRORS, HTTP_403_FORBIDDEN: error_response("The user is not an admin")}


class AvatarUpload(msgspec.Struct, forbid_unknown_fields=True):
    """The multipart form of an avatar upload: exactly one field, ``file``."""

    #: The image: PNG, JPEG, WebP or GIF, judged by its bytes.
    file: UploadFile


def _public(user: Any) -> UserRead:
    return msgspec.convert(user, UserRead, from_attributes=True)


class UsersController(Controller):
    """The current user and the admin's user management."""

    path = "/api/users"
    tags = ["users"]
    dependencies = {"user_service": Provide(provide_user_service)}

    @get(
        "/me",
        summary="The current user",
        opt=limited(ME),
        operation_id="get_me",
        responses={
            **_AUTH_ERRORS,
            HTTP_429_TOO_MANY_REQUESTS: error_response("Too many requests from this client"),
        },
    )
    async def me(self, request: Request[CurrentUser, Any, Any]) -> UserRead:
        """The authenticated user, from the cached snapshot (no database query on a warm cache)."""
        return request.user.public()

    @get(
        "/",
        summary="List users (admin)",
        guards=[requires_admin],
        responses={**_ADMIN_ERRORS, HTTP_400_BAD_REQUEST: error_response("limit or offset out of range")},
    )
    async def list_users(
        self,
        user_service: NamedDependency[UserService],
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="Page size (1-100).")] = 20,
        offset: Annotated[int, QueryParameter(ge=0, description="Users to skip.")] = 0,
    ) -> UserPage:
        """Every user, oldest first, a page at a time."""
        users, total = await user_service.list_page(limit=limit, offset=offset)
        return UserPage(items=[_public(u) for u in users], total=total, limit=limit, offset=offset)

    @patch(
        "/{user_id:str}/role",
        summary="Change a user's role (admin)",
        guards=[requires_admin],
        responses={
            **_ADMIN_ERRORS,
            HTTP_400_BAD_REQUEST: error_response("Malformed body or unknown role"),
            HTTP_415_UNSUPPORTED_MEDIA_TYPE: error_response("The body is not JSON"),
            HTTP_404_NOT_FOUND: error_response("No such user (or a malformed id)"),
            HTTP_409_CONFLICT: error_response("The last admin cannot be demoted"),
        },
    )
    async def set_role(
        self,
        user_id: Annotated[str, PathParameter(description="The user's id.", format="uuid")],
        data: JSONBody[RoleUpdate],
        user_service: NamedDependency[UserService],
    ) -> UserRead:
        """Make a user an ``admin`` or a plain ``user``; the change applies on their next request."""
        try:
            uid = UUID(user_id)
        except ValueError:
            # Ids are opaque to clients: a malformed one names no user.
            raise HTTPException(status_code=HTTP_404_NOT_FOUND, detail="Not found") from None
        return _public(await user_service.set_role(uid, data.role))


class AvatarController(Controller):
    """Avatar uploads; registered under a router carrying the upload size limit."""

    path = "/api/users"
    tags = ["users"]
    dependencies = {"user_service": Provide(provide_user_service)}

    @patch(
        "/avatar",
        summary="Upload the current user's avatar (admin)",
        guards=[requires_admin],
        responses={
            **_ADMIN_ERRORS,
            HTTP_400_BAD_REQUEST: error_response("Not a multipart form with a `file` field"),
            HTTP_413_REQUEST_ENTITY_TOO_LARGE: error_response("The file is larger than AVATAR_MAX_BYTES"),
            HTTP_415_UNSUPPORTED_MEDIA_TYPE: error_response(
                "Not multipart/form-data, or not a PNG, JPEG, WebP or GIF image"
            ),
            HTTP_422_UNPROCESSABLE_ENTITY: error_response("The image has more pixels than AVATAR_MAX_PIXELS"),
            HTTP_502_BAD_GATEWAY: error_response("The avatar storage failed"),
        },
    )
    async def update_avatar(
        self,
        request: Request[CurrentUser, Any, Any],
        data: Annotated[AvatarUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
        user_service: NamedDependency[UserService],
        settings: NamedDependency[Settings],
    ) -> UserRead:
        """Replace the avatar; the type is judged from the bytes, never the name or content type."""
        content = await data.file.read(settings.avatar_max_bytes + 1)
        if len(content) > settings.avatar_max_bytes:
            raise HTTPException(
                status_code=HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                detail=f"The file is larger than {settings.avatar_max_bytes} bytes",
            )
        image = inspect_image(content, settings.avatar_max_pixels)
        storage: AvatarStorage = request.app.state.avatar_storage
        return _public(await user_service.set_avatar(request.user.id, content, image, storage))


def avatar_router(settings: Settings) -> Router:
    """The avatar route, with a body limit sized for an avatar instead of a JSON body.

    The limit sits on a router because it comes from the settings: Litestar answers ``413``
    before reading more than that, and the handler then checks the file itself.

    Args:
        settings: The application settings.

    Returns:
        A router holding :class:`AvatarController`.
    """
    return Router(
        path="/",
        route_handlers=[AvatarController],
        request_max_body_size=settings.avatar_max_bytes + MULTIPART_OVERHEAD,
    )
