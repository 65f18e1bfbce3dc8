"""Traces: one request is one server span named after its route, with its SQL and Redis spans
as children in the same trace, the trace id in the request's log lines, and no secret in any span.

Spans are caught with the SDK's in-memory exporter; one test also runs the real OTLP/HTTP
exporter against a small receiver. Skipped when the ``otel`` extra is not installed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import msgspec
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the `otel` extra is not installed")

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import app.main
from app import logs, tracing
from app.config import load_settings
from tests.conftest import ON_POSTGRES, TEST_REDIS_URL, TestUser

ENDPOINT = "http://collector.invalid:4318"
FAKE_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2lnbmF0dXJlLXNlY3JldA"


class LineCollector(logging.Handler):
    """Formats each record as the server would, at emit time (inside the request's context)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """The spans of the apps built in this test (their tracing sends here, one by one)."""
    memory = InMemorySpanExporter()
    monkeypatch.setattr(app.main, "setup_tracing", functools.partial(tracing.setup_tracing, exporter=memory))
    return memory


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    """Every line the app logs (access line included), as parsed JSON."""
    collector = LineCollector()
    logger = logging.getLogger()  # create_app resets the handlers of the app's loggers
    logger.addHandler(collector)
    yield collector.lines
    logger.removeHandler(collector)


def _trace_of(spans: list[ReadableSpan], server: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.context.trace_id == server.context.trace_id]


def _server_span(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    servers = [s for s in spans if s.kind == SpanKind.SERVER and s.name == name]
    assert len(servers) == 1, [(s.name, s.kind) for s in spans]
    return servers[0]


def _descends_from(span: ReadableSpan, root: ReadableSpan, spans: list[ReadableSpan]) -> bool:
    by_id = {s.context.span_id: s for s in spans}
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.parent.span_id == root.context.span_id:
            return True
        current = by_id.get(current.parent.span_id)
    return False


def _all_text(spans: list[ReadableSpan]) -> str:
    parts = []
    for span in spans:
        parts.append(span.name)
        parts.extend(f"{key}={value}" for key, value in (span.attributes or {}).items())
    return "\n".join(parts)


async def _check_one_request(
    client: Any,
    exporter: InMemorySpanExporter,
    log_lines: list[dict[str, Any]],
    path: str,
    template: str,
    user: TestUser,
) -> None:
    exporter.clear()
    log_lines.clear()
    response = await client.get(path, headers=user.headers)
    assert response.status_code == 200, response.text
    spans = list(exporter.get_finished_spans())

    server = _server_span(spans, f"GET {template}")
    assert server.attributes["http.route"] == template
    assert server.attributes["http.status_code"] == 200
    assert server.parent is None
    trace = _trace_of(spans, server)
    assert len(trace) == len(spans)  # nothing else was traced meanwhile

    statements = [str(s.attributes.get("db.statement", "")) for s in trace]
    assert [st for st in statements if st.upper().startswith("SELECT")], [s.name for s in spans]
    sql = [s for s in trace if s.attributes.get("db.system") in {"postgresql", "sqlite"}]
    if ON_POSTGRES and template != "/api/users/me":
        # The contact read goes through the direct asyncpg pool, not SQLAlchemy.
        assert any(s.instrumentation_scope.name.endswith("asyncpg") for s in sql)
    if TEST_REDIS_URL and template == "/api/users/me":
        assert [s for s in trace if s.attributes.get("db.system") == "redis"], [s.name for s in trace]
    for span in trace:
        if span is not server:
            assert _descends_from(span, server, spans), span.name

    # The request's log lines (the access line at least) carry its trace id.
    trace_id = format(server.context.trace_id, "032x")
    request_lines = [line for line in log_lines if line.get("request_id") == response.headers["x-request-id"]]
    assert any(line["logger"] == "app.access" for line in request_lines), log_lines
    assert all(line["trace_id"] == trace_id for line in request_lines), request_lines
    assert server.attributes["app.request_id"] == response.headers["x-request-id"]


async def test_a_request_is_one_trace_of_server_sql_and_redis_spans(
    make_client: Callable[..., Any],
    exporter: InMemorySpanExporter,
    user: TestUser,
    log_lines: list[dict[str, Any]],
) -> None:
    async with make_client(otel_exporter_otlp_endpoint=ENDPOINT) as client:
        # First a cold user cache: the user comes from the database (and Redis when in use).
        await _check_one_request(client, exporter, log_lines, "/api/users/me", "/api/users/me", user)
        created = await client.post(
            "/api/contacts/",
            json={
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "ada@example.com",
                "phone_number": "+380501234567",
            },
            headers=user.headers,
        )
        assert created.status_code == 201, created.text
        path = f"/api/contacts/{created.json()['id']}"
        await _check_one_request(client, exporter, log_lines, path, "/api/contacts/{contact_id}", user)

    # Shut down: no more trace ids in log lines, instrumentation undone.
    assert logs.trace_ids is None
    logging.getLogger("app.access").info("after")
    assert "trace_id" not in log_lines[-1]


async def test_an_unmatched_path_is_named_by_its_method_only(
    make_client: Callable[..., Any], exporter: InMemorySpanExporter
) -> None:
    async with make_client(otel_exporter_otlp_endpoint=ENDPOINT) as client:
        response = await client.get("/api/contacts/not-a-uuid/at/all/7f3c")
        assert response.status_code == 404
    server = _server_span(list(exporter.get_finished_spans()), "GET")
    assert "http.route" not in server.attributes
    assert server.attributes["http.status_code"] == 404


async def test_no_token_query_or_sql_value_reaches_a_span(
    make_client: Callable[..., Any], exporter: InMemorySpanExporter, user: TestUser
) -> None:
    async with make_client(otel_exporter_otlp_endpoint=ENDPOINT) as client:
        confirm = await client.get(f"/api/auth/confirmed_email/{FAKE_JWT}")
        assert confirm.status_code in {400, 401, 404, 422}, confirm.text
        reset = await client.get(f"/api/auth/confirm_update_password/{FAKE_JWT}")
        assert reset.status_code < 500, reset.text
        search = await client.get("/api/contacts/?q=zanzibarquery", headers=user.headers)
        assert search.status_code == 200, search.text
        login = await client.post("/api/auth/login", data={"username": user.email, "password": user.password})
        assert login.status_code == 200, login.text

    spans = list(exporter.get_finished_spans())
    names = {s.name for s in spans if s.kind == SpanKind.SERVER}
    assert "GET /api/auth/confirmed_email/{token}" in names
    assert "POST /api/auth/login" in names
    text = _all_text(spans)
    assert "/api/auth/confirmed_email/***" in text  # the masked target is there...
    for secret in (
        "eyJ",
        "c2lnbmF0dXJl",
        "zanzibarquery",
        user.email,
        user.password,
        login.json()["access_token"],
    ):
        assert secret not in text  # ...and no token, query, or SQL value
    assert not [s for s in spans if "db.statement.parameters" in (s.attributes or {})]


async def test_without_an_endpoint_nothing_is_traced(
    make_client: Callable[..., Any], exporter: InMemorySpanExporter, log_lines: list[dict[str, Any]]
) -> None:
    async with make_client() as client:
        assert (await client.get("/api/healthchecker")).status_code == 200
    assert not exporter.get_finished_spans()
    assert logs.trace_ids is None
    assert log_lines
    assert not [line for line in log_lines if "trace_id" in line]


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.bodies.append((self.path, self.headers["Content-Type"], self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


async def test_spans_reach_an_otlp_http_collector(make_client: Callable[..., Any]) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.bodies = []
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
        async with make_client(
            otel_exporter_otlp_endpoint=endpoint, otel_service_name="contacts-test"
        ) as client:
            assert (await client.get("/api/healthchecker")).status_code == 200
        # The batch is sent at the latest when the app shuts down.
    finally:
        server.shutdown()
        thread.join()
    assert _Receiver.bodies, "no export reached the collector"
    names, services = set(), set()
    for path, content_type, body in _Receiver.bodies:
        assert path == "/v1/traces"
        assert content_type == "application/x-protobuf"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            services |= {
                a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
            }
            for scope_spans in resource_spans.scope_spans:
                names |= {span.name for span in scope_spans.spans}
    assert services == {"contacts-test"}
    assert "GET /api/healthchecker" in names


async def test_a_callers_trace_is_followed_and_the_share_applies_to_the_rest(
    make_client: Callable[..., Any], exporter: InMemorySpanExporter
) -> None:
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    caller_span = "b7ad6b7169203331"
    async with make_client(otel_exporter_otlp_endpoint=ENDPOINT, otel_traces_sampler_arg=0.0) as client:
        assert (await client.get("/api/healthchecker")).status_code == 200
        assert not exporter.get_finished_spans()  # share 0: a request on its own is not traced
        response = await client.get(
            "/api/healthchecker", headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"}
        )
        assert response.status_code == 200
    spans = list(exporter.get_finished_spans())
    server = _server_span(spans, "GET /api/healthchecker")
    assert format(server.context.trace_id, "032x") == caller_trace
    assert format(server.parent.span_id, "016x") == caller_span
    assert all(s.context.trace_id == server.context.trace_id for s in spans)


async def test_a_second_app_in_the_process_leaves_the_instrumentation_to_the_first(
    make_client: Callable[..., Any],
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    log_lines: list[dict[str, Any]],
) -> None:
    async with make_client(otel_exporter_otlp_endpoint=ENDPOINT) as first:
        other = InMemorySpanExporter()
        monkeypatch.setattr(
            app.main, "setup_tracing", functools.partial(tracing.setup_tracing, exporter=other)
        )
        with caplog.at_level(logging.WARNING, logger="app.tracing"):
            async with make_client(otel_exporter_otlp_endpoint=ENDPOINT) as second:
                assert (await second.get("/api/healthchecker")).status_code == 200
        assert "already instrumented by another app" in caplog.text
        assert _server_span(list(other.get_finished_spans()), "GET /api/healthchecker")
        # The first app's instrumentation and log ids outlive the second app.
        log_lines.clear()
        response = await first.get("/api/healthchecker")
        assert response.status_code == 200
        spans = list(exporter.get_finished_spans())
        server = _server_span(spans, "GET /api/healthchecker")
        assert [s for s in _trace_of(spans, server) if s is not server], [s.name for s in spans]
        access = [line for line in log_lines if line["logger"] == "app.access"]
        assert access[-1]["trace_id"] == format(server.context.trace_id, "032x")
    assert logs.trace_ids is None


async def test_work_outside_requests_makes_no_trace(
    make_client: Callable[..., Any], exporter: InMemorySpanExporter
) -> None:
    # The job runner polls the outbox (SQL) every 50 ms here: none of it is a trace.
    async with make_client(
        otel_exporter_otlp_endpoint=ENDPOINT, jobs_in_process=True, jobs_poll_seconds=0.05
    ) as client:
        await asyncio.sleep(0.5)
        assert not exporter.get_finished_spans()
        assert (await client.get("/api/healthchecker")).status_code == 200
    assert {s.kind for s in exporter.get_finished_spans() if s.parent is None} == {SpanKind.SERVER}


def test_the_sampler_says_what_it_is() -> None:
    assert tracing._requests_only().get_description().startswith("RequestsOnly{ParentBased{")


async def test_other_connections_than_http_pass_untraced(exporter: InMemorySpanExporter) -> None:
    seen: list[dict[str, Any]] = []

    async def inner(scope: Any, _receive: Any, _send: Any) -> None:
        seen.append(scope)

    settings = msgspec.structs.replace(
        load_settings({"SECRET_KEY": "k" * 40}, env_file=None), otel_exporter_otlp_endpoint=ENDPOINT
    )
    traced = tracing.setup_tracing(settings, [], exporter=exporter)
    assert traced is not None
    scope = {"type": "websocket", "path": "/ws"}
    await traced.wrap(inner)(scope, None, None)
    await traced.shutdown()
    assert seen == [scope]
    assert not exporter.get_finished_spans()


async def test_a_share_of_requests_is_traced_and_only_those_lines_carry_a_trace_id(
    make_client: Callable[..., Any], exporter: InMemorySpanExporter, log_lines: list[dict[str, Any]]
) -> None:
    async with make_client(otel_exporter_otlp_endpoint=ENDPOINT, otel_traces_sampler_arg=0.5) as client:
        ids = []
        for _ in range(40):
            response = await client.get("/livez")
            assert response.status_code == 200
            ids.append(response.headers["x-request-id"])
    traced = {
        s.attributes["app.request_id"]: format(s.context.trace_id, "032x")
        for s in exporter.get_finished_spans()
        if s.kind == SpanKind.SERVER
    }
    assert 0 < len(traced) < 40  # all or none: 2 in 10^12
    access = {line["request_id"]: line for line in log_lines if line["logger"] == "app.access"}
    for request_id in ids:
        assert access[request_id].get("trace_id") == traced.get(request_id)


async def test_a_request_left_out_starts_no_span_at_all(
    make_client: Callable[..., Any],
    exporter: InMemorySpanExporter,
    user: TestUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    started: list[str] = []
    real_start_span = TracerProvider.get_tracer

    def counting_get_tracer(self: TracerProvider, *args: Any, **kwargs: Any) -> Any:
        tracer = real_start_span(self, *args, **kwargs)
        real = tracer.start_span

        def start_span(name: str, *a: Any, **k: Any) -> Any:
            started.append(name)
            return real(name, *a, **k)

        tracer.start_span = start_span  # type: ignore[method-assign]
        return tracer

    monkeypatch.setattr(TracerProvider, "get_tracer", counting_get_tracer)
    async with make_client(otel_exporter_otlp_endpoint=ENDPOINT, otel_traces_sampler_arg=0.0) as client:
        started.clear()
        response = await client.get("/api/contacts/?limit=5", headers=user.headers)
        assert response.status_code == 200
        me = await client.get("/api/users/me", headers=user.headers)
        assert me.status_code == 200
    assert started == []  # no server span, no SQL or Redis span, not even a non-recording one
    assert not exporter.get_finished_spans()
