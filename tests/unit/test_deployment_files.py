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


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "start from nothing, then name what the build needs"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    # Everything the Containerfile copies from the context is let in...
    copied = {
        part
        for line in (ROOT / "Containerfile").read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for part in line.split()[1:-1]
    }
    assert copied <= allowed, copied - allowed
    # ...and nothing secret or local is.
    assert not allowed & {".env", ".secret_key", "media", "tests", ".git", ".venv"}


def test_dependabot_watches_uv_actions_and_the_base_image():
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    assert config["version"] == 2
    ecosystems = {update["package-ecosystem"] for update in config["updates"]}
    assert ecosystems == {"uv", "github-actions", "docker"}
    for update in config["updates"]:
        assert update["directory"] == "/"
        assert update["schedule"]["interval"] in {"daily", "weekly"}


def test_ci_builds_the_image_and_runs_it_to_ready():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    job = workflow["jobs"]["image"]
    assert {"postgres", "redis"} <= set(job["services"])
    steps = job["steps"]
    build = next(step for step in steps if str(step.get("uses", "")).startswith("docker/build-push-action"))
    assert build["with"]["file"] == "Containerfile"
    assert build["with"]["load"] is True
    run = next(step["run"] for step in steps if "docker run" in step.get("run", ""))
    assert build["with"]["tags"] in run
    assert "/readyz" in run and "/api/auth/register" in run
    assert "DATABASE_URL=postgresql+asyncpg://" in run and "REDIS_URL=redis://" in run
    # Every variable handed to the container is a setting the app reads.
    names = set(re.findall(r"-e ([A-Z_]+)=", run))
    assert names and names <= SETTINGS_ENV, names - SETTINGS_ENV
    assert any("uv export --locked" in step.get("run", "") for step in steps)


# --------------------------------------------------------------------------- Kubernetes, Grafana

K8S = ROOT / "deploy" / "kubernetes"


def manifests() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str, name: str | None = None) -> dict:
    return next(
        d for d in manifests() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    )


def test_every_manifest_matches_the_kubernetes_schema():
    # Offline: kubernetes-validate ships the schemas; strict mode refuses unknown fields.
    import kubernetes_validate

    docs = manifests()
    assert {d["kind"] for d in docs} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "Job",
        "ConfigMap",
        "Secret",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_api_deployment_probes_and_stops_gracefully():
    api = by_kind("Deployment", "contacts-api")["spec"]["template"]["spec"]
    (container,) = api["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    config = by_kind("ConfigMap")["data"]
    delay, timeout = float(config["SHUTDOWN_DELAY"]), float(config["SHUTDOWN_TIMEOUT"])
    assert api["terminationGracePeriodSeconds"] > delay + timeout
    readiness = container["readinessProbe"]
    # The pod is seen not-ready before the server stops accepting connections.
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= delay
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]


def test_settings_named_in_the_manifests_are_settings():
    names = set(by_kind("ConfigMap")["data"]) | set(by_kind("Secret")["stringData"])
    for doc in manifests():
        if doc["kind"] in {"Deployment", "Job"}:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                names |= {env["name"] for env in container.get("env", [])}
    assert names <= SETTINGS_ENV, names - SETTINGS_ENV
    assert by_kind("ConfigMap")["data"]["AUTO_MIGRATE"] == "false"  # the Job migrates


def test_selectors_match_the_pods():
    api = by_kind("Deployment", "contacts-api")
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    for selector in (
        by_kind("Service")["spec"]["selector"],
        by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    worker = by_kind("Deployment", "contacts-worker")
    assert worker["spec"]["replicas"] >= 1
    assert worker["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == ["jobs", "worker"]
    assert by_kind("ConfigMap")["data"]["JOBS_IN_PROCESS"] == "false"  # the API pods leave mail to it
    job = by_kind("Job")["spec"]["template"]["spec"]["containers"][0]
    assert job["command"][-3:] == ["database", "upgrade", "--no-prompt"]


def test_the_grafana_dashboard_uses_only_metrics_the_service_exports():
    import prometheus_client

    import app.metrics  # registers the metrics

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "contacts-api.json").read_text())
    exported = {
        sample_name
        for metric in prometheus_client.REGISTRY.collect()
        if metric.name.startswith("contacts_")
        for sample_name in (metric.name, f"{metric.name}_total", f"{metric.name}_bucket")
    } | {app.metrics.OUTBOX_MAILS, app.metrics.OUTBOX_OLDEST_PENDING}  # read when scraped
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\bcontacts_[a-z_]+", target["expr"]))
    assert used, "the dashboard shows no metric"
    assert used <= exported, used - exported
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_every_base_image_is_pinned_by_digest():
    # A tag moves; a digest names one image: releases build from exactly what was tested.
    text = (ROOT / "Containerfile").read_text()
    args = dict(
        line.removeprefix("ARG ").split("=", 1)
        for line in text.splitlines()
        if line.startswith("ARG ") and "=" in line and "IMAGE" in line
    )
    for line in text.splitlines():
        if line.startswith("FROM "):
            image = line.split()[1]
            if image.startswith("${"):
                image = args[image.strip("${}")]
            assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", image), line
        if line.startswith("COPY --from="):
            source = line.split()[1].removeprefix("--from=")
            assert ":" not in source or "@sha256:" in source, line
