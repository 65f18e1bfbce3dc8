"""Users routes: the current user, avatars, and (for admins) the user list and roles.

``PATCH /api/users/me/password`` belongs to the password flows and lives with them.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Router, delete, get, patch
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
from app.ratelimit import AUTH, AUTH_PER_USER, ME, limited
from app.security.guards import requires_admin
from app.storage.adapters import AvatarStorage
from app.storage.images import inspect_image
from app.users.deps import provide_user_service
from app.users.schemas import AccountDeletion, CurrentUser, RoleUpdate, SessionRead, UserPage, UserRead
from app.users.service import UserService

_AUTH_ERRORS = {HTTP_401_UNAUTHORIZED: error_response("Missing, invalid or expired access token")}
_ADMIN_ERRORS = {**_AUTH_ERRORS, HTTP_403_FORBIDDEN: error_response("The user is not an admin")}


def _user_id(value: str) -> UUID:
    """A path's id as a UUID; a malformed one names nothing (``404``): ids are opaque to clients."""
    try:
        return UUID(value)
    except ValueError:
        raise HTTPException(status_code=HTTP_404_NOT_FOUND, detail="Not found") from None


def _current_session(request: Request[CurrentUser, Any, Any]) -> UUID | None:
    sid = request.auth.extras.get("sid")
    return UUID(sid) if sid else None


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

    @delete(
        "/me",
        opt=limited(AUTH, AUTH_PER_USER),
        summary="Delete my account",
        operation_id="delete_me",
        description='Needs the password (`{"password"}`). Erases the account at once and for good: '
        "contacts, sessions, the stored avatar and the mails still waiting to go out; a goodbye notice "
        "is mailed. Every token of the account stops working and the email can register again.",
        responses={
            HTTP_400_BAD_REQUEST: error_response("Wrong password, or a malformed body"),
            **_AUTH_ERRORS,
            HTTP_409_CONFLICT: error_response("The last admin cannot be deleted"),
            HTTP_415_UNSUPPORTED_MEDIA_TYPE: error_response("The body is not JSON"),
            HTTP_429_TOO_MANY_REQUESTS: error_response(
                "Too many attempts from this client or on this account; see Retry-After"
            ),
        },
    )
    async def delete_me(
        self,
        request: Request[CurrentUser, Any, Any],
        data: JSONBody[AccountDeletion],
        user_service: NamedDependency[UserService],
    ) -> None:
        """Erase the current user's account after checking the password again."""
        storage: AvatarStorage = request.app.state.avatar_storage
        await user_service.delete_own_account(request.user.id, data.password, storage)

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
        request: Request[CurrentUser, Any, Any],
        user_id: Annotated[str, PathParameter(description="The user's id.", format="uuid")],
        data: JSONBody[RoleUpdate],
        user_service: NamedDependency[UserService],
    ) -> UserRead:
        """Make a user an ``admin`` or a plain ``user``; the change applies on their next request."""
        return _public(await user_service.set_role(_user_id(user_id), data.role, by=request.user.id))

    @delete(
        "/{user_id:str}",
        summary="Delete a user's account (admin)",
        operation_id="delete_user",
        guards=[requires_admin],
        description="Erases the account as `DELETE /api/users/me` does (contacts, sessions, stored avatar, "
        "pending mails; a goodbye notice is mailed). No password is asked.",
        responses={
            **_ADMIN_ERRORS,
            HTTP_404_NOT_FOUND: error_response("No such user (or a malformed id)"),
            HTTP_409_CONFLICT: error_response("The last admin cannot be deleted"),
        },
    )
    async def delete_user(
        self,
        request: Request[CurrentUser, Any, Any],
        user_id: Annotated[str, PathParameter(description="The user's id.", format="uuid")],
        user_service: NamedDependency[UserService],
    ) -> None:
        """Erase another (or one's own) account; the last admin stays."""
        user = await user_service.get(_user_id(user_id))
        storage: AvatarStorage = request.app.state.avatar_storage
        await user_service.delete_account(user, storage, by=request.user.id)


class SessionsController(Controller):
    """The current user's sessions (logins): list them, end one, end all others."""

    path = "/api/users/me/sessions"
    tags = ["users"]
    dependencies = {"user_service": Provide(provide_user_service)}

    @get(
        "/",
        summary="My sessions",
        operation_id="list_my_sessions",
        description="The live sessions (logins) of the current user, newest first; `current` marks the one "
        "of this request's token. The address is truncated to its network (IPv4 /24, IPv6 /48).",
        responses=_AUTH_ERRORS,
    )
    async def list_sessions(
        self, request: Request[CurrentUser, Any, Any], user_service: NamedDependency[UserService]
    ) -> list[SessionRead]:
        """The current user's live sessions."""
        current = _current_session(request)
        return [
            SessionRead(
                id=row.id,
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                user_agent=row.user_agent,
                ip=row.ip,
                current=row.id == current,
            )
            for row in await user_service.live_sessions(request.user.id)
        ]

    @delete(
        "/{session_id:str}",
        summary="End one of my sessions",
        operation_id="end_my_session",
        description="Signs a device out: the session's refresh token is dead and its access tokens are refused "
        "from the next request on, on every server.",
        responses={
            **_AUTH_ERRORS,
            HTTP_404_NOT_FOUND: error_response("No such live session of yours (or a malformed id)"),
        },
    )
    async def end_session(
        self,
        request: Request[CurrentUser, Any, Any],
        session_id: Annotated[str, PathParameter(description="The session's id.", format="uuid")],
        user_service: NamedDependency[UserService],
    ) -> None:
        """End one live session of the current user."""
        if not await user_service.end_session(request.user.id, _user_id(session_id)):
            raise HTTPException(status_code=HTTP_404_NOT_FOUND, detail="Not found")

    @delete(
        "/",
        summary="End my other sessions",
        operation_id="end_my_other_sessions",
        description="Signs every other device out; the session of this request's token stays.",
        responses=_AUTH_ERRORS,
    )
    async def end_other_sessions(
        self, request: Request[CurrentUser, Any, Any], user_service: NamedDependency[UserService]
    ) -> None:
        """End every live session of the current user but this one."""
        await user_service.end_other_sessions(request.user.id, _current_session(request))


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
