"""The compose file and the Containerfile, read as a reviewer would (no Docker engine here)."""

import json
import re
from pathlib import Path

import msgspec
import yaml

from app.config import Settings

ROOT = Path(__file__).parents[2]
SETTINGS_ENV = {f.name.upper() for f in msgspec.structs.fields(Settings)}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_app_environment_names_are_settings():
    env = compose()["services"]["app"]["environment"]
    unknown = set(env) - SETTINGS_ENV
    assert not unknown, f"compose sets variables the app does not read: {sorted(unknown)}"
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert env["REDIS_URL"].startswith("redis://")
    assert "${SECRET_KEY:?" in env["SECRET_KEY"], "the secret must come from the environment"


def test_app_waits_for_healthy_database_and_redis():
    depends = compose()["services"]["app"]["depends_on"]
    assert depends["db"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"
    services = compose()["services"]
    assert "healthcheck" in services["db"]
    assert "healthcheck" in services["redis"]
    assert "mailpit" in services


def test_database_keeps_data_in_a_volume():
    doc = compose()
    assert any(v.endswith(":/var/lib/postgresql/data") for v in doc["services"]["db"]["volumes"])
    assert "pgdata" in doc["volumes"]


def test_app_can_scale_to_several_replicas():
    app = compose()["services"]["app"]
    assert "container_name" not in app, "a fixed container name prevents --scale"
    for port in app.get("ports", []):
        host = str(port).split(":")[0]
        assert "-" in host, f"host port {host} is fixed: a second replica could not bind it"
    assert any(v.endswith(":/app/media") for v in app["volumes"]), "replicas must share avatars"


def test_the_most_replicas_fit_in_the_databases_connections():
    services = compose()["services"]
    app = services["app"]
    first, last = (int(p) for p in str(app["ports"][0]).split(":")[0].split("-"))
    replicas = last - first + 1
    pool_size = int(app["environment"]["DB_POOL_SIZE"])
    command = services["db"]["command"]
    max_connections = int(next(arg for arg in command if arg.startswith("max_connections=")).split("=")[1])
    # Two pools per replica (reads, ORM sessions), and room for migrations and an operator.
    assert replicas * 2 * pool_size + 10 <= max_connections


def test_containerfile_is_multistage_nonroot_with_healthcheck():
    text = (ROOT / "Containerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    assert "uv sync --locked" in text
    user_lines = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1].split()[1] not in {"root", "0"}
    assert "HEALTHCHECK" in text and "/api/healthchecker" in text


def test_container_runs_the_readme_command():
    # `python -m app` is the README's command (tests/integration/test_server_command.py runs it):
    # no proxy headers, the masked access log, a bounded request head.
    text = (ROOT / "Containerfile").read_text()
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    assert json.loads(cmd.removeprefix("CMD ")) == ["python", "-m", "app"]
    assert "HOST=0.0.0.0" in text
    assert "uvicorn" not in cmd


def test_compose_runs_the_image_command():
    # A `command:` in the compose file would bypass the README's command.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "command" not in compose["services"]["app"]
    assert "FORWARDED_ALLOW_IPS" not in compose["services"]["app"].get("environment", {})


def test_a_worker_service_runs_the_job_runner_beside_api_replicas_that_do_not():
    services = compose()["services"]
    worker, app = services["worker"], services["app"]
    assert worker["command"] == ["litestar", "--app", "app.main:app", "jobs", "worker"]
    assert worker["build"] == app["build"], "the worker runs the API's image"
    assert worker["environment"]["DATABASE_URL"] == app["environment"]["DATABASE_URL"]
    assert worker["environment"]["SMTP_HOST"] == app["environment"]["SMTP_HOST"]
    assert set(worker["environment"]) - SETTINGS_ENV == set()
    assert app["environment"]["JOBS_IN_PROCESS"] == "false", "API replicas must leave delivery to the worker"
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    assert worker["healthcheck"] == {"disable": True}, "the image's HTTP health check cannot pass here"
    assert "ports" not in worker and "container_name" not in worker
    grace = _seconds(worker["stop_grace_period"])
    shutdown = float(worker["environment"].get("JOBS_SHUTDOWN_SECONDS", Settings().jobs_shutdown_seconds))
    assert grace > shutdown, "Docker must not SIGKILL the worker while deliveries finish"


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    number, unit = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", duration).groups()
    return float(number) * units[unit]


def test_compose_gives_the_drain_time_to_finish():
    app = compose()["services"]["app"]
    env = app["environment"]
    drain = float(env["SHUTDOWN_DELAY"]) + float(env["SHUTDOWN_TIMEOUT"])
    # Docker sends SIGKILL after stop_grace_period (10 s by default).
    assert _seconds(app["stop_grace_period"]) > drain
