"""The users domain's providers: its service for a request, or on a session of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar import Request
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app import cache
from app.users.service import UserService

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from litestar import Litestar


def user_service_on(session: AsyncSession, app: Litestar) -> UserService:
    """A :class:`UserService` on ``session``, with the app's user cache and bcrypt cost.

    Args:
        session: The database session of the unit of work.
        app: The application (its stores and settings).

    Returns:
        The service.
    """
    return UserService(
        session,
        user_cache=app.stores.get(cache.USER_CACHE),
        bcrypt_rounds=app.state.settings.bcrypt_rounds,
    )


async def provide_user_service(
    db_session: NamedDependency[AsyncSession], request: Request
) -> AsyncGenerator[UserService, None]:
    """Dependency: a :class:`UserService` on the request's database session.

    Args:
        db_session: The request's session (advanced-alchemy plugin).
        request: The current request (for the store and the settings).

    Yields:
        The service.
    """
    yield user_service_on(db_session, request.app)
