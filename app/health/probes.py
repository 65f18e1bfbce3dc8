"""Kubernetes-style probes: ``GET /livez`` (the process answers) and ``GET /readyz`` (it can serve).

``/readyz`` is ``200`` when the database answers, the cache answers, the database schema is
at the migrations' head and the process is not shutting down; else ``503``. On ``SIGTERM``
the process turns not-ready at once and keeps serving for ``SHUTDOWN_DELAY`` seconds (long
enough for a load balancer to stop sending it requests), then lets the server stop accepting
connections and drain the ones in flight (``SHUTDOWN_TIMEOUT``, see :mod:`app.server`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from litestar import get
from litestar.response import Response
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy import column, select, table

from app import cache as stores
from app.db import CompiledStatement
from app.health.controller import PROBE

if TYPE_CHECKING:
    from types import FrameType

    from litestar import Litestar, Request
    from litestar.datastructures import State

logger = logging.getLogger(__name__)

#: The application-state key of the "shutting down" flag.
DRAINING = "draining"
#: The revisions the database is at.
VERSIONS = CompiledStatement(select(column("version_num")).select_from(table("alembic_version")))

PartState = Literal["ok", "unavailable"]
#: ``ok``: at the code's head; ``pending``: behind it; ``ahead``: at a revision this code does
#: not know (a newer release migrated first; its migrations must keep this one working).
MigrationState = Literal["ok", "pending", "ahead", "unknown"]


class Alive(msgspec.Struct):
    """The liveness answer."""

    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct):
    """Whether this process should receive traffic, and each reason it should not."""

    status: Literal["ready", "unavailable"]
    database: PartState
    cache: PartState
    migrations: MigrationState
    shutting_down: bool


@get(
    "/livez",
    summary="Is the process alive",
    include_in_schema=False,
    exclude_from_auth=True,
    sync_to_thread=False,
)
def livez() -> Alive:
    """Answer without any I/O: a stuck event loop or a dead process is what this detects.

    Returns:
        ``{"status": "ok"}``.
    """
    return Alive()


@get("/readyz", summary="Can the process serve", include_in_schema=False, exclude_from_auth=True)
async def readyz(request: Request, state: State) -> Response[Readiness]:
    """Probe the database (and its schema revision) and the cache, and check for a shutdown.

    Args:
        request: The current request (gives access to the stores).
        state: The application state (its database, settings and draining flag).

    Returns:
        The readiness report, ``200`` when every part is fine, else ``503``.
    """
    timeout = state.settings.health_timeout
    draining = bool(state.get(DRAINING, False))
    database: PartState = "ok"
    migrations: MigrationState = "unknown"
    try:
        async with asyncio.timeout(timeout):
            await state.direct_pool.fetch(PROBE)
    except Exception as exc:
        logger.warning("readyz: database unavailable (%s)", type(exc).__name__)
        database = "unavailable"
    else:
        migrations = await _migration_state(state, timeout)
    cache_state: PartState = (
        "ok" if await stores.ping(request.app.stores.get(stores.USER_CACHE), timeout) else "unavailable"
    )
    ready = database == "ok" and cache_state == "ok" and migrations in {"ok", "ahead"} and not draining
    body = Readiness(
        status="ready" if ready else "unavailable",
        database=database,
        cache=cache_state,
        migrations=migrations,
        shutting_down=draining,
    )
    return Response(body, status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE)


async def _migration_state(state: State, timeout: float) -> MigrationState:
    """Compare the database's revisions with the heads of the migration scripts."""
    try:
        async with asyncio.timeout(timeout):
            rows = await state.direct_pool.fetch(VERSIONS)
    except Exception as exc:  # no version table yet: nothing was migrated
        logger.warning("readyz: schema revision unreadable (%s)", type(exc).__name__)
        return "pending"
    try:
        heads, known = code_revisions(state.db_config.alembic_config.script_location)
    except Exception as exc:
        logger.warning("readyz: migration scripts unreadable (%s)", type(exc).__name__)
        return "unknown"
    current = {row[0] for row in rows}
    if current == heads:
        return "ok"
    if current - known:
        return "ahead"
    return "pending"


@cache
def code_revisions(script_location: str) -> tuple[frozenset[str], frozenset[str]]:
    """The head revisions and every revision of the migration scripts (read once per process).

    Args:
        script_location: Alembic's script directory.

    Returns:
        ``(heads, all revisions)``.
    """
    from alembic.script import ScriptDirectory  # local: only the probe needs it

    script = ScriptDirectory(str(Path(script_location)))
    heads = frozenset(script.get_heads())
    known = frozenset(rev.revision for rev in script.walk_revisions())
    return heads, known


def drain_on_sigterm(delay: float) -> Any:
    """Return a start-up hook that turns ``/readyz`` to ``503`` on ``SIGTERM``, ahead of the server.

    The hook wraps the signal handler the server installed (uvicorn's, for one process or each
    worker): on ``SIGTERM`` the app is marked draining and the server's own handler (stop
    accepting, finish what is in flight) runs ``delay`` seconds later. ``SIGINT`` (Ctrl-C) and a
    second ``SIGTERM`` pass through at once. Outside the main thread (the test client) there
    is no signal to wrap and the hook does nothing.

    Args:
        delay: Seconds between ``SIGTERM`` and the server's shutdown.

    Returns:
        An ``on_startup`` hook.
    """

    def install(app: Litestar) -> None:
        app.state[DRAINING] = False
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handle(sig: int, frame: FrameType | None) -> None:
            server_handler = previous[signal.Signals(sig)]
            already = app.state[DRAINING]
            app.state[DRAINING] = True
            if sig == signal.SIGTERM and not already and delay > 0:
                logger.info("SIGTERM: not ready; the server stops in %.1f s", delay)
                loop.call_soon_threadsafe(loop.call_later, delay, _call, server_handler, sig, frame)
            else:
                _call(server_handler, sig, frame)

        for sig in previous:
            signal.signal(sig, handle)

    return install


def _call(handler: Any, sig: int, frame: FrameType | None) -> None:
    """Run a saved signal handler (the default action when there was none of Python's)."""
    if callable(handler):
        handler(sig, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)


def mark_draining(app: Litestar) -> None:
    """A shutdown hook: once the server shuts the app down, it is not ready (any server)."""
    app.state[DRAINING] = True
