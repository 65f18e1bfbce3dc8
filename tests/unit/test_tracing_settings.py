"""Tracing settings: a bad endpoint or sampler share is refused at start-up, and an endpoint
without the ``otel`` extra says what to install; without an endpoint nothing of OpenTelemetry
is needed. Runs whether or not the extra is installed."""

from __future__ import annotations

import sys

import pytest

from app import tracing
from app.config import SettingsError, load_settings

KEY = {"SECRET_KEY": "k" * 40}


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector:4318", "must start with http:// or https://"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://otel-collector:4317", "must start with http:// or https://"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "must be between 0 and 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "-0.1", "must be between 0 and 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "half", "Expected `float`"),
    ],
)
def test_bad_tracing_settings_are_refused_by_name(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}: .*{message}"):
        load_settings({**KEY, variable: value}, env_file=None)


def test_tracing_is_off_by_default_and_needs_no_package() -> None:
    settings = load_settings(KEY, env_file=None)
    assert settings.otel_exporter_otlp_endpoint is None
    assert settings.otel_service_name == "contacts-api"
    assert settings.otel_traces_sampler_arg == 1.0
    assert tracing.setup_tracing(settings, []) is None


def test_an_endpoint_without_the_extra_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings({**KEY, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, env_file=None)
    # As if the extra were not installed: no package `opentelemetry` can be imported.
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(SettingsError, match=r"^OTEL_EXPORTER_OTLP_ENDPOINT: .*uv sync --extra otel"):
        tracing.setup_tracing(settings, [])
