"""The auth domain's providers: its service for a request, or on a session of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import AuthService
from app.users.deps import user_service_on

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from litestar import Litestar


async def provide_auth_service(
    db_session: NamedDependency[AsyncSession], request: Request
) -> AsyncGenerator[AuthService, None]:
    """Dependency: an :class:`AuthService` on the request's session (``db_session``) and app."""
    yield AuthService(users=user_service_on(db_session, request.app), settings=request.app.state.settings)


async def resolve_account_request(
    app: Litestar, session: AsyncSession, email: str, params: dict[str, Any]
) -> bool:
    """The job runner's resolver of an account request row: queue the mail it asks for, if due.

    Args:
        app: The application (its stores and settings).
        session: The runner's session for this row (committed by the service with the mail).
        email: The address the client sent.
        params: The row's params (``mail``: which mail was asked for, and what that mail needs).

    Returns:
        Whether a mail was queued.
    """
    service = AuthService(users=user_service_on(session, app), settings=app.state.settings)
    return await service.resolve_account_request(email, params)
