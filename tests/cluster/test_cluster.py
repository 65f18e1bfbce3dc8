"""Three replicas behind nginx, sharing PostgreSQL, Redis and an S3 stand-in (issue 14.6).

Each replica is the README's ``python -m app`` with its own ``PORT``; nginx (Debian's package,
config in ``nginx.conf.template``) balances them round robin and skips one that is gone. The
replicas trust nginx (``TRUSTED_PROXIES=127.0.0.1``), so a test picks its rate-limit client
with ``X-Forwarded-For``; a request sent straight to one replica's port reaches that replica.

The replicas are API replicas (``JOBS_IN_PROCESS=false``), as the deployment docs run them:
mails wait in the shared outbox until the mail test starts three ``litestar jobs worker``
processes of its own, with ``SMTP_PORT`` pointing at a port where nothing listens until the
test opens an SMTP server there.

Runs only on PostgreSQL + Redis (``TEST_DATABASE_URL`` and ``TEST_REDIS_URL``), with nginx
installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.users.models import User
from tests import images, s3
from tests.conftest import PASSWORD, PASSWORD_HASH, SECRET, TEST_DATABASE_URL, TEST_REDIS_URL
from tests.integration.test_server_command import ROOT, _free_port, readme_run_command
from tests.reliability.services import SmtpSink

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
TEMPLATE = Path(__file__).with_name("nginx.conf.template")
#: ``RATE_LIMIT_ME_PER_MINUTE`` of every replica.
ME_LIMIT = 12
NEW_PASSWORD = "a brand new passphrase 77"

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not (TEST_DATABASE_URL and TEST_REDIS_URL), reason="the cluster runs on PostgreSQL + Redis"
    ),
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it)"),
]


class Replica:
    """One ``python -m app`` process on its own port; stopped, killed and started again at will."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        """Pick a port; nothing runs until :meth:`start`."""
        self.name = name
        self.port = _free_port()
        self.env = {**env, "PORT": str(self.port)}
        self.log = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The replica's own base URL (bypassing nginx)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the README's command (its output appended to the replica's log).

        In a session of its own: ``uv run`` forwards ``SIGTERM`` to the server but a ``SIGKILL``
        would only end ``uv``, so :meth:`kill` ends the whole group.
        """
        with self.log.open("ab") as sink:
            self.started_at = sink.tell()
            self.process = subprocess.Popen(  # noqa: S603
                self.command(),
                cwd=ROOT,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def command(self) -> list[str]:
        """The command :meth:`start` runs: the README's."""
        return readme_run_command()

    def output(self) -> str:
        """What the current process printed so far."""
        with self.log.open("rb") as log:
            log.seek(self.started_at)
            return log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until ``/readyz`` answers ``200``."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            assert self.process.poll() is None, f"{self.name} exited:\n{self.log.read_text()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def stop(self, timeout: float = 30) -> None:
        """``SIGTERM`` (what a deploy sends) and wait until the process has ended."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.kill()  # anything left of the group (nothing, when the stop was graceful)

    def kill(self) -> None:
        """``SIGKILL`` to the server and its ``uv`` parent: no chance to finish anything."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class JobWorker(Replica):
    """A ``litestar jobs worker`` process: the job runner on its own, as the deployment docs run it."""

    def command(self) -> list[str]:
        """The worker command of the deployment docs (with this interpreter)."""
        return [sys.executable, "-m", "litestar", "--app", "app.main:app", "jobs", "worker"]

    def wait_started(self, timeout: float = 60) -> None:
        """Wait until the worker says its runner started."""
        deadline = time.monotonic() + timeout
        while "job runner started" not in self.output():
            assert self.process is not None
            assert self.process.poll() is None, f"{self.name} exited:\n{self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"{self.name} did not start:\n{self.output()[-3000:]}"
            time.sleep(0.1)


@dataclass
class Session:
    """A logged-in session of a user."""

    access: str
    refresh: str

    @property
    def headers(self) -> dict[str, str]:
        """The bearer header of the session."""
        return {"Authorization": f"Bearer {self.access}"}


@dataclass
class Cluster:
    """Three replicas, nginx in front, and the S3 bucket they share."""

    replicas: list[Replica]
    url: str
    bucket: s3.S3Bucket
    database_url: str
    nginx: subprocess.Popen[bytes]
    nginx_prefix: Path
    nginx_port: int
    #: The environment every replica and job worker runs with.
    env: dict[str, str]
    #: Where the replicas' logs go.
    log_dir: Path
    #: ``SMTP_PORT`` of the replicas and workers: nothing listens there until a test opens it.
    smtp_port: int
    #: Holds ``smtp_port`` (bound, not listening: connections are refused) until then, so
    #: that no other test's SMTP server on this machine takes the free port meanwhile.
    smtp_reservation: socket.socket
    _clients: int = 0

    def drain(self, replica: Replica | None) -> None:
        """Take ``replica`` out of nginx's rotation (``None``: every replica in), as a deploy does.

        nginx reloads gracefully: its old workers finish the requests they hold, new ones use
        the new list.
        """
        _render_nginx(self.nginx_prefix, self.nginx_port, self.replicas, down=replica)
        self.nginx.send_signal(signal.SIGHUP)
        time.sleep(1.0)  # the new workers are up well within this; the old ones drain meanwhile

    def existing(self, ids: list[str]) -> set[str]:
        """Which of the contact ``ids`` are in the shared database."""
        return asyncio.run(_existing(self.database_url, ids))

    def client_address(self) -> str:
        """A fresh documentation address: its own rate-limit counters (nginx forwards it)."""
        self._clients += 1
        return f"198.51.{self._clients // 250}.{self._clients % 250 + 1}"

    def register(self, *, role: str = "user") -> str:
        """A confirmed user, written to the shared database; returns its email."""
        email = f"c-{uuid.uuid4().hex[:10]}@example.com"
        asyncio.run(_insert_user(self.database_url, email, role))
        return email

    def login(self, email: str, password: str = PASSWORD, *, via: str | None = None) -> httpx.Response:
        """``POST /api/auth/login`` from a fresh client address."""
        return httpx.post(
            f"{via or self.url}/api/auth/login",
            data={"username": email, "password": password},
            headers={"X-Forwarded-For": self.client_address()},
            timeout=30,
        )

    def session(self, email: str) -> Session:
        """A new session of ``email``."""
        answer = self.login(email)
        assert answer.status_code == 200, answer.text
        return Session(answer.json()["access_token"], answer.json()["refresh_token"])


async def _insert_user(database_url: str, email: str, role: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with AsyncSession(engine) as session:
            session.add(
                User(
                    username=email.split("@")[0],
                    email=email,
                    password_hash=PASSWORD_HASH,
                    role=role,
                    confirmed=True,
                    avatar_url="https://www.gravatar.com/avatar/x",
                )
            )
            await session.commit()
    finally:
        await engine.dispose()


async def _existing(database_url: str, ids: list[str]) -> set[str]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                text("SELECT id FROM contacts WHERE id = ANY(:ids)"), {"ids": [uuid.UUID(i) for i in ids]}
            )
            return {str(row) for row in found.scalars()}
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class OutboxRow:
    """What the mail test reads of an outbox row."""

    id: str
    kind: str
    status: str
    attempts: int
    last_error: str | None


async def _outbox(database_url: str) -> list[OutboxRow]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(text("SELECT id, kind, status, attempts, last_error FROM outbox"))
            return [OutboxRow(str(r.id), r.kind, r.status, r.attempts, r.last_error) for r in found]
    finally:
        await engine.dispose()


def _render_nginx(prefix: Path, port: int, replicas: list[Replica], down: Replica | None = None) -> Path:
    upstreams = "\n".join(
        f"        server 127.0.0.1:{r.port} max_fails=1 fail_timeout=1s{' down' if r is down else ''};"
        for r in replicas
    )
    text = (
        TEMPLATE.read_text()
        .replace("@PREFIX@", str(prefix))
        .replace("@PORT@", str(port))
        .replace("@UPSTREAMS@", upstreams)
        # A root master would run its worker as "nobody", which cannot write under tmp_path.
        .replace("@USER@", "user root;" if os.geteuid() == 0 else "")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return conf


@pytest.fixture(scope="module")
def cluster(database_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Start moto, three replicas and nginx; stop them all at the end."""
    assert NGINX is not None and TEST_REDIS_URL is not None
    base = tmp_path_factory.mktemp("cluster")
    import redis

    with redis.Redis.from_url(TEST_REDIS_URL) as client:
        client.flushdb()  # counters of earlier runs would skew the exact rate-limit counts
    moto = s3.start_server()
    smtp_reservation: socket.socket | None = None
    nginx: subprocess.Popen[bytes] | None = None
    replicas: list[Replica] = []
    try:
        bucket = s3.new_bucket(moto)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "COV_", "COVERAGE"))}
        env.pop("FORWARDED_ALLOW_IPS", None)
        env.update(
            {
                "APP_ENV": "production",
                "DATABASE_URL": database_template,
                "REDIS_URL": TEST_REDIS_URL,
                "SECRET_KEY": SECRET,
                "PUBLIC_BASE_URL": "http://127.0.0.1",
                "AUTO_MIGRATE": "false",
                "BCRYPT_ROUNDS": "4",
                "TRUSTED_PROXIES": "127.0.0.1",
                "RATE_LIMIT_ME_PER_MINUTE": str(ME_LIMIT),
                "SHUTDOWN_DELAY": "0",
                "SHUTDOWN_TIMEOUT": "15",
                "MEDIA_DIR": str(base / "media"),
                **bucket.env(),
            }
        )
        smtp_reservation = socket.socket()  # no SO_REUSEADDR: nobody else can bind the port
        smtp_reservation.bind(("127.0.0.1", 0))
        smtp_port = smtp_reservation.getsockname()[1]
        env.update(
            {
                # API replicas: the mail test starts the job workers (and the SMTP server).
                "JOBS_IN_PROCESS": "false",
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(smtp_port),
                "SMTP_TLS": "none",
            }
        )
        replicas = [Replica(f"replica{n}", env, base) for n in range(3)]
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready()
        prefix = base / "nginx"
        prefix.mkdir()
        port = _free_port()
        conf = _render_nginx(prefix, port, replicas)
        nginx = subprocess.Popen(  # noqa: S603
            [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert nginx.poll() is None, (prefix / "error.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, (prefix / "error.log").read_text()
            time.sleep(0.1)
        yield Cluster(
            replicas,
            url,
            bucket,
            database_template,
            nginx,
            prefix,
            port,
            env,
            base,
            smtp_port,
            smtp_reservation,
        )
    finally:
        if smtp_reservation is not None:
            smtp_reservation.close()
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        for replica in replicas:
            if replica.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    replica.stop()
        moto.stop()


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    """Workers creating contacts through nginx until stopped; every answer is recorded."""

    url: str
    headers: dict[str, str]
    workers: int = 4
    pause: float = 0.01
    statuses: Counter[int | str] = field(default_factory=Counter)
    created: list[str] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        # A connection per request: a reload of nginx closes its old workers' idle kept-alive
        # connections, and a POST sent on one at that moment is lost by the client (not the
        # cluster), which could not know whether to retry it.
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30, limits=no_reuse) as http:
            while not self._stop.is_set():
                tag = uuid.uuid4().hex[:12]
                body = {
                    "first_name": "Lowd",
                    "last_name": "Tester",
                    "email": f"{tag}@example.com",
                    "phone_number": "+380 50 123 4567",
                }
                try:
                    answer = http.post("/api/contacts/", json=body)
                except httpx.HTTPError as exc:  # nginx itself never went away: count it as a failure
                    self.statuses[type(exc).__name__] += 1
                    continue
                self.statuses[answer.status_code] += 1
                if answer.status_code != 201:
                    self.samples.append(answer.text[:300])
                if answer.status_code == 201:
                    self.created.append(answer.json()["id"])
                time.sleep(self.pause)  # steady load, not a flood: the machine also runs the replicas

    def __enter__(self) -> Load:
        """Start the workers."""
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop the workers and wait for their last requests."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_for(self, created: int, timeout: float = 60) -> None:
        """Wait until at least ``created`` contacts were answered ``201``."""
        deadline = time.monotonic() + timeout
        while len(self.created) < created:
            assert time.monotonic() < deadline, (
                f"only {len(self.created)} created: {self.statuses} {self.samples[:1]}"
            )
            time.sleep(0.05)


def _assert_all_exist(cluster: Cluster, ids: list[str]) -> None:
    missing = set(ids) - cluster.existing(ids)
    assert not missing, f"{len(missing)} of {len(ids)} contacts answered 201 are gone"


# --------------------------------------------------------------------------- tests


def _me(cluster: Cluster, replica: Replica, session: Session) -> int:
    """``GET /api/users/me`` on ``replica``, from a fresh client (clear of the rate limit)."""
    headers = {**session.headers, "X-Forwarded-For": cluster.client_address()}
    return httpx.get(f"{replica.url}/api/users/me", headers=headers, timeout=30).status_code


def test_logout_password_and_role_changes_reach_every_replica(cluster: Cluster) -> None:
    replicas = cluster.replicas
    admin = cluster.session(cluster.register(role="admin"))
    email = cluster.register()
    leaving, other, changing = (cluster.session(email) for _ in range(3))
    # Every replica has every session in its cache before the changes.
    assert {_me(cluster, r, s) for r in replicas for s in (leaving, other, changing)} == {200}

    # A logout through replica 0: that session is refused by every replica at once.
    out = httpx.post(
        f"{replicas[0].url}/api/auth/logout",
        json={"refresh_token": leaving.refresh},
        headers=leaving.headers,
    )
    assert out.status_code == 204
    assert [_me(cluster, r, leaving) for r in replicas] == [401] * 3
    assert [_me(cluster, r, other) for r in replicas] == [200] * 3

    # A password change through replica 1 ends the other sessions everywhere; the old password is dead.
    change = httpx.patch(
        f"{replicas[1].url}/api/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=changing.headers,
    )
    assert change.status_code == 204, change.text
    assert [_me(cluster, r, other) for r in replicas] == [401] * 3
    assert [_me(cluster, r, changing) for r in replicas] == [200] * 3
    assert [cluster.login(email, via=r.url).status_code for r in replicas] == [401] * 3
    assert [cluster.login(email, NEW_PASSWORD, via=r.url).status_code for r in replicas] == [200] * 3

    # A promotion through replica 2, then a demotion through replica 0: each is what every
    # replica enforces on the very next request.
    fresh = {**changing.headers, "X-Forwarded-For": cluster.client_address()}
    user_id = httpx.get(f"{replicas[0].url}/api/users/me", headers=fresh).json()["id"]

    def admin_list(replica: Replica) -> int:
        return httpx.get(f"{replica.url}/api/users", headers=changing.headers, timeout=30).status_code

    assert [admin_list(r) for r in replicas] == [403] * 3
    for via, role, expected in ((2, "admin", 200), (0, "user", 403)):
        answer = httpx.patch(
            f"{replicas[via].url}/api/users/{user_id}/role", json={"role": role}, headers=admin.headers
        )
        assert answer.status_code == 200, answer.text
        assert [admin_list(r) for r in replicas] == [expected] * 3


def test_avatars_live_in_the_shared_bucket(cluster: Cluster) -> None:
    admin = cluster.session(cluster.register(role="admin"))
    replicas = cluster.replicas
    urls = []
    for replica, data in ((replicas[0], images.png()), (replicas[1], images.gif())):
        answer = httpx.patch(
            f"{replica.url}/api/users/avatar",
            files={"file": ("a", data, "application/octet-stream")},
            headers=admin.headers,
        )
        assert answer.status_code == 200, answer.text
        urls.append(answer.json()["avatar_url"])
        address = cluster.client_address()
        assert httpx.get(urls[-1]).content == data
        # Every replica shows the new URL.
        assert {
            httpx.get(f"{r.url}/api/users/me", headers={**admin.headers, "X-Forwarded-For": address}).json()[
                "avatar_url"
            ]
            for r in replicas
        } == {urls[-1]}
    # The first object was deleted by the replica that replaced it.
    assert httpx.get(urls[0]).status_code in (403, 404)
    assert (
        urls[1].removeprefix(f"{cluster.bucket.endpoint}/{cluster.bucket.name}/")
        in cluster.bucket.object_keys()
    )


def test_rate_limits_are_exact_across_replicas(cluster: Cluster) -> None:
    session = cluster.session(cluster.register())

    def burst(urls: list[str]) -> list[int]:
        address = cluster.client_address()
        headers = {**session.headers, "X-Forwarded-For": address}
        with ThreadPoolExecutor(max_workers=len(urls)) as pool:
            answers = list(
                pool.map(lambda u: httpx.get(f"{u}/api/users/me", headers=headers, timeout=30), urls)
            )
        refused = [a for a in answers if a.status_code == 429]
        assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in refused)
        return sorted(a.status_code for a in answers)

    # 3L at once, straight to the three replicas in turn, then through nginx's round robin.
    direct = [cluster.replicas[n % 3].url for n in range(3 * ME_LIMIT)]
    assert burst(direct) == [200] * ME_LIMIT + [429] * (2 * ME_LIMIT)
    assert burst([cluster.url] * (3 * ME_LIMIT)) == [200] * ME_LIMIT + [429] * (2 * ME_LIMIT)


def test_a_replica_killed_under_load_loses_no_acknowledged_write(cluster: Cluster) -> None:
    session = cluster.session(cluster.register())
    victim = cluster.replicas[1]
    with Load(cluster.url, session.headers) as load:
        load.wait_for(30)
        victim.kill()
        # The server itself is gone, not just its uv parent: its port refuses connections soon
        # (a connection accepted as the kernel tears the process down is reset instead).
        deadline = time.monotonic() + 5
        while True:
            try:
                httpx.get(f"{victim.url}/livez", timeout=2)
            except httpx.ConnectError:
                break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the killed replica still accepts connections"
            time.sleep(0.05)
        killed_at = len(load.created)
        load.wait_for(killed_at + 60)
    victim.start()
    victim.wait_ready()
    # Writes in flight on the killed replica may fail (nginx never replays a POST that reached
    # it); every write answered 201 must be there.
    assert load.statuses[201] == len(load.created)
    assert set(load.statuses) <= {201, 502}, (load.statuses, load.samples[:3])
    _assert_all_exist(cluster, load.created)


def test_a_rolling_restart_costs_no_error(cluster: Cluster) -> None:
    # A deploy: each replica in turn is taken out of nginx's rotation, stopped with SIGTERM
    # (requests it still holds finish: SHUTDOWN_TIMEOUT), started again and put back.
    # nginx has no active health checks: without the drain, a connection the replica accepted
    # as it closed its socket is reset, and nginx cannot safely replay a POST on another.
    session = cluster.session(cluster.register())
    with Load(cluster.url, session.headers) as load:
        load.wait_for(20)
        for replica in cluster.replicas:
            cluster.drain(replica)
            replica.stop()
            assert "Finished server process" in replica.output()  # a graceful stop, not a kill
            replica.start()
            replica.wait_ready()
            cluster.drain(None)
            load.wait_for(len(load.created) + 20)
    assert set(load.statuses) == {201}, (load.statuses, load.samples[:3])
    _assert_all_exist(cluster, load.created)


def test_mails_queued_while_smtp_is_down_are_delivered_once_each_by_three_racing_runners(
    cluster: Cluster,
) -> None:
    # The replicas only write the outbox; three workers deliver. SMTP is down: every attempt
    # fails and is retried with backoff (MAIL_RETRY_SECONDS small here) until it comes back.
    worker_env = {**cluster.env, "MAIL_RETRY_SECONDS": "0.3", "JOBS_POLL_SECONDS": "0.2", "LOG_LEVEL": "INFO"}
    workers = [JobWorker(f"worker{n}", worker_env, cluster.log_dir) for n in range(3)]
    sink = SmtpSink(port=cluster.smtp_port)
    # The cluster's database is the run's template: earlier suites may have left mails there,
    # delivered long ago. Those are not this test's business.
    settled = {r.id for r in asyncio.run(_outbox(cluster.database_url)) if r.status != "pending"}

    def outbox() -> list[OutboxRow]:
        """This test's mails (a reset request is a row too, which a worker turns into its mail)."""
        return [
            r
            for r in asyncio.run(_outbox(cluster.database_url))
            if r.id not in settled and r.kind != "account_request"
        ]

    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_started()
        # Mails caused through nginx (so by every replica): sign-ups and reset requests.
        existing = [cluster.register() for _ in range(8)]
        for n in range(8):
            address = cluster.client_address()
            signup = httpx.post(
                f"{cluster.url}/api/auth/register",
                json={
                    "username": f"mailer{n}-{uuid.uuid4().hex[:6]}",
                    "email": f"m{n}-{uuid.uuid4().hex[:8]}@example.com",
                    "password": PASSWORD,
                },
                headers={"X-Forwarded-For": address},
                timeout=30,
            )
            assert signup.status_code == 201, signup.text
            reset = httpx.post(
                f"{cluster.url}/api/auth/update_password",
                json={"email": existing[n]},
                headers={"X-Forwarded-For": address},
                timeout=30,
            )
            assert reset.status_code == 202, reset.text

        # Every mail has failed at least twice against the closed port and is still pending.
        deadline = time.monotonic() + 60
        while True:
            rows = outbox()
            kinds = Counter(r.kind for r in rows)
            resolved = kinds["confirm_email"] >= 8 and kinds["reset_password"] >= 8
            if resolved and all(r.status == "pending" and r.attempts >= 2 for r in rows):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        assert all("Connect" in (r.last_error or "") for r in rows), {r.last_error for r in rows}
        assert sink.messages == []

        cluster.smtp_reservation.close()
        sink.start()  # SMTP is back
        deadline = time.monotonic() + 60
        while any(r.status != "sent" for r in outbox()):
            assert time.monotonic() < deadline, outbox()
            time.sleep(0.2)
        time.sleep(1.0)  # a copy sent twice would arrive now
        received = Counter(str(m["Message-ID"]) for m in sink.messages)
        assert received == Counter(f"<{r.id}@contacts.local>" for r in rows)  # all, each exactly once
        assert {m["To"] for m in sink.messages} >= set(existing)
        delivered_by = [w.name for w in workers if "delivered after" in w.output()]
        assert len(delivered_by) >= 2, delivered_by  # they did race for the rows
    finally:
        for worker in workers:
            if worker.process is not None:
                worker.stop()
        sink.stop()
    assert all("job runner stopped" in w.output() for w in workers)
