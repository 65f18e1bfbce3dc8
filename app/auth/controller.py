"""Auth routes: registration, confirmation, login sessions, password reset and change.

Controllers only call :class:`AuthService` and shape the answer. The service's errors carry
their own answer (:class:`app.errors.AppError`); the routes a browser reaches from a mailed
link declare the HTML page some of them get instead (``opt={ERROR_PAGE: ...}``). Mails are
outbox rows the service writes with its change; the job runner (``app.jobs``) delivers them,
so a slow or failing mail server never delays or fails a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar
from uuid import UUID

import msgspec
from litestar import Controller, MediaType, Request, Response, get, patch, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import Body, FromPath, JSONBody
from litestar.response import Template
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_204_NO_CONTENT,
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_409_CONFLICT,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_429_TOO_MANY_REQUESTS,
)

from app.auth.deps import provide_auth_service
from app.auth.schemas import (
    EmailChange,
    EmailRequest,
    LoginForm,
    Message,
    NewPassword,
    PasswordChange,
    RefreshRequest,
    Register,
    Tokens,
)
from app.auth.service import CONFIRM_EMAIL, RESET_PASSWORD, AuthService, InvalidLink, WeakPassword
from app.errors import ERROR_PAGE, AppError, ErrorBody, error_response
from app.http import BODY_MEDIA_TYPES, JSON, URL_ENCODED, InvalidBody, is_form, read_body, wants_html
from app.input import SINGLE_LINE
from app.ratelimit import AUTH, AUTH_PER_USER, limited
from app.security.password_policy import MAX_LENGTH, MIN_LENGTH
from app.users.devices import request_device
from app.users.schemas import CurrentUser, UserRead
from app.users.service import UserExistsError

logger = logging.getLogger(__name__)

CONFIRMED = "Your email is confirmed."
ALREADY_CONFIRMED = "Your email was already confirmed."
CONFIRMATION_QUEUED = (
    "If an account with this email exists and is not confirmed yet, a confirmation link was sent."
)
RESET_QUEUED = "If an account with this email exists, a password reset link was sent."
RESET_LINK_VALID = "The link is valid: POST the new password to this address."
PASSWORD_RESET = "Your password was changed. Log in with the new one."  # noqa: S105 - a message
EMAIL_CHANGE_QUEUED = (
    "If the new address can be used, a confirmation link was sent to it. "
    "Your email changes when that link is confirmed."
)
EMAIL_CHANGE_LINK_VALID = "The link is valid: POST to this address to change your email."
FORM_PASSWORD_RULE = f"The new password must be {MIN_LENGTH} to {MAX_LENGTH} characters long."


_INVALID_BODY = {
    HTTP_400_BAD_REQUEST: error_response("Malformed body, unknown field or a value out of bounds"),
    HTTP_415_UNSUPPORTED_MEDIA_TYPE: error_response("The body has the wrong content type"),
}
_THROTTLED = {
    HTTP_429_TOO_MANY_REQUESTS: error_response("Too many attempts from this client; see Retry-After")
}
_BAD_LINK_RESPONSES = {
    HTTP_400_BAD_REQUEST: ResponseSpec(
        data_container=ErrorBody,
        description="The token is invalid, expired, already used or made for another purpose "
        "(an HTML page for a browser)",
        generate_examples=False,
    )
}


def _user_read(user: Any) -> UserRead:
    return msgspec.convert(user, UserRead, from_attributes=True)


def _page(
    template: str, status_code: int = HTTP_200_OK, *, background: BackgroundTask | None = None, **context: Any
) -> Template:
    return Template(
        template_name=template,
        context=context,
        status_code=status_code,
        media_type=MediaType.HTML,
        background=background,
    )


def _reset_form(
    token_path: str, status_code: int = HTTP_200_OK, error: str | None = None, error_field: str = "password"
) -> Template:
    # error_field: the input the error is about; the page focuses it and ties the error to it.
    return _page(
        "auth/reset_form.html",
        status_code,
        action=token_path,
        error=error,
        error_field=error_field,
        min_length=MIN_LENGTH,
        max_length=MAX_LENGTH,
    )


def _confirm_error_page(request: Request[Any, Any, Any], exc: AppError) -> Template | None:
    """The page of a confirmation link that cannot be used, for a browser."""
    if isinstance(exc, InvalidLink) and wants_html(request):
        return _page(
            "auth/confirm_result.html",
            HTTP_400_BAD_REQUEST,
            ok=False,
            title="Link not valid",
            message=exc.detail,
        )
    return None


def _reset_link_error_page(request: Request[Any, Any, Any], exc: AppError) -> Template | None:
    """The page of a reset link that cannot be used, for a browser."""
    if isinstance(exc, InvalidLink) and wants_html(request):
        return _page("auth/reset_invalid.html", HTTP_400_BAD_REQUEST, message=exc.detail)
    return None


def _reset_form_error_page(request: Request[Any, Any, Any], exc: AppError) -> Template | None:
    """The reset form again, with what is wrong, for a form post; the bad-link page for a browser."""
    if isinstance(exc, InvalidLink):
        return _reset_link_error_page(request, exc)
    if not (is_form(request) and isinstance(exc, WeakPassword | InvalidBody)):
        return None
    if isinstance(exc, InvalidBody):
        # The form's minlength/maxlength stop this in a browser; one that skips them still
        # gets the form back with the rule rather than a JSON error.
        return _reset_form(request.url.path, HTTP_400_BAD_REQUEST, error=FORM_PASSWORD_RULE)
    return _reset_form(request.url.path, HTTP_400_BAD_REQUEST, exc.detail, exc.field or "password")


def _email_change_error_page(request: Request[Any, Any, Any], exc: AppError) -> Template | None:
    """The page of an email change link that cannot be used, or came too late, for a browser."""
    if not (wants_html(request) or is_form(request)):
        return None
    if isinstance(exc, InvalidLink):
        return _page(
            "auth/email_change_result.html",
            HTTP_400_BAD_REQUEST,
            ok=False,
            taken=False,
            title="Link not valid",
            message=exc.detail,
        )
    if isinstance(exc, UserExistsError):
        return _page(
            "auth/email_change_result.html",
            HTTP_409_CONFLICT,
            ok=False,
            taken=True,
            title="Address taken",
            message="This address belongs to another account now.",
        )
    return None


@dataclass
class _PageOperation(Operation):
    """Documents that the ``200`` and ``400`` answers may also be an HTML page (for a browser)."""

    #: The status codes whose answer may be a page.
    page_codes: ClassVar[tuple[str, ...]] = ("200", "400")

    def __post_init__(self) -> None:
        page = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, description="An HTML page"))
        for code in self.page_codes:
            response = (self.responses or {}).get(code)
            if isinstance(response, OpenAPIResponse):
                response.content = {**(response.content or {}), MediaType.HTML: page}


@dataclass
class _EmailChangePageOperation(_PageOperation):
    """The email change confirmation: its ``409`` may be a page as well."""

    page_codes: ClassVar[tuple[str, ...]] = ("200", "400", "409")


@dataclass
class _NewPasswordOperation(_PageOperation):
    """Documents both bodies the reset POST accepts (the handler parses them itself)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        password = Schema(
            type=OpenAPIType.STRING,
            min_length=MIN_LENGTH,
            max_length=MAX_LENGTH,
            pattern=SINGLE_LINE,
            description="The new password: 8 to 128 characters; common passwords are refused.",
        )
        schema = Schema(
            type=OpenAPIType.OBJECT,
            properties={
                "password": password,
                "password_confirm": Schema(
                    type=OpenAPIType.STRING,
                    max_length=MAX_LENGTH,
                    pattern=SINGLE_LINE,
                    description="Optional: the HTML form's repeat field; must equal `password` when sent.",
                ),
            },
            required=["password"],
            additional_properties=False,
        )
        self.request_body = RequestBody(
            content={
                MediaType.JSON: OpenAPIMediaType(schema=schema),
                RequestEncodingType.URL_ENCODED: OpenAPIMediaType(schema=schema),
            },
            required=True,
            description='JSON `{"password"}` or a form with `password`; `password_confirm` (the HTML '
            "form's repeat field) is checked only when sent.",
        )


class AuthController(Controller):
    """Accounts and sessions."""

    path = "/api/auth"
    tags = ["auth"]
    dependencies = {"auth_service": Provide(provide_auth_service)}

    @post(
        "/register",
        exclude_from_auth=True,
        opt=limited(AUTH),
        status_code=HTTP_201_CREATED,
        summary="Create an account",
        description="Creates an unconfirmed account with the `user` role and mails a confirmation link. "
        "Unknown fields (such as `role` or `confirmed`) are refused with `400`.",
        responses={
            **_INVALID_BODY,
            HTTP_409_CONFLICT: error_response(
                "The email or the username is already taken (case-insensitively)"
            ),
            **_THROTTLED,
        },
    )
    async def register(
        self, data: JSONBody[Register], auth_service: NamedDependency[AuthService]
    ) -> Response[UserRead]:
        """Create an account and mail its confirmation link."""
        user = await auth_service.register(username=data.username, email=data.email, password=data.password)
        return Response(_user_read(user), status_code=HTTP_201_CREATED)

    @post(
        "/login",
        exclude_from_auth=True,
        opt=limited(AUTH),
        status_code=HTTP_200_OK,
        summary="Log in (OAuth2 password grant)",
        description="Form fields `username` (the email **or** the username) and `password`. "
        "Opens a session and returns its tokens.",
        responses={
            **_INVALID_BODY,
            HTTP_401_UNAUTHORIZED: error_response("Unknown user or wrong password (one message for both)"),
            HTTP_403_FORBIDDEN: error_response("Right password, but the email is not confirmed yet"),
            **_THROTTLED,
        },
    )
    async def login(
        self,
        request: Request,
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
        auth_service: NamedDependency[AuthService],
    ) -> Tokens:
        """Exchange credentials for an access and a refresh token."""
        user_agent, ip = request_device(request)
        return await auth_service.login(data.username, data.password, user_agent=user_agent, ip=ip)

    @post(
        "/refresh_token",
        exclude_from_auth=True,
        status_code=HTTP_200_OK,
        summary="Rotate the refresh token",
        description="Returns new tokens for the same session; the refresh token sent is dead afterwards. "
        "Sending a refresh token that was already rotated ends **every** session of its user.",
        responses={
            **_INVALID_BODY,
            HTTP_401_UNAUTHORIZED: error_response("Invalid, expired, re-used or wrong-purpose refresh token"),
        },
    )
    async def refresh_token(
        self, request: Request, data: JSONBody[RefreshRequest], auth_service: NamedDependency[AuthService]
    ) -> Tokens:
        """Rotate a refresh token."""
        _, ip = request_device(request)
        return await auth_service.refresh(data.refresh_token, ip=ip)

    @post(
        "/logout",
        status_code=HTTP_204_NO_CONTENT,
        summary="End a session",
        description="Ends the session of the refresh token sent; its tokens stop working at once.",
        responses={
            **_INVALID_BODY,
            HTTP_401_UNAUTHORIZED: error_response(
                "Missing/invalid access token, or a refresh token that is not yours"
            ),
        },
    )
    async def logout(
        self,
        request: Request[CurrentUser, Any, Any],
        data: JSONBody[RefreshRequest],
        auth_service: NamedDependency[AuthService],
    ) -> None:
        """End the session the refresh token belongs to."""
        await auth_service.logout(request.user.id, data.refresh_token)

    @get(
        "/confirmed_email/{token:str}",
        exclude_from_auth=True,
        operation_class=_PageOperation,
        operation_id="confirm_email",
        opt={ERROR_PAGE: _confirm_error_page},
        summary="Confirm an email address",
        description="The link of the confirmation mail. A browser (`Accept: text/html`) gets an HTML page.",
        responses={
            HTTP_400_BAD_REQUEST: ResponseSpec(
                data_container=ErrorBody,
                description="Invalid, expired or wrong-purpose token (an HTML page for a browser)",
                generate_examples=False,
            )
        },
    )
    async def confirmed_email(
        self, request: Request, token: FromPath[str], auth_service: NamedDependency[AuthService]
    ) -> Response[Message]:
        """Confirm the email a confirmation token was made for."""
        _user, already = await auth_service.confirm_email(token)
        message = ALREADY_CONFIRMED if already else CONFIRMED
        if wants_html(request):
            return _page("auth/confirm_result.html", ok=True, title="Email confirmed", message=message)
        return Response(Message(message=message))

    @post(
        "/request_email",
        exclude_from_auth=True,
        opt=limited(AUTH),
        status_code=HTTP_202_ACCEPTED,
        summary="Re-send the confirmation mail",
        description="Always the same answer, whether or not the account exists or is confirmed.",
        responses={**_INVALID_BODY, **_THROTTLED},
    )
    async def request_email(
        self, data: JSONBody[EmailRequest], auth_service: NamedDependency[AuthService]
    ) -> Response[Message]:
        """Mail a new confirmation link if the account exists and is unconfirmed (by the job runner)."""
        await auth_service.queue_account_request(CONFIRM_EMAIL, data.email)
        return Response(Message(message=CONFIRMATION_QUEUED), status_code=HTTP_202_ACCEPTED)

    @post(
        "/update_password",
        exclude_from_auth=True,
        opt=limited(AUTH),
        status_code=HTTP_202_ACCEPTED,
        summary="Start a password reset",
        operation_id="request_password_reset",
        description="Mails a link to `GET /api/auth/confirm_update_password/{token}`. "
        "Always the same answer, whether or not the account exists.",
        responses={**_INVALID_BODY, **_THROTTLED},
    )
    async def update_password(
        self, data: JSONBody[EmailRequest], auth_service: NamedDependency[AuthService]
    ) -> Response[Message]:
        """Mail a password reset link if an account has this email (by the job runner)."""
        await auth_service.queue_account_request(RESET_PASSWORD, data.email)
        return Response(Message(message=RESET_QUEUED), status_code=HTTP_202_ACCEPTED)

    @get(
        "/confirm_update_password/{token:str}",
        exclude_from_auth=True,
        operation_class=_PageOperation,
        summary="Check a password reset link",
        operation_id="check_password_reset",
        opt={ERROR_PAGE: _reset_link_error_page},
        description="A browser (`Accept: text/html`) gets a form that posts the new password to this address; "
        "a JSON client gets a message.",
        responses=_BAD_LINK_RESPONSES,
    )
    async def check_reset_link(
        self, request: Request, token: FromPath[str], auth_service: NamedDependency[AuthService]
    ) -> Response[Message]:
        """Check a reset token; show the form to a browser."""
        await auth_service.check_reset_token(token)
        if wants_html(request):
            return _reset_form(request.url.path)
        return Response(Message(message=RESET_LINK_VALID))

    @post(
        "/confirm_update_password/{token:str}",
        exclude_from_auth=True,
        status_code=HTTP_200_OK,
        opt={**limited(AUTH), BODY_MEDIA_TYPES: (JSON, URL_ENCODED), ERROR_PAGE: _reset_form_error_page},
        summary="Set the new password of a reset",
        description='Accepts JSON `{"password"}` or the HTML form. The link works once, expires, and dies when '
        "the password changes. Every session of the user ends and a notice is mailed.",
        responses={
            **_BAD_LINK_RESPONSES,
            HTTP_415_UNSUPPORTED_MEDIA_TYPE: error_response("The body is neither JSON nor a form"),
            **_THROTTLED,
        },
        operation_class=_NewPasswordOperation,
    )
    async def reset_password(
        self, request: Request, token: FromPath[str], auth_service: NamedDependency[AuthService]
    ) -> Response[Message]:
        """Set the new password from a reset link."""
        data = await read_body(request, NewPassword)
        confirm = None if data.password_confirm is msgspec.UNSET else data.password_confirm
        await auth_service.reset_password(token, data.password, confirm)
        if is_form(request) or wants_html(request):
            return _page("auth/reset_done.html", message=PASSWORD_RESET)
        return Response(Message(message=PASSWORD_RESET))

    @get(
        "/confirm_email_change/{token:str}",
        exclude_from_auth=True,
        operation_class=_PageOperation,
        operation_id="check_email_change",
        opt={ERROR_PAGE: _email_change_error_page},
        summary="Check an email change link",
        description="The link mailed to the new address by `POST /api/users/me/email`. Changes nothing: "
        "a browser (`Accept: text/html`) gets a page whose button POSTs to this address; a JSON "
        "client gets a message.",
        responses=_BAD_LINK_RESPONSES,
    )
    async def check_email_change(
        self, request: Request, token: FromPath[str], auth_service: NamedDependency[AuthService]
    ) -> Response[Message]:
        """Check an email change token; show the confirmation button to a browser."""
        _user, new_email = await auth_service.check_email_change_token(token)
        if wants_html(request):
            return _page("auth/email_change_form.html", action=request.url.path, new_email=new_email)
        return Response(Message(message=EMAIL_CHANGE_LINK_VALID))

    @post(
        "/confirm_email_change/{token:str}",
        exclude_from_auth=True,
        status_code=HTTP_200_OK,
        opt={**limited(AUTH), ERROR_PAGE: _email_change_error_page},
        operation_class=_EmailChangePageOperation,
        operation_id="confirm_email_change",
        summary="Confirm an email change",
        description="Takes no body (the page's button posts an empty form). Changes the account's email "
        "to the address the link was mailed to; `confirmed` stays. Every session but the one that "
        "asked for the change ends, and the former address gets a notice. The link works once, "
        "expires, and dies when the password or the email changes.",
        responses={
            **_BAD_LINK_RESPONSES,
            HTTP_409_CONFLICT: ResponseSpec(
                data_container=ErrorBody,
                description="Another account took the address since the link was sent "
                "(an HTML page for a browser)",
                generate_examples=False,
            ),
            **_THROTTLED,
        },
    )
    async def confirm_email_change(
        self, request: Request, token: FromPath[str], auth_service: NamedDependency[AuthService]
    ) -> Response[Message]:
        """Change the email to the one the link was mailed to."""
        user = await auth_service.confirm_email_change(token)
        message = f"Your email is now {user.email}."
        if is_form(request) or wants_html(request):
            return _page(
                "auth/email_change_result.html", ok=True, taken=False, title="Email changed", message=message
            )
        return Response(Message(message=message))


class EmailChangeController(Controller):
    """The logged-in user's email address."""

    path = "/api/users/me/email"
    tags = ["users"]
    dependencies = {"auth_service": Provide(provide_auth_service)}

    @post(
        "/",
        opt=limited(AUTH, AUTH_PER_USER),
        status_code=HTTP_202_ACCEPTED,
        summary="Change my email",
        description="Needs the account password. Mails a link to `/api/auth/confirm_email_change/{token}` "
        "to the new address (it works once, for `EMAIL_CHANGE_TOKEN_HOURS`) and a notice to the current "
        "one; the email changes only when the link is confirmed. The answer is the same whether or not "
        "another account has the new address (then no link is sent).",
        responses={
            HTTP_400_BAD_REQUEST: error_response(
                "Wrong password, a malformed address, or the address the account has already"
            ),
            HTTP_401_UNAUTHORIZED: error_response("Missing, invalid or expired access token"),
            HTTP_415_UNSUPPORTED_MEDIA_TYPE: error_response("The body is not JSON"),
            HTTP_429_TOO_MANY_REQUESTS: error_response(
                "Too many attempts from this client or on this account; see Retry-After"
            ),
        },
    )
    async def change_email(
        self,
        request: Request[CurrentUser, Any, Any],
        data: JSONBody[EmailChange],
        auth_service: NamedDependency[AuthService],
    ) -> Response[Message]:
        """Start changing the email of the current user."""
        sid = request.auth.extras.get("sid")
        await auth_service.request_email_change(
            request.user.id, UUID(sid) if sid else None, data.password, data.new_email
        )
        return Response(Message(message=EMAIL_CHANGE_QUEUED), status_code=HTTP_202_ACCEPTED)


class PasswordController(Controller):
    """The logged-in user's password."""

    path = "/api/users/me/password"
    tags = ["users"]
    dependencies = {"auth_service": Provide(provide_auth_service)}

    @patch(
        "/",
        opt=limited(AUTH, AUTH_PER_USER),
        status_code=HTTP_204_NO_CONTENT,
        summary="Change my password",
        description="Needs the current password. Ends every other session (the one making the change stays) "
        "and mails a notice.",
        responses={
            HTTP_400_BAD_REQUEST: error_response("Wrong current password, or an unacceptable new one"),
            HTTP_401_UNAUTHORIZED: error_response("Missing, invalid or expired access token"),
            HTTP_415_UNSUPPORTED_MEDIA_TYPE: error_response("The body is not JSON"),
            HTTP_429_TOO_MANY_REQUESTS: error_response(
                "Too many attempts from this client or on this account; see Retry-After"
            ),
        },
    )
    async def change_password(
        self,
        request: Request[CurrentUser, Any, Any],
        data: JSONBody[PasswordChange],
        auth_service: NamedDependency[AuthService],
    ) -> Response[None]:
        """Change the password of the current user."""
        sid = request.auth.extras.get("sid")
        await auth_service.change_password(
            request.user.id, UUID(sid) if sid else None, data.current_password, data.new_password
        )
        return Response(None, status_code=HTTP_204_NO_CONTENT)
