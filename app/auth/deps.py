"""The auth domain's providers: its service for a request, or on a session of its own."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from litestar import Request
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.service import AuthService
from app.users.deps import user_service_on

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from litestar import Litestar


async def provide_auth_service(
    db_session: NamedDependency[AsyncSession], request: Request
) -> AsyncGenerator[AuthService, None]:
    """Dependency: an :class:`AuthService` on the request's session (``db_session``) and app."""
    yield AuthService(users=user_service_on(db_session, request.app), settings=request.app.state.settings)


@contextlib.asynccontextmanager
async def auth_service_for(app: Litestar) -> AsyncIterator[AuthService]:
    """An :class:`AuthService` on a database session of its own, for work after the answer.

    The request's session is closed once the answer is sent, so a background task opens its own.

    Args:
        app: The application (its database config, stores and settings).

    Yields:
        The service; its session closes when the block ends.
    """
    async with app.state.db_config.get_session() as session:
        yield AuthService(users=user_service_on(session, app), settings=app.state.settings)
