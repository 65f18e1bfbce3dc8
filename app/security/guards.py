"""Route guards, named ``requires_<condition>``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.exceptions import PermissionDeniedException

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler


def requires_admin(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
    """Let only users with the ``admin`` role through (``403`` otherwise).

    Raises:
        PermissionDeniedException: The user is not an admin.
    """
    if connection.user.role != "admin":
        raise PermissionDeniedException("Admins only")
