"""Fixtures of the reliability tests: an in-loop app client and private services."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest

from app.config import Settings
from tests.conftest import with_runner
from tests.reliability.harness import AppClient, serve, serve_live
from tests.reliability.services import PrivatePostgres, PrivateRedis, SmtpSink


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AppClient]:
    """Override: the app runs on the test's loop, so gathered requests really run concurrently."""
    async with serve(settings) as c:
        yield c


@pytest.fixture
def in_app_loop() -> Callable[..., Any]:
    """Override: the app already runs on the test's loop, so coroutines run right here."""

    async def run(fn: Callable[..., Any], *args: Any) -> Any:
        return await fn(*args)

    return run


@pytest.fixture
def serve_with(settings: Settings) -> Callable[..., Any]:
    """Factory: ``async with serve_with(**setting_overrides) as client`` (in-loop app)."""

    def factory(**overrides: Any) -> Any:
        return serve(msgspec.structs.replace(settings, **with_runner(overrides)))

    return factory


@pytest.fixture
def live_with(settings: Settings) -> Callable[..., Any]:
    """Factory: ``async with live_with(**setting_overrides) as client`` (uvicorn on loopback)."""

    def factory(**overrides: Any) -> Any:
        return serve_live(msgspec.structs.replace(settings, **with_runner(overrides)))

    return factory


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A running redis-server of this test only, which the test may stop and restart."""
    if not PrivateRedis.available():
        pytest.skip("redis-server is not installed")
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running throw-away PostgreSQL cluster, which the test may stop and restart."""
    reason = PrivatePostgres.unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
    except Exception as exc:  # pragma: no cover - depends on the machine
        server.destroy()
        pytest.skip(f"cannot start a private PostgreSQL: {exc}")
    yield server
    server.destroy()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) that keeps every message it receives."""
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()
