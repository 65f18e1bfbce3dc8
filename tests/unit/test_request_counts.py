"""Requests are queued on the hot path and reach the counters within a bounded delay."""

from __future__ import annotations

import asyncio

from app import metrics


def _count(route: str) -> float:
    return metrics.HTTP_REQUESTS.labels("GET", route, "200")._value.get()


def test_a_full_queue_is_counted_at_once_and_a_stop_counts_the_rest() -> None:
    metrics.fold_requests()
    before = _count("/unit/full")
    for _ in range(metrics.FOLD_REQUESTS - 1):
        metrics.observe_request("GET", "/unit/full", 200, 0.001)
    assert _count("/unit/full") == before  # queued (no loop here to fold it later)
    metrics.observe_request("GET", "/unit/full", 200, 0.001)
    assert _count("/unit/full") == before + metrics.FOLD_REQUESTS
    metrics.observe_request("GET", "/unit/full", 200, 0.001)

    class App:
        state: dict = {}

    asyncio.run(metrics.stop_metrics(App()))  # type: ignore[arg-type]
    assert _count("/unit/full") == before + metrics.FOLD_REQUESTS + 1


async def test_a_request_is_counted_within_the_fold_delay() -> None:
    metrics.fold_requests()
    before = _count("/unit/timer")
    metrics.observe_request("GET", "/unit/timer", 200, 0.002)
    metrics.observe_request("GET", "/unit/timer", 200, 0.002)
    assert _count("/unit/timer") == before
    await asyncio.sleep(metrics.FOLD_SECONDS * 3)
    assert _count("/unit/timer") == before + 2
