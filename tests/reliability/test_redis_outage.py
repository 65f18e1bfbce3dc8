"""Fault: Redis (the user cache and the rate-limit counters) goes away mid-run and comes back.

A private ``redis-server`` is killed under a running service: authenticated requests keep
succeeding from the database, the health check reports the cache as unavailable (status
still ``200``), and when Redis returns the cache is used again, without a restart.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from anyio import to_thread
from redis.asyncio import Redis

from tests.conftest import ON_POSTGRES, TEST_REDIS_URL
from tests.reliability.services import PrivateRedis

pytestmark = pytest.mark.skipif(
    not (ON_POSTGRES and TEST_REDIS_URL), reason="a Redis fault: runs on the PostgreSQL + Redis run"
)


@pytest.fixture
def redis_url(private_redis: PrivateRedis) -> str:
    """Override: this module's apps use the private Redis, which the test kills and restarts."""
    return private_redis.url


async def _cached_keys(url: str) -> list[bytes]:
    client = Redis.from_url(url)
    try:
        return [key async for key in client.scan_iter(match="*user_cache*")]
    finally:
        await client.aclose()


async def _health(client) -> tuple[int, dict]:
    response = await client.get("/api/healthchecker")
    return response.status_code, response.json()


async def test_redis_outage_requests_served_from_database_health_degraded_then_recovers(
    serve_with, user_factory, private_redis: PrivateRedis
):
    user = await user_factory()
    # Rate limits on: their counters live in Redis too, and must not turn an outage into 500s.
    async with serve_with(rate_limit_enabled=True, rate_limit_me_per_minute=1000) as client:
        response = await client.get("/api/users/me", headers=user.headers)
        assert response.status_code == 200, response.text
        assert await _cached_keys(private_redis.url), "the user snapshot should be cached in Redis"

        await to_thread.run_sync(private_redis.stop)

        for _ in range(5):
            started = time.monotonic()
            response = await client.get("/api/users/me", headers=user.headers)
            assert response.status_code == 200, response.text
            assert response.json()["id"] == str(user.id)
            assert time.monotonic() - started < 3, "a cache outage must not stall requests"
        assert await _health(client) == (
            200,
            {"status": "degraded", "database": "ok", "cache": "unavailable"},
        )
        # Still authenticated by the database: a forged session id is refused, not waved through.
        response = await client.get("/api/users/me", headers={"Authorization": "Bearer nonsense"})
        assert response.status_code == 401

        await to_thread.run_sync(private_redis.start)
        deadline = time.monotonic() + 20
        while await _health(client) != (200, {"status": "ok", "database": "ok", "cache": "ok"}):
            assert time.monotonic() < deadline, "the cache did not come back after Redis returned"
            await asyncio.sleep(0.2)
        response = await client.get("/api/users/me", headers=user.headers)
        assert response.status_code == 200
        assert await _cached_keys(private_redis.url), "the snapshot is cached again once Redis is back"
