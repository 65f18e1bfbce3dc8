"""Helpers shared by the reliability and security tests.

- :func:`serve`: the app with its lifespan run on the *test's* event loop, reached through
  ``httpx.ASGITransport``. Unlike Litestar's test client (which runs the app in a portal
  thread and handles one request at a time), requests sent with ``asyncio.gather`` really
  interleave here, which the race tests need.
- :func:`capture_all_logs`: every record of every logger at DEBUG (the ``app`` loggers do
  not propagate to the root, so caplog alone would miss them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import httpx

from app.main import create_app

if TYPE_CHECKING:
    from litestar import Litestar

    from app.config import Settings

BASE_URL = "http://testserver.local"


class AppClient(httpx.AsyncClient):
    """An httpx client bound to one in-process app (``client.app``)."""

    app: Litestar


@contextlib.asynccontextmanager
async def serve(settings: Settings, *, client_host: str = "127.0.0.1") -> AsyncIterator[AppClient]:
    """Run an app for ``settings`` (lifespan included) and yield a client of it.

    Args:
        settings: The settings of the app.
        client_host: The client address the app sees.

    Yields:
        A client whose requests run on the current event loop, concurrently when gathered.
    """
    app = create_app(settings)
    started, stop = asyncio.Event(), asyncio.Event()

    async def run_lifespan() -> None:
        # The lifespan holds anyio cancel scopes, which must be left by the task that entered
        # them; pytest-asyncio tears fixtures down in another task, so it gets its own task.
        async with app.lifespan():
            started.set()
            await stop.wait()

    lifespan = asyncio.create_task(run_lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait({lifespan, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if lifespan.done():
        waiter.cancel()
        lifespan.result()  # start-up failed: raise its error
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(client_host, 50000))
    try:
        async with AppClient(transport=transport, base_url=BASE_URL, timeout=30) as client:
            client.app = app
            yield client
    finally:
        stop.set()
        await lifespan


@contextlib.asynccontextmanager
async def serve_live(settings: Settings) -> AsyncIterator[AppClient]:
    """Run an app for ``settings`` under uvicorn on a free loopback port (on the current loop).

    Unlike :func:`serve`, the client gets each answer as soon as it is sent, before the
    background tasks (mail) run: what a real client would time.

    Yields:
        A client of the live server (``client.app`` is the app).
    """
    import uvicorn

    from tests.reliability.services import free_port

    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # start-up failed: raise its error
            msg = "uvicorn stopped before it started"
            raise RuntimeError(msg)
        await asyncio.sleep(0.01)
    try:
        async with AppClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            client.app = app
            yield client
    finally:
        server.should_exit = True
        await task


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class LogCapture:
    """What :func:`capture_all_logs` caught."""

    def __init__(self, handler: _ListHandler) -> None:
        self._handler = handler
        self._formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    @property
    def records(self) -> list[logging.LogRecord]:
        """Every record, in order."""
        return self._handler.records

    def text(self, where: Callable[[logging.LogRecord], bool] | None = None) -> str:
        """Every record (or those ``where`` accepts) fully formatted, arguments included."""
        lines = []
        for record in self.records:
            if where is not None and not where(record):
                continue
            lines.append(self._formatter.format(record))
            # The raw arguments too: a handler with another format could print them differently.
            lines.append(repr(record.args))
        return "\n".join(lines)

    def ignore(self, *prefixes: str) -> None:
        """Drop the records of the loggers named by ``prefixes`` (and their children)."""
        self._handler.records[:] = [
            r for r in self.records if not any(r.name == p or r.name.startswith(p + ".") for p in prefixes)
        ]

    def sources_of(self, needle: str) -> set[str]:
        """The loggers (and levels) of the records whose text holds ``needle``."""
        return {
            f"{record.name}:{record.levelname}"
            for record in self.records
            if needle in self._formatter.format(record) or needle in repr(record.args)
        }


@contextlib.contextmanager
def capture_all_logs() -> Iterator[LogCapture]:
    """Capture every log record of every logger (existing and new) at DEBUG level.

    Yields:
        The capture; read it after the block (or during it).
    """
    handler = _ListHandler()
    manager = logging.Logger.manager
    root = logging.getLogger()
    touched: list[tuple[logging.Logger, int, bool]] = []

    def hook(logger: logging.Logger) -> None:
        touched.append((logger, logger.level, handler in logger.handlers))
        logger.setLevel(logging.DEBUG)
        if handler not in logger.handlers and (logger is root or not logger.propagate):
            logger.addHandler(handler)

    hook(root)
    for logger in list(manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            hook(logger)
    manager._clear_cache()  # type: ignore[attr-defined] - levels are cached per logger
    try:
        yield LogCapture(handler)
    finally:
        for logger, level, had in touched:
            logger.setLevel(level)
            if not had:
                with contextlib.suppress(ValueError):
                    logger.removeHandler(handler)
        manager._clear_cache()  # type: ignore[attr-defined]
