"""The user cache with Redis: a copy in each process, dropped everywhere when the user changes."""

from __future__ import annotations

import asyncio
import time

import pytest
from litestar.stores.memory import MemoryStore
from redis.asyncio import Redis

from app.cache import INVALIDATIONS, NearCache
from tests.conftest import TEST_REDIS_URL
from tests.reliability.services import PrivateRedis

pytestmark = pytest.mark.skipif(not TEST_REDIS_URL, reason="the near cache fronts Redis")

ME = "/api/users/me"


@pytest.fixture
def redis_url(private_redis: PrivateRedis) -> str:
    """Override: a Redis of this test alone, so its command counters count only this test."""
    return private_redis.url


async def _redis_gets(url: str) -> int:
    """How many GET commands this Redis server has run so far."""
    client = Redis.from_url(url)
    try:
        return int((await client.info("commandstats")).get("cmdstat_get", {}).get("calls", 0))
    finally:
        await client.aclose()


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_a_warm_user_costs_no_redis_round_trip_until_the_copy_expires(make_client, user, redis_url):
    async with make_client(user_cache_local_ttl=0.5) as client:
        store = client.app.stores.get("user_cache")
        await _until(lambda: asyncio.sleep(0, store.subscribed))
        assert (await client.get(ME, headers=user.headers)).status_code == 200  # fills Redis and the copy
        before = await _redis_gets(redis_url)
        for _ in range(5):
            assert (await client.get(ME, headers=user.headers)).status_code == 200
        assert await _redis_gets(redis_url) == before

        await asyncio.sleep(0.6)  # the copy is gone: the next request reads Redis once
        assert (await client.get(ME, headers=user.headers)).status_code == 200
        assert await _redis_gets(redis_url) == before + 1


async def test_without_local_copies_every_request_reads_redis(make_client, user, redis_url):
    async with make_client(user_cache_local_ttl=0) as client:
        assert (await client.get(ME, headers=user.headers)).status_code == 200
        before = await _redis_gets(redis_url)
        for _ in range(3):
            assert (await client.get(ME, headers=user.headers)).status_code == 200
        assert await _redis_gets(redis_url) == before + 3


async def test_a_change_made_by_one_process_is_seen_by_another_at_once(make_client, user_factory):
    admin = await user_factory(role="admin")
    member = await user_factory()
    # Two processes of the service (two apps) sharing one Redis, with long-lived local copies.
    async with make_client(user_cache_local_ttl=300) as one, make_client(user_cache_local_ttl=300) as two:
        for client in (one, two):
            store = client.app.stores.get("user_cache")
            await _until(lambda store=store: asyncio.sleep(0, store.subscribed))
        assert (await two.get(ME, headers=member.headers)).json()["role"] == "user"  # two keeps a copy

        response = await one.patch(
            f"/api/users/{member.id}/role", json={"role": "admin"}, headers=admin.headers
        )
        assert response.status_code == 200, response.text

        async def two_sees_it() -> bool:
            return (await two.get(ME, headers=member.headers)).json()["role"] == "admin"

        await _until(two_sees_it, timeout=1.0)


class _SlowStore(MemoryStore):
    """A shared store whose reads wait until released (a read in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.reads = 0

    async def get(self, key, renew_for=None):  # type: ignore[no-untyped-def]
        self.reads += 1
        await self.release.wait()
        return await super().get(key, renew_for)


async def test_an_invalidation_during_a_read_keeps_that_read_out_of_the_copy(redis_url):
    redis = Redis.from_url(redis_url)
    shared = _SlowStore()
    cache = NearCache(shared, redis, local_ttl=300)
    listener = asyncio.create_task(cache.listen())
    try:
        await _until(lambda: asyncio.sleep(0, cache.subscribed))
        await shared.set("k", b"old")
        read = asyncio.create_task(cache.get("k"))
        await _until(lambda: asyncio.sleep(0, shared.reads == 1))
        # Another process changes the user while this read is waiting on the shared store.
        await redis.publish(INVALIDATIONS, "k")
        await asyncio.sleep(0.2)
        shared.release.set()
        assert await read == b"old"  # the read itself predates the change...
        await cache.get("k")
        assert shared.reads == 2  # ...so it was not kept: the next read asks the shared store
        await cache.get("k")
        assert shared.reads == 2  # and that one was kept
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await redis.aclose()
