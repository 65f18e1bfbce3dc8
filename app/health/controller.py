"""``GET /api/healthchecker``: is the database reachable, is the cache working."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import msgspec
from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Response
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy import literal_column, select

from app import cache
from app.db import CompiledStatement

logger = logging.getLogger(__name__)

PartState = Literal["ok", "unavailable"]

#: The database probe: the cheapest statement that needs a working connection.
PROBE = CompiledStatement(select(literal_column("1")))


class Health(msgspec.Struct):
    """State of the service and of each part it depends on."""

    status: Literal["ok", "degraded", "unavailable"]
    database: PartState
    cache: PartState


class HealthController(Controller):
    """Liveness and readiness in one route, as the seed published it."""

    path = "/api/healthchecker"
    tags = ["health"]

    @get(
        "/",
        summary="Check the service's health",
        operation_id="check_health",
        description="`200` when the database answers (the cache may be `unavailable`: the service then "
        "serves from the database); `503` naming the database when it does not.",
        responses={503: ResponseSpec(data_container=Health, description="The database is unreachable")},
        exclude_from_auth=True,
    )
    async def check(self, request: Request, state: State) -> Response[Health]:
        """Probe the database (short timeout, one round trip) and the cache.

        Args:
            request: The current request (gives access to the stores).
            state: The application state (its :class:`~app.db.DirectPool` and settings).

        Returns:
            The health report; status ``503`` when the database is down.
        """
        database: PartState = "ok"
        try:
            async with asyncio.timeout(state.settings.health_timeout):
                await state.direct_pool.fetch(PROBE)
        except Exception as exc:
            logger.warning("health: database unavailable (%s)", type(exc).__name__)
            database = "unavailable"
        cache_state: PartState = (
            "ok" if await cache.ping(request.app.stores.get(cache.USER_CACHE)) else "unavailable"
        )
        if database != "ok":
            body = Health(status="unavailable", database=database, cache=cache_state)
            return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE)
        status = "ok" if cache_state == "ok" else "degraded"
        return Response(Health(status=status, database=database, cache=cache_state), status_code=HTTP_200_OK)
