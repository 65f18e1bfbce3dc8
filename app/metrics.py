"""Prometheus metrics: request counts and latencies by route template, and the service's own.

Served at ``/metrics`` (Prometheus text format) when ``METRICS_ENABLED`` is true, through
Litestar's :class:`~litestar.plugins.prometheus.PrometheusController` (which also merges the
workers' files in multi-process mode), behind the bearer ``METRICS_TOKEN`` when one is set.

Requests are counted by the outermost request wrapper (:class:`app.logs.RequestLogMiddleware`
calls :func:`observe_request`), not by Litestar's ``PrometheusMiddleware``: that one runs per
route, inside the auth and rate-limit middleware, so it never sees their ``401``/``429`` and
counts an exception raised there as a ``200``. Labels are the route *template*
(``/api/contacts/{contact_id:uuid}``), never the raw path: ids and tokens do not become series.

Several worker processes (``WORKERS>1``) share counters through the files of
``PROMETHEUS_MULTIPROC_DIR`` (:func:`app.server.main` sets one up); gauges are then the sum
over live workers.

The outbox's gauges (mails pending and dead, age of the oldest pending one) describe the shared
database, not a process: the process answering the scrape reads them with one query and adds
them to its answer (:func:`outbox_families`), so they are never summed over workers. Every
replica reports the same figures: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from litestar import get
from litestar.exceptions import NotAuthorizedException
from litestar.plugins.prometheus import PrometheusController
from litestar.response import Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar import Litestar
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler
    from prometheus_client.metrics_core import Metric

logger = logging.getLogger(__name__)

#: Latency buckets, in seconds: cached reads take about a millisecond, logins (bcrypt) ~0.3 s.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The route label of a request that matched no route (a 404 or a 405 before routing).
UNMATCHED = "<unmatched>"
#: Seconds between two samples of the gauges in each worker (multi-process mode).
SAMPLE_SECONDS = 5.0
#: Longest wait for the outbox query of a scrape: a slow database must not hang the scrape.
OUTBOX_QUERY_SECONDS = 3.0
#: The gauges read at scrape time (:func:`outbox_families`), not in the registry.
OUTBOX_MAILS = "contacts_outbox_mails"
OUTBOX_OLDEST_PENDING = "contacts_outbox_oldest_pending_seconds"

HTTP_REQUESTS = Counter(
    "contacts_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "contacts_http_request_duration_seconds",
    "Time to answer an HTTP request, in seconds",
    ["method", "route", "status"],
    buckets=BUCKETS,
)
RATE_LIMIT_REFUSALS = Counter(
    "contacts_rate_limit_refusals_total", "Requests refused by a rate limit (429)", ["route"]
)
USER_CACHE = Counter("contacts_user_cache_requests_total", "Reads of the user cache, by result", ["result"])
MAILS = Counter("contacts_mails_total", "Mails handed to the sender, by result", ["result"])
DB_POOL_IN_USE = Gauge(
    "contacts_db_pool_in_use", "Database connections checked out", ["pool"], multiprocess_mode="livesum"
)
DB_POOL_SIZE = Gauge(
    "contacts_db_pool_size", "Database connections a pool may hold", ["pool"], multiprocess_mode="livesum"
)
PASSWORD_HASHES_QUEUED = Gauge(
    "contacts_password_hashes_queued",
    "Password hashes waiting for a hashing thread",
    multiprocess_mode="livesum",
)
PASSWORD_HASHES_RUNNING = Gauge(
    "contacts_password_hashes_running", "Password hashes being computed", multiprocess_mode="livesum"
)

_requests: dict[tuple[str, str, int], tuple[Any, Any]] = {}
#: Requests answered since the last fold: a list append on the hot path (a labelled counter and
#: a histogram take three locks per request), folded into the metrics by :func:`fold_requests`.
_answered: list[tuple[str, str | None, int, float]] = []
#: Longest time a request waits to be counted (a scrape and each sample fold at once).
FOLD_SECONDS = 0.05
#: Requests queued that trigger a fold at once.
FOLD_REQUESTS = 256


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    """Count one answered request (called once per request by the request wrapper).

    Args:
        method: The HTTP method.
        route: The matched route's template, ``None`` when no route matched.
        status: The status sent.
        seconds: Time from the request's start to its end.
    """
    if not _answered:
        with contextlib.suppress(RuntimeError):  # no loop: the next scrape folds it
            asyncio.get_running_loop().call_later(FOLD_SECONDS, fold_requests)
    _answered.append((method, route, status, seconds))
    if len(_answered) >= FOLD_REQUESTS:
        fold_requests()


def fold_requests() -> None:
    """Add the requests queued by :func:`observe_request` to the counters and histograms."""
    answered = _answered[:]
    del _answered[: len(answered)]
    for method, route, status, seconds in answered:
        key = (method, route or UNMATCHED, status)
        children = _requests.get(key)
        if children is None:  # labels() takes a lock and builds a tuple: once per series
            labels = (key[0], key[1], str(status))
            children = _requests[key] = (HTTP_REQUESTS.labels(*labels), HTTP_DURATION.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)
        if status == 429:
            RATE_LIMIT_REFUSALS.labels(key[1]).inc()


def mail_result(sent: bool) -> None:
    """Count a mail delivered, or given up on after its last attempt."""
    MAILS.labels("sent" if sent else "failed").inc()


#: Reads of the user snapshot since the last fold, ``[misses, hits]``: plain integers on the hot
#: path (a labelled counter takes a lock per increment), folded into ``USER_CACHE`` by :func:`sample`.
user_cache_reads = [0, 0]


def _fold_user_cache_reads() -> None:
    misses, hits = user_cache_reads
    user_cache_reads[:] = [0, 0]
    if misses:
        USER_CACHE.labels("miss").inc(misses)
    if hits:
        USER_CACHE.labels("hit").inc(hits)


def sample(app: Litestar) -> None:
    """Read the gauges (pools in use and their sizes, password hashes queued); fold the counts.

    Args:
        app: The application (its database, engine and event loop).
    """
    fold_requests()
    _fold_user_cache_reads()
    engine_pool = app.state.db_config.get_engine().sync_engine.pool
    with contextlib.suppress(AttributeError):  # pools without a bound (SQLite's) have no size
        DB_POOL_IN_USE.labels("sessions").set(engine_pool.checkedout())
        DB_POOL_SIZE.labels("sessions").set(engine_pool.size() + max(0, engine_pool.overflow()))
    direct = app.state.direct_pool.asyncpg_pool
    if direct is not None:
        DB_POOL_IN_USE.labels("direct").set(direct.get_size() - direct.get_idle_size())
        DB_POOL_SIZE.labels("direct").set(direct.get_max_size())
    # The hashing limiter is per event loop (app.security.passwords): read, never changed.
    from app.security import passwords

    limiter = getattr(passwords, "_limiters", {}).get(asyncio.get_running_loop())
    if limiter is not None:
        stats = limiter.statistics()
        PASSWORD_HASHES_QUEUED.set(stats.tasks_waiting)
        PASSWORD_HASHES_RUNNING.set(stats.borrowed_tokens)


async def outbox_families(app: Litestar) -> list[Metric]:
    """The outbox's gauges, read now from the database (one query per scrape).

    A scrape while the database is unreachable still answers, without these families (their
    absence is what an alert on ``absent(...)`` sees); the failure is logged.

    Args:
        app: The application (its job runner reads the outbox).

    Returns:
        ``contacts_outbox_mails`` by status and ``contacts_outbox_oldest_pending_seconds``.
    """
    try:
        backlog = await asyncio.wait_for(app.state.job_runner.backlog(), OUTBOX_QUERY_SECONDS)
    except Exception as exc:  # the scrape answers anyway; the other metrics still matter
        logger.warning("metrics: cannot read the outbox (%s)", type(exc).__name__)
        return []
    mails = GaugeMetricFamily(OUTBOX_MAILS, "Mails in the outbox not delivered, by status", labels=["status"])
    mails.add_metric(["pending"], backlog.pending)
    mails.add_metric(["dead"], backlog.dead)
    age = 0.0
    if backlog.oldest_pending is not None:
        age = max(0.0, (datetime.now(UTC) - backlog.oldest_pending).total_seconds())
    oldest = GaugeMetricFamily(
        OUTBOX_OLDEST_PENDING,
        "Age of the oldest pending mail in the outbox, in seconds (0 when none is pending)",
        value=age,
    )
    return [mails, oldest]


class _Families:
    """A collector of families read beforehand (a scrape's outbox gauges)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        """Keep ``families``."""
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        """The families, as read."""
        return self.families


def render(families: Iterable[Metric]) -> bytes:
    """The Prometheus text exposition of ``families``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def requires_metrics_token(
    connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler
) -> None:
    """Guard: the request carries ``Authorization: Bearer METRICS_TOKEN`` (when one is set).

    Raises:
        NotAuthorizedException: The token is missing or wrong.
    """
    expected = connection.app.state.settings.metrics_token
    if not expected:
        return
    given = connection.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        raise NotAuthorizedException(
            "A valid metrics token is required", headers={"WWW-Authenticate": 'Bearer realm="metrics"'}
        )


class MetricsController(PrometheusController):
    """``GET /metrics``: Litestar's Prometheus exposition, with fresh gauges, behind a token."""

    path = "/metrics"
    include_in_schema = False
    guards = [requires_metrics_token]
    opt = {"exclude_from_auth": True}

    @get()
    async def get(self, request: Any) -> Response:  # type: ignore[override]
        """Sample the gauges, then render every metric (all workers' in multi-process mode).

        The outbox's gauges are read from the database by this scrape and appended.

        Args:
            request: The scrape request.

        Returns:
            The Prometheus text exposition.
        """
        sample(request.app)
        response: Response = await PrometheusController.get.fn(self)  # type: ignore[attr-defined]
        response.content = response.content + render(await outbox_families(request.app))
        return response


def start_metrics(multiprocess: bool) -> Any:
    """Return a start-up hook sampling gauges (and folding counts) in each worker.

    Args:
        multiprocess: Whether several workers share the metrics (then each samples its own
            gauges every :data:`SAMPLE_SECONDS`; one process samples when it is scraped).

    Returns:
        An ``on_startup`` hook (run after the stores are open).
    """

    async def hook(app: Litestar) -> None:
        user_cache_reads[:] = [0, 0]  # reads made before metrics were on are not counted
        if multiprocess:
            app.state["metrics_sampler"] = asyncio.get_running_loop().create_task(_sample_forever(app))

    return hook


async def _sample_forever(app: Litestar) -> None:
    while True:
        try:
            sample(app)
        except Exception as exc:  # a sample is best effort; the next one may work
            logger.warning("metrics: sampling failed (%s)", type(exc).__name__)
        await asyncio.sleep(SAMPLE_SECONDS)


async def stop_metrics(app: Litestar) -> None:
    """Shutdown hook: stop the sampler, if one runs, and fold what is queued into the metrics."""
    task = app.state.get("metrics_sampler")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    fold_requests()
    _fold_user_cache_reads()
