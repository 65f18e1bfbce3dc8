"""OpenTelemetry traces, on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the ``otel`` extra).

Each request is one server span, made by Litestar's OpenTelemetry middleware and named after
its route *template* (``GET /api/contacts/{contact_id}``), with a child span for each SQL
statement (asyncpg's instrumentation on PostgreSQL, which sees the ORM's statements and those
of :class:`app.db.DirectPool`; SQLAlchemy's on SQLite) and each Redis command. Spans go to the collector over OTLP/HTTP in
batches, from a background thread. While a span is current, every log line carries its
``trace_id`` and ``span_id`` (:data:`app.logs.trace_ids`).

Nothing secret reaches a span: the middleware sees the request path with its tokens masked
and without its query string (as the access log does), SQL spans carry the statement text
only (never its parameters), and Redis spans the command name with ``?`` for each argument.

Without the extra installed the application runs as before; setting the endpoint then stops
it at start-up with a message that says what to install.
"""

from __future__ import annotations

import importlib.util
import logging
import random
from typing import TYPE_CHECKING, Any

from app import logs
from app.config import Settings, SettingsError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from litestar.types import ASGIApp, Message, Receive, Scope, Send
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

#: The packages the ``otel`` extra brings, by the module each one provides.
_REQUIRED = (
    "opentelemetry.sdk",
    "opentelemetry.exporter.otlp.proto.http",
    "opentelemetry.instrumentation.asgi",
    "opentelemetry.instrumentation.sqlalchemy",
    "opentelemetry.instrumentation.asyncpg",
    "opentelemetry.instrumentation.redis",
)
#: The apps of this process whose tracing is on (tests build several): the log lines carry
#: trace ids while there is one.
_running: list[Tracing] = []
#: The path the OTLP/HTTP receiver takes spans at, under ``OTEL_EXPORTER_OTLP_ENDPOINT``.
TRACES_PATH = "/v1/traces"


def tracing_enabled(settings: Settings) -> bool:
    """Whether ``settings`` ask for traces (an OTLP endpoint is set)."""
    return bool(settings.otel_exporter_otlp_endpoint)


def setup_tracing(
    settings: Settings, engines: Iterable[AsyncEngine], exporter: SpanExporter | None = None
) -> Tracing | None:
    """Start tracing when ``settings`` ask for it.

    Args:
        settings: The application settings.
        engines: The SQLAlchemy engines whose statements become spans.
        exporter: Where spans go, each one as soon as it ends (tests pass an in-memory one);
            by default an OTLP/HTTP exporter to the configured endpoint, in batches.

    Returns:
        The running tracing (its :meth:`Tracing.wrap` and :meth:`Tracing.shutdown` are for the
        app factory), or ``None`` when tracing is off.

    Raises:
        SettingsError: The endpoint is set but the ``otel`` extra is not installed.
    """
    if not tracing_enabled(settings):
        return None
    missing = [name for name in _REQUIRED if not _installed(name)]
    if missing:
        msg = (
            "OTEL_EXPORTER_OTLP_ENDPOINT: set, but the tracing packages are not installed "
            f"(missing {', '.join(missing)}); install the `otel` extra: uv sync --extra otel"
        )
        raise SettingsError(msg)
    return Tracing(settings, list(engines), exporter)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing (find_spec imports it)
        return False


class Tracing:
    """The tracer provider of this app and the instrumentation that feeds it."""

    def __init__(self, settings: Settings, engines: list[AsyncEngine], exporter: SpanExporter | None) -> None:
        """Make the provider and instrument the engines, asyncpg and Redis."""
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        from app import __version__

        # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES (deployment.environment...).
        resource = Resource.create({SERVICE_NAME: settings.otel_service_name, SERVICE_VERSION: __version__})
        self.provider: TracerProvider = TracerProvider(resource=resource, sampler=_requests_only())
        self.share = settings.otel_traces_sampler_arg
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = str(settings.otel_exporter_otlp_endpoint).rstrip("/") + TRACES_PATH
            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        else:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))

        # Instrumentors are process-wide (they patch library classes); a second app in the
        # same process (tests) gets them once the first one has shut down.
        self._instrumentors: list[Any] = []
        # One source of SQL spans per backend, statement text only (never the parameters). On
        # PostgreSQL, asyncpg's: every statement goes through it, the ORM's and the direct
        # pool's alike (SQLAlchemy's would add a second span per ORM statement, and never see
        # the direct pool's). On SQLite, SQLAlchemy's (its SQL commenter stays off); its
        # declared range stops before SQLAlchemy 2.1, whose engine events it uses are unchanged.
        if any(engine.dialect.driver == "asyncpg" for engine in engines):
            self._instrument(AsyncPGInstrumentor(capture_parameters=False))
        else:
            self._instrument(
                SQLAlchemyInstrumentor(),
                engines=[engine.sync_engine for engine in engines],
                skip_dep_check=True,
            )
        if settings.redis_url:
            self._instrument(RedisInstrumentor())
        _running.append(self)
        logs.trace_ids = current_trace_ids

    def _instrument(self, instrumentor: Any, **options: Any) -> None:
        # Instrumentors are process-wide (they patch library classes): a second app in the
        # same process (tests) is traced by them once the first one has shut down.
        if instrumentor.is_instrumented_by_opentelemetry:
            logger.warning("%s: already instrumented by another app", type(instrumentor).__name__)
            return
        instrumentor.instrument(tracer_provider=self.provider, **options)
        if instrumentor.is_instrumented_by_opentelemetry:
            self._instrumentors.append(instrumentor)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app`` (the outermost ASGI layer) in Litestar's OpenTelemetry middleware.

        Outermost, so that the request's access line and every answer of the inner layers
        (``401``, ``404``, ``429``) are inside the span.

        Args:
            app: The application to trace.

        Returns:
            The traced application.
        """
        from litestar.plugins.opentelemetry import OpenTelemetryConfig
        from opentelemetry.metrics import NoOpMeterProvider

        config = OpenTelemetryConfig(
            tracer_provider=self.provider,
            # Request metrics are Prometheus's (app/metrics.py): none recorded twice.
            meter_provider=NoOpMeterProvider(),
            scope_span_details_extractor=_span_details,
            # One span per request: no span per ASGI message sent or received.
            exclude_spans=["receive", "send"],
            scopes={"http"},  # type: ignore[arg-type]
        )
        traced = config.middleware(app=_Unmask(app))
        return _Mask(traced, app, self.share)

    async def shutdown(self, _app: Any = None) -> None:
        """Send the spans still buffered and undo the instrumentation. A shutdown hook."""
        if self in _running:
            _running.remove(self)
        if not _running:
            logs.trace_ids = None
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self._instrumentors.clear()
        self.provider.shutdown()


def current_trace_ids() -> tuple[str, str] | None:
    """The trace and span ids of the current span, as hex, or ``None`` outside a sampled span.

    A request left out by the sampler has ids too, but no trace to find them in.
    """
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.trace_flags.sampled:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _requests_only() -> Sampler:
    """A sampler that follows the caller, else traces, but starts traces at requests only.

    :class:`_Mask` draws the share of requests traced, before the tracing middleware's cost.
    No trace starts anywhere but at a request: the job runner's polling of the outbox, the
    migrations and the housekeeping would otherwise each send a one-span trace every second.
    """
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind, get_current_span

    class RequestsOnly(Sampler):
        """Drops root spans other than a request's; delegates every other decision."""

        def __init__(self, delegate: Sampler) -> None:
            self.delegate = delegate

        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            """Decide for one span about to start."""
            if (
                kind is not SpanKind.SERVER
                and not get_current_span(parent_context).get_span_context().is_valid
            ):
                return SamplingResult(Decision.DROP)
            return self.delegate.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            """Name the sampler (the SDK logs it)."""
            return f"RequestsOnly{{{self.delegate.get_description()}}}"

    return RequestsOnly(ParentBased(ALWAYS_ON))


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The server span's first name: the method alone, until routing gives the template."""
    return str(scope.get("method", "HTTP")), {}


_ORIGINAL_SCOPE = "app.tracing.scope"


class _Mask:
    """Draws whether a request is traced, and shows the tracing middleware a masked scope.

    A request that comes with a ``traceparent`` goes to the tracing middleware (the sampler
    follows the caller's decision); any other one with probability ``share``, the rest straight
    to the application: the middleware costs about as much per request as the application's
    cheapest routes, even for a request the sampler would then leave out.

    The OpenTelemetry middleware copies the path and query string into the span (``url.path``,
    ``http.target``, ``http.url``); the confirmation and reset routes carry a JWT in their path,
    so it sees them masked, and no query string.
    """

    def __init__(self, traced: ASGIApp, untraced: ASGIApp, share: float) -> None:
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        self.suppress_instrumentation = suppress_instrumentation
        self.app = traced
        self.untraced = untraced
        self.share = share

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.untraced(scope, receive, send)
            return
        # A sampling draw, not a secret: S311 does not apply.
        if self.share < 1 and random.random() >= self.share and not _has_traceparent(scope):  # noqa: S311
            # Nor do its SQL and Redis calls start (non-recording) spans.
            with self.suppress_instrumentation():
                await self.untraced(scope, receive, send)
            return
        path = logs.mask_tokens(scope["path"])
        masked = {**scope, "path": path, "raw_path": path.encode(), "query_string": b""}
        masked[_ORIGINAL_SCOPE] = scope
        await self.app(masked, receive, send)  # type: ignore[arg-type]


def _has_traceparent(scope: Scope) -> bool:
    return any(name == b"traceparent" for name, _ in scope["headers"])


class _Unmask:
    """Inside the span: serves the original scope, and names the span after the route.

    Named when the response starts (routing is done by then), because the span ends with the
    last body message, before the application returns.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from opentelemetry import trace

        original: Any = scope.get(_ORIGINAL_SCOPE, scope)  # type: ignore[call-overload]
        span = trace.get_current_span()

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start" and span.is_recording():
                template = original.get("path_template")
                if template is not None:
                    span.update_name(f"{original['method']} {template}")
                    span.set_attribute("http.route", template)
                request_id = logs.request_id_of(original)
                if request_id != "-":
                    span.set_attribute("app.request_id", request_id)
            await send(message)

        await self.app(original, receive, send_named)
