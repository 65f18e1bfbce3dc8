"""Schema fuzzing: schemathesis over every operation of ``/schema/openapi.json``.

Each operation gets ``settings.fuzz_examples`` valid (positive) and half as many invalid
(negative) requests, sent with a confirmed user's Bearer token (an admin's on admin-only
routes) to the app in-process (schemathesis' ASGI transport). Every answer must be a
non-5xx with a documented status code, a documented content type and a body that
matches the documented schema. Failures are collected over all operations (no shrinking,
to keep the run bounded) and reported together.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from anyio import to_thread
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from litestar import Litestar
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.main import create_app
from app.security.guards import requires_admin

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Generation modes and the share of ``fuzz_examples`` each gets: invalid requests are slower to
#: generate and mostly end in the same validation error, so they get half.
MODES = ((schemathesis.GenerationMode.POSITIVE, 1.0), (schemathesis.GenerationMode.NEGATIVE, 0.5))


@dataclass
class FuzzReport:
    """What the run sent and what it found."""

    cases: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    seconds_by_operation: dict[str, float] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    seconds: float = 0.0

    def record_failure(self, label: str, group: FailureGroup) -> None:
        """Keep the first report of each distinct (operation, failure) pair."""
        for failure in group.exceptions:
            key = (label, f"{type(failure).__name__}: {failure.title}")
            self.failures.setdefault(key, str(group)[:3000])


def admin_only_routes(app: Litestar) -> set[tuple[str, str]]:
    """``(METHOD, path)`` of every route guarded by :func:`requires_admin`."""
    routes = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if requires_admin in handler.resolve_guards():
                for method in handler.http_methods:
                    routes.add((method, route.path_format))
    return routes


def _openapi_path(path: str) -> str:
    return path.rstrip("/") or "/"


def fuzz(
    app: Litestar, examples: int, headers_for: Callable[[str, str], dict[str, str]], report: FuzzReport
) -> None:
    """Run every operation of ``app``'s schema through schemathesis (blocking).

    Args:
        app: The application (reached in-process).
        examples: Examples per operation and generation mode.
        headers_for: Headers to send for a ``(METHOD, path)``.
        report: Filled with the counts and failures.
    """
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the schema has no operation"
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        headers = headers_for(operation.method.upper(), operation.path)
        op_started = time.monotonic()
        for mode, share in MODES:
            _fuzz_operation(operation, mode, max(1, round(examples * share)), headers, label, report)
        report.seconds_by_operation[label] = time.monotonic() - op_started
    report.seconds = time.monotonic() - started


def _fuzz_operation(
    operation: Any, mode: Any, examples: int, headers: dict[str, str], label: str, report: FuzzReport
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run: a failure is reproducible, the time stable
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: failures are collected, not minimised
    )
    def run(case: Any) -> None:
        report.cases += 1
        report.by_operation[label] = report.by_operation.get(label, 0) + 1
        try:
            case.call_and_validate(headers=headers, checks=CHECKS)
        except FailureGroup as group:
            report.record_failure(label, group)

    try:
        run()
    except Unsatisfiable:
        # An operation without parameters or body has no invalid request to make.
        if mode is not schemathesis.GenerationMode.NEGATIVE:
            raise


def _describe(failures: Iterable[tuple[tuple[str, str], str]]) -> str:
    return "\n\n".join(f"### {label} — {kind}\n{detail}" for (label, kind), detail in failures)


async def test_schema_fuzzing_every_operation_no_5xx_and_conforms(settings: Settings, user_factory, capsys):
    user = await user_factory()
    admin = await user_factory(role="admin")
    # A separate instance of the app on the same database: schemathesis drives it from its own thread.
    app = create_app(settings)
    admin_routes = {(method, _openapi_path(path)) for method, path in admin_only_routes(app)}

    def headers_for(method: str, path: str) -> dict[str, str]:
        return admin.headers if (method, _openapi_path(path)) in admin_routes else user.headers

    report = FuzzReport()
    try:
        await to_thread.run_sync(fuzz, app, settings.fuzz_examples, headers_for, report)
    finally:
        await to_thread.run_sync(schemathesis_asgi.shutdown_lifespans)
    with capsys.disabled():
        print(  # the figure the issue asks for
            f"\nschema fuzzing: {report.cases} cases over {len(report.by_operation)} operations "
            f"in {report.seconds:.1f}s, {len(report.failures)} distinct failures"
        )
        slowest = sorted(report.seconds_by_operation.items(), key=lambda kv: -kv[1])[:5]
        print("slowest: " + ", ".join(f"{label} {seconds:.1f}s" for label, seconds in slowest))
    assert not report.failures, _describe(sorted(report.failures.items()))
    assert len(report.by_operation) >= 1
