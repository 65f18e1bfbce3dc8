"""``/metrics``: off by default, behind its token, parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from app.db import make_db_config
from app.jobs.models import DEAD, OutboxMail
from app.jobs.outbox import add_mail
from app.jobs.runner import JobRunner
from app.metrics import FOLD_SECONDS
from tests.conftest import SmtpServer
from tests.integration.test_server_command import readme_run_command, serve, server_env  # noqa: F401

TOKEN = "metrics-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample as ``(name, labels) -> value``."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client) -> dict:
    response = await client.get("/metrics", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_metrics_are_off_by_default(client):
    assert (await client.get("/metrics")).status_code == 404


async def test_metrics_need_the_token(make_client):
    async with make_client(metrics_enabled=True, metrics_token=TOKEN) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/metrics", headers=AUTH)).status_code == 200


async def test_requests_are_counted_by_route_template_and_status(make_client, user_factory):
    async with make_client(metrics_enabled=True, metrics_token=TOKEN) as client:
        user = await user_factory()
        before = await scrape(client)
        created = await client.post(
            "/api/contacts/",
            json={
                "first_name": "Ada",
                "last_name": "L",
                "email": "ada@example.com",
                "phone_number": "+380501234567",
            },
            headers=user.headers,
        )
        assert created.status_code == 201, created.text
        contact_id = created.json()["id"]
        for _ in range(3):
            assert (await client.get(f"/api/contacts/{contact_id}", headers=user.headers)).status_code == 200
        assert (await client.get("/api/nowhere/at/all")).status_code == 404
        assert (await client.get("/api/users/me")).status_code == 401
        text = (await client.get("/metrics", headers=AUTH)).text
    after = parse(text)
    assert contact_id not in text, "a raw id became a label"
    (route,) = {
        dict(labels)["route"]
        for (name, labels) in after
        if name == "contacts_http_requests_total" and dict(labels)["route"].startswith("/api/contacts/{")
    }
    assert route.startswith("/api/contacts/{contact_id")
    labels = {"method": "GET", "route": route, "status": "200"}
    assert (
        value(after, "contacts_http_requests_total", **labels)
        - value(before, "contacts_http_requests_total", **labels)
        == 3
    )
    assert (
        value(after, "contacts_http_request_duration_seconds_count", **labels)
        - value(before, "contacts_http_request_duration_seconds_count", **labels)
        == 3
    )
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert value(after, "contacts_http_requests_total", **unmatched) > value(
        before, "contacts_http_requests_total", **unmatched
    )
    me_401 = {"method": "GET", "route": "/api/users/me", "status": "401"}
    assert (
        value(after, "contacts_http_requests_total", **me_401)
        == value(before, "contacts_http_requests_total", **me_401) + 1
    )


async def test_the_services_own_metrics(make_client, user_factory, settings, smtp_server: SmtpServer):
    async with make_client(
        metrics_enabled=True,
        metrics_token=TOKEN,
        rate_limit_enabled=True,
        rate_limit_auth_per_minute=2,
        **smtp_server.settings,
    ) as client:
        user = await user_factory()
        before = await scrape(client)
        for _ in range(2):
            assert (await client.get("/api/users/me", headers=user.headers)).status_code == 200
        sent = await client.post("/api/auth/update_password", json={"email": user.email})
        assert sent.status_code in (200, 202), sent.text
        statuses = [
            (
                await client.post("/api/auth/login", data={"username": user.email, "password": user.password})
            ).status_code
            for _ in range(3)
        ]
        assert 200 in statuses and statuses[-1] == 429
        after = await scrape(client)
        for _ in range(150):  # the mail leaves through the outbox's runner
            if value(after, "contacts_mails_total", result="sent") > value(
                before, "contacts_mails_total", result="sent"
            ):
                break
            await asyncio.sleep(0.1)
            after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("contacts_user_cache_requests_total", result="miss") >= 1
    assert delta("contacts_user_cache_requests_total", result="hit") >= 1
    assert delta("contacts_rate_limit_refusals_total", route="/api/auth/login") == statuses.count(429)
    assert delta("contacts_mails_total", result="sent") == 1
    pools = {dict(labels)["pool"] for (name, labels) in after if name == "contacts_db_pool_size"}
    assert "sessions" in pools
    assert value(after, "contacts_db_pool_in_use", pool="sessions") >= 0
    if settings.database_url.startswith("postgresql"):
        assert value(after, "contacts_db_pool_size", pool="direct") == settings.db_pool_size
    assert ("contacts_password_hashes_queued", frozenset()) in after
    assert value(after, "contacts_password_hashes_running") == 0


def _outbox(samples: dict) -> tuple[float | None, float | None, float | None]:
    """Pending, dead and oldest pending age as scraped (``None``: the sample is missing)."""

    def get(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    return (
        get("contacts_outbox_mails", status="pending"),
        get("contacts_outbox_mails", status="dead"),
        get("contacts_outbox_oldest_pending_seconds"),
    )


async def _backdate_and_kill(settings, recipient: str, seconds: float) -> None:
    """Make the rows ``seconds`` old; add a dead mail to ``recipient``."""
    config = make_db_config(settings)
    try:
        async with config.get_session() as session:
            await session.execute(
                update(OutboxMail).values(created_at=datetime.now(UTC) - timedelta(seconds=seconds))
            )
            add_mail(session, "password_changed", recipient, username="x").status = DEAD
            await session.commit()
    finally:
        await config.get_engine().dispose()


async def _deliver(settings, mailer) -> int:
    """One round of a job runner of the test's own (the app's runs in the client's loop)."""
    runner = JobRunner(make_db_config(settings).get_engine(), mailer, settings)
    try:
        return await runner.deliver_due()
    finally:
        await runner.close()


async def test_the_outbox_backlog_is_read_when_scraped(make_client, settings, caplog):
    # No runner in this app: the mails wait in the outbox, as they do while SMTP is down.
    async with make_client(metrics_enabled=True, metrics_token=TOKEN, jobs_in_process=False) as client:
        assert _outbox(await scrape(client)) == (0, 0, 0)
        for tag in ("ada", "bob"):
            account = {"username": tag, "email": f"{tag}@example.com", "password": "a passphrase 123"}
            assert (await client.post("/api/auth/register", json=account)).status_code == 201
        assert _outbox(await scrape(client))[:2] == (2, 0)
        await _backdate_and_kill(settings, "carol@example.com", 90)
        pending, dead, age = _outbox(await scrape(client))
        assert (pending, dead) == (2, 1)
        assert 90 <= age < 150

        # A runner delivers them (to the log: no SMTP server here); the dead one stays.
        assert await _deliver(settings, client.app.state.mailer) == 2
        assert _outbox(await scrape(client)) == (0, 1, 0)

        # The database cannot be read: the scrape still answers, without the outbox's gauges.
        async def unreachable():
            raise OSError("connection refused")

        client.app.state.job_runner.backlog = unreachable
        with caplog.at_level(logging.WARNING, "app.metrics"):
            samples = await scrape(client)
        assert _outbox(samples) == (None, None, None)
        assert (
            "contacts_http_requests_total",
            frozenset({"method": "GET", "route": "/metrics", "status": "200"}.items()),
        ) in samples
        assert "cannot read the outbox (OSError)" in caplog.text


@pytest.mark.parametrize("workers", [2])
def test_several_workers_share_their_counts(
    workers: int,
    server_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    port = int(server_env["PORT"])
    server_env.update(
        {
            "WORKERS": str(workers),
            "METRICS_ENABLED": "true",
            "METRICS_TOKEN": TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
            "JOBS_IN_PROCESS": "false",  # the mail below stays pending
        }
    )
    command = readme_run_command()
    if command[0] != sys.executable and "uv" not in command[0]:
        pytest.skip("unexpected README command")
    if "REDIS_URL" not in server_env:
        pytest.skip("several workers need a shared store (REDIS_URL): the PostgreSQL + Redis run")
    requests = 40
    with serve(command, server_env, port, tmp_path) as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            account = {"username": "ada", "email": "ada@example.com", "password": "a passphrase 123"}
            assert http.post("/api/auth/register", json=account).status_code == 201
            baseline = parse(http.get("/metrics", headers=AUTH).text)
            for _ in range(requests):
                # A new connection each time, so that both workers answer some.
                assert httpx.get(f"{server.base_url}/livez").status_code == 200
            time.sleep(FOLD_SECONDS * 4)  # each worker counts its requests within FOLD_SECONDS
            after = parse(http.get("/metrics", headers=AUTH).text)
        files = list((tmp_path / "metrics").glob("counter_*.db"))
    labels = {"method": "GET", "route": "/livez", "status": "200"}
    counted = value(after, "contacts_http_requests_total", **labels) - value(
        baseline, "contacts_http_requests_total", **labels
    )
    assert counted == requests
    assert len(files) >= 2, "each worker writes its own file"
    # The outbox is the database's, read by the worker scraped: never summed over workers.
    assert _outbox(baseline)[0] == _outbox(after)[0] == 1


def test_production_needs_a_metrics_token_when_metrics_are_on():
    from app.config import SettingsError, load_settings

    env = {
        "APP_ENV": "production",
        "REDIS_URL": "redis://r",
        "SECRET_KEY": "k" * 40,
        "METRICS_ENABLED": "true",
    }
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        load_settings(env, env_file=None)
    assert load_settings({**env, "METRICS_TOKEN": TOKEN}, env_file=None).metrics_enabled
