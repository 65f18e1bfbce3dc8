"""Load benchmark of the Contacts API against a bare Litestar route (the ceiling).

    uv run python bench/run.py [--contacts 10000] [--duration 10] [--connections 32]
    uv run python bench/run.py --scale [--scale-sizes 1000,10000,100000]
    uv run python bench/run.py --overhead [--rounds 3] [--duration 10]
    uv run python bench/run.py --dav [--dav-cards 5000]

The full run creates a fresh PostgreSQL database, flushes Redis db 7, starts the service
with uvicorn (one worker, uvloop + the service's bounded httptools protocol, no access log, rate limits off), seeds one
confirmed user with ``--contacts`` contacts by bulk COPY (not through the API), measures
every scenario with wrk, measures the ceiling app on the same server settings, and prints
a markdown table. Every response status is counted: non-2xx answers are reported, never
hidden in the throughput. Routes that are not there yet show as "n/a (404)".

``--scale`` seeds one user per size and prints the median latency (one connection) of
list, search and birthdays per size: the cost must stay flat (or grow logarithmically).

``--outbox`` measures the requests that mail (registration, reset request) and logins,
against the service with its mails switched off (``bench/no_outbox.py``), as API replicas
run it (outbox row written, ``JOBS_IN_PROCESS=false``) and by default (the in-process
runner also delivers, to the log), in interleaved rounds so that the machine's noise shows.

The data is shaped so that every read returns a bounded answer at any size: 20 contacts
match the search term, 20 have a birthday in the next 7 days, the rest are spread over
the remainder of the year (half have no birthday). What grows is the haystack.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
WRK = "/usr/bin/wrk"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_NAME = "contacts_bench"
REDIS_URL = "redis://127.0.0.1:6379/7"
PASSWORD = "bench password 123"
#: Contacts that match the search term / have a birthday in the next 7 days, at any size.
NEEDLES = 20
SEARCH_TERM = "mirabel"
# fmt: off
FIRST_NAMES = ["Anna", "Borys", "Chloe", "Dmytro", "Elena", "Fedir", "Galyna", "Hugo", "Iryna", "Jonas",
               "Kateryna", "Lev", "Maria", "Nazar", "Olga", "Pavlo", "Roman", "Sofia", "Taras", "Yurii"]
LAST_NAMES = ["Bondar", "Coval", "Duda", "Honchar", "Kravets", "Lysenko", "Melnyk", "Oliinyk", "Petrenko",
              "Rudenko", "Savchenko", "Tkachenko", "Shevchenko", "Zhuk"]
# fmt: on

#: Targets from issue 6: minimum ratio to the ceiling.
RATIO_TARGETS = {"users/me": 0.45, "contact": 0.15, "list": 0.10, "search": 0.10, "birthdays": 0.10}
CACHED_READS = ("users/me", "contact")
#: Issue 18: each endpoint against the reference that fits it (bench/references.py), minimum ratio.
REFERENCE_OF = {
    "users/me": "ceiling",
    "health": "one-row",
    "contact": "one-row",
    "list": "one-row",
    "search": "one-row",
    "birthdays": "one-row",
    "create": "one-insert",
    "update": "one-insert",
    "delete": "one-insert",
}
REFERENCE_TARGETS = {
    "users/me": 0.60,
    "health": 0.80,
    "contact": 0.80,
    "list": 0.70,
    "search": 0.70,
    "birthdays": 0.70,
    "create": 0.70,
    "update": 0.70,
    "delete": 0.70,
}
#: Contacts of the user whose book the delete scenario empties: more than a run deletes.
DELETE_VICTIMS = 40_000
#: Of them, how many the delete scenario's warm-up may take (the rest is measured).
DELETE_WARMUP = 4_000
#: Issue 18: a single contact's p99 at most this multiple of one-row's.
CONTACT_P99_VS_ONE_ROW = 1.5
P99_CACHED_MS = 15.0
P99_MIXED_MS = 30.0


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A uvicorn process serving ``app`` on a free port, one worker, benchmark settings."""

    def __init__(self, app: str, env: dict[str, str], ready_path: str, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        RESULTS.mkdir(exist_ok=True)
        self.log_path = RESULTS / f"{name}.log"
        self.rss = (0.0, 0.0)
        command = [
            sys.executable, "-m", "uvicorn", app,
            "--host", "127.0.0.1", "--port", str(self.port),
            # The production protocol (python -m app): httptools with the bounded request head.
            "--loop", "uvloop", "--http", "app.server:BoundedHttpToolsProtocol",
            "--no-proxy-headers", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready(ready_path)

    def _wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"server exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError):
                if http(self.url + path)[0] == 200:
                    return
            time.sleep(0.2)
        self.stop()
        sys.exit(f"server not ready after {timeout:.0f} s; see {self.log_path}")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def http(
    url: str, method: str = "GET", token: str | None = None, body: bytes | None = None, content_type: str = ""
) -> tuple[int, bytes]:
    """One request with the standard library; returns (status, body)."""
    request = urllib.request.Request(url, method=method, data=body)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --------------------------------------------------------------------------- database and seed


async def connect(dsn: str = PG_ADMIN_DSN) -> Any:
    """An asyncpg connection, waiting for a slot when a shared server has none free."""
    import asyncpg

    for _ in range(60):
        try:
            return await asyncpg.connect(dsn)
        except asyncpg.TooManyConnectionsError:
            await asyncio.sleep(1)
    return await asyncpg.connect(dsn)


async def reset_database() -> None:
    conn = await connect()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await conn.close()


async def db_sessions() -> int:
    """Connections ever opened to the benchmark database (pool churn shows here); -1 if unknown."""
    try:
        conn = await connect()
    except Exception:  # statistics only: never fail the run for them
        return -1
    try:
        return await conn.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = $1", DB_NAME)
    finally:
        await conn.close()


async def flush_redis() -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()


def new_id() -> Any:
    try:
        from uuid_utils.compat import uuid7
    except ImportError:  # pragma: no cover - the [uuid] extra is a dependency
        from uuid import uuid4 as uuid7
    return uuid7()


@dataclass
class SeededUser:
    """A user made by :func:`seed_user`, with what the scenarios need."""

    email: str
    token: str
    contacts: int
    ids_file: Path
    first_contact: tuple[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = ""


def _copy_columns(table: Any, row: dict[str, Any]) -> list[str]:
    """The columns to COPY for ``table``: ours, minus generated or defaulted ones.

    A NOT NULL column we know nothing about stops the run with a clear message (the seed
    must follow the model, never guess).
    """
    columns = []
    for column in table.columns:
        if column.name in row:
            columns.append(column.name)
        elif column.computed is None and not column.nullable and column.server_default is None:
            if column.default is not None and column.default.is_scalar:
                row[column.name] = column.default.arg
                columns.append(column.name)
            else:
                sys.exit(
                    f"bench seed: don't know how to fill {table.name}.{column.name}; update bench/run.py"
                )
    return columns


def _month_day(today: date, ahead: int, year: int) -> date:
    day = today + timedelta(days=ahead)
    if (day.month, day.day) == (2, 29):
        day += timedelta(days=1)  # a Feb 29 birthday needs a leap year; keep it simple
    return day.replace(year=year)


def contact_row(i: int, n: int, owner: Any, today: date, now: datetime) -> dict[str, Any]:
    """The ``i``-th of ``n`` contacts: deterministic, with NEEDLES search and birthday hits."""
    step = max(1, n // NEEDLES)
    first = FIRST_NAMES[i % len(FIRST_NAMES)]
    last = LAST_NAMES[(i // len(FIRST_NAMES)) % len(LAST_NAMES)]
    if i % step == step // 2 and i // step < NEEDLES:
        last = "Mirabelle"
    if i % step == 0 and i // step < NEEDLES:
        birthday: date | None = _month_day(today, i // step % 7, 1985)
    elif i % 2:
        birthday = None
    else:
        birthday = _month_day(today, 30 + i % 300, 1960 + i % 40)
    return {
        "id": new_id(),
        "first_name": first,
        "last_name": last,
        "email": f"c{i}@example.com",
        "phone_number": f"+38050{i % 10_000_000:07d}",
        "birthday": birthday,
        "additional_data": None,
        "created_at": now,
        "updated_at": now,
        "_owner": owner,
    }


async def seed_user(
    conn: Any, secret: str, password_hash: str, n: int, name: str, every_id: bool = False
) -> SeededUser:
    """Insert a confirmed user, one live session and ``n`` contacts; return a ready token.

    The user's ids file lists 1000 contacts spread over the book, or every one (``every_id``).
    """
    from app.models import metadata
    from app.security.tokens import Purpose, create_token, token_hash

    now = datetime.now(UTC)
    email = f"{name}@example.com"
    user = {
        "id": new_id(),
        "username": name,
        "email": email,
        "password_hash": password_hash,
        "role": "user",
        "confirmed": True,
        "avatar_url": "https://www.gravatar.com/avatar/bench",
        "password_version": 0,
        "created_at": now,
        "updated_at": now,
    }
    await _copy(conn, metadata.tables["users"], [user])
    session = {
        "id": new_id(),
        "user_id": user["id"],
        "refresh_token_hash": token_hash(secrets.token_urlsafe(32)),
        "expires_at": now + timedelta(days=7),
        "revoked_at": None,
        "created_at": now,
        "updated_at": now,
    }
    await _copy(conn, metadata.tables["user_sessions"], [session])
    token, _ = create_token(
        secret, Purpose.ACCESS, str(user["id"]), timedelta(hours=4), sid=str(session["id"])
    )

    ids_file = RESULTS / f"ids-{name}.txt"
    table = metadata.tables.get("contacts")
    if table is None or n == 0:
        ids_file.write_text("")
        return SeededUser(email=email, token=token, contacts=0, ids_file=ids_file, id=str(user["id"]))
    owner = next(
        c.name for c in table.columns if any(fk.column.table.name == "users" for fk in c.foreign_keys)
    )
    today = datetime.now(UTC).date()
    try:  # the columns the contacts store derives on every write (search keys, birthday key)
        from app.contacts.models import derived_columns
    except ImportError:
        derived_columns = dict
    rows = [derived_columns(contact_row(i, n, user["id"], today, now)) for i in range(n)]
    try:  # each contact is also a vCard (issue 15): its card, UID and resource name
        from app.contacts.cards import new_card, uid_of
    except ImportError:
        new_card = None
    for row in rows:
        row[owner] = row.pop("_owner")
        if new_card is not None and "card" in table.columns:
            row["uid"] = uid_of(row["id"])
            row["dav_name"] = f"{row['id']}.vcf"
            row["card"] = new_card(row["uid"], row, now)
    await _copy(conn, table, rows)
    # Single reads and updates rotate over 1000 contacts spread over the whole table; the delete
    # scenario takes every contact of its own user once.
    stride = 1 if every_id else max(1, n // 1000)
    ids_file.write_text("".join(f"{rows[i]['id']} {i}\n" for i in range(0, n, stride)))
    return SeededUser(
        email=email,
        token=token,
        contacts=n,
        ids_file=ids_file,
        first_contact=(str(rows[0]["id"]), 0),
        id=str(user["id"]),
    )


async def _copy(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    columns = _copy_columns(table, rows[0])
    for row in rows[1:]:
        for name in columns:
            row.setdefault(name, rows[0][name])
    await conn.copy_records_to_table(
        table.name, records=[tuple(r[c] for c in columns) for r in rows], columns=columns
    )


async def seed(secret: str, sizes: list[int], every_id: int | None = None) -> list[SeededUser]:
    """One user per size (``every_id``: the index of the one whose ids file lists every contact)."""
    from app.security.passwords import hash_password_sync

    password_hash = hash_password_sync(PASSWORD, 12)  # once, at the service's default cost
    conn = await connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{DB_NAME}")
    try:
        users = [
            await seed_user(conn, secret, password_hash, n, f"bench{n}", every_id=i == every_id)
            for i, n in enumerate(sizes)
        ]
        # As autovacuum would have by now: planner statistics and the visibility map.
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return users


# --------------------------------------------------------------------------- wrk


@dataclass
class Result:
    """One wrk measurement."""

    name: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    non_2xx: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    note: str = ""
    #: Server CPU time per request (µs): unlike req/s, barely moved by other load on the machine.
    cpu_us: float = 0.0
    #: Issue 18: the reference that fits this scenario, measured just before and just after it
    #: (their mean), so that both see the machine of the moment.
    reference: Result | None = None


def mean_of(a: Result, b: Result) -> Result:
    """Two runs of one reference as one: mean req/s, latency and CPU."""
    return Result(
        name=a.name,
        rps=(a.rps + b.rps) / 2,
        p50_ms=(a.p50_ms + b.p50_ms) / 2,
        p99_ms=(a.p99_ms + b.p99_ms) / 2,
        requests=a.requests + b.requests,
        non_2xx=a.non_2xx + b.non_2xx,
        cpu_us=(a.cpu_us + b.cpu_us) / 2,
    )


def wrk(
    name: str,
    url: str,
    args: list[str],
    *,
    duration: float,
    connections: int,
    timeout: str = "5s",
    server: Server | None = None,
) -> Result:
    """Run wrk with bench/wrk.lua; ``args`` are the script's arguments (mode, path, token, extra)."""
    command = [
        WRK, "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", timeout,
        "-s", str(BENCH / "wrk.lua"), url, "--", *args,
    ]  # fmt: skip
    cpu_before = server.cpu_seconds() if server else 0.0
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cpu = server.cpu_seconds() - cpu_before if server else 0.0
    line = next((raw for raw in out.splitlines() if raw.startswith("BENCH ")), None)
    if line is None:
        sys.exit(f"wrk gave no BENCH line for {name}:\n{out}")
    data = json.loads(line.removeprefix("BENCH "))
    statuses = data["statuses"]
    non_2xx = sum(n for code, n in statuses.items() if not code.startswith("2")) + data["socket_errors"]
    return Result(
        name=name,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        non_2xx=non_2xx,
        statuses=statuses,
        cpu_us=cpu / max(data["requests"], 1) * 1e6,
    )


@dataclass
class Scenario:
    """A named wrk scenario and the one request that tells whether its route exists."""

    name: str
    args: list[str]
    probe: tuple[str, str, bytes | None, str]  # method, path, body, content type
    timeout: str = "5s"
    #: The warm-up's arguments when they must differ (deletes take other contacts).
    warmup: list[str] | None = None


def scenarios(user: SeededUser, nonce: str, victims: SeededUser | None = None) -> list[Scenario]:
    token = user.token
    first_id = user.first_contact[0] if user.first_contact else "00000000-0000-0000-0000-000000000000"
    body = json.dumps(
        {
            "first_name": "Probe",
            "last_name": "Contact",
            "email": f"probe-{nonce}@example.com",
            "phone_number": "+380501234567",
            "birthday": "1990-05-17",
            "additional_data": "probe",
        }
    ).encode()
    put_body = body.replace(f"probe-{nonce}@".encode(), b"c0@")
    form = f"username={user.email.replace('@', '%40')}&password={PASSWORD.replace(' ', '+')}"
    ids = str(user.ids_file)
    json_type = "application/json"
    return [
        Scenario("health", ["get", "/api/healthchecker", "-", "-"], ("GET", "/api/healthchecker", None, "")),
        Scenario("users/me", ["get", "/api/users/me", token, "-"], ("GET", "/api/users/me", None, "")),
        Scenario(
            "contact",
            ["get", "/api/contacts/{id}", token, ids],
            ("GET", f"/api/contacts/{first_id}", None, ""),
        ),
        Scenario(
            "list",
            ["get", "/api/contacts/?limit=20", token, "-"],
            ("GET", "/api/contacts/?limit=20", None, ""),
        ),
        Scenario(
            "search",
            ["get", f"/api/contacts/?q={SEARCH_TERM}&limit=20", token, "-"],
            ("GET", f"/api/contacts/?q={SEARCH_TERM}&limit=20", None, ""),
        ),
        Scenario(
            "birthdays",
            ["get", "/api/contacts/birthdays?days=7", token, "-"],
            ("GET", "/api/contacts/birthdays?days=7", None, ""),
        ),
        Scenario(
            "create", ["create", "/api/contacts/", token, nonce], ("POST", "/api/contacts/", body, json_type)
        ),
        Scenario(
            "update",
            ["update", "/api/contacts/", token, ids],
            ("PUT", f"/api/contacts/{first_id}", put_body, json_type),
        ),
        *([delete_scenario(victims)] if victims is not None else []),
        Scenario(
            "login",
            ["login", "/api/auth/login", "-", form],
            ("POST", "/api/auth/login", form.encode(), "application/x-www-form-urlencoded"),
            timeout="30s",
        ),
    ]


def delete_scenario(victims: SeededUser) -> Scenario:
    """``DELETE /api/contacts/{id}``, each request another of ``victims``' contacts."""
    ids = victims.ids_file.read_text().splitlines()
    warm, measured = RESULTS / "ids-delete-warmup.txt", RESULTS / "ids-delete.txt"
    warm.write_text("".join(f"{line}\n" for line in ids[1 : DELETE_WARMUP + 1]))
    measured.write_text("".join(f"{line}\n" for line in ids[DELETE_WARMUP + 1 :]))
    probe_id = ids[0].split()[0]
    return Scenario(
        "delete",
        ["delete", "/api/contacts/", victims.token, str(measured)],
        ("DELETE", f"/api/contacts/{probe_id}", None, ""),
        warmup=["delete", "/api/contacts/", victims.token, str(warm)],
    )


def probe(url: str, scenario: Scenario, token: str) -> int:
    method, path, body, content_type = scenario.probe
    try:
        status, answer = http(
            url + path, method, token if scenario.args[2] != "-" else None, body, content_type
        )
    except OSError as exc:  # a timeout: the service is still busy with the previous scenario
        print(f"  ! {scenario.name}: probe failed: {exc}", file=sys.stderr)
        return 0
    if status not in (404, 405) and not 200 <= status < 300:
        print(f"  ! {scenario.name}: probe answered {status}: {answer[:300]!r}", file=sys.stderr)
    return status


# --------------------------------------------------------------------------- report


def table(results: list[Result], ceiling: Result, references: dict[str, Result] | None = None) -> str:
    """The markdown table: each row against the ceiling and, when measured, its issue-18 reference."""
    references = {"ceiling": ceiling, **(references or {})}
    lines = [
        "| scenario | req/s | p50 ms | p99 ms | non-2xx | vs ceiling | CPU µs/req | CPU vs ceiling "
        "| reference | vs reference | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in [*references.values(), *results]:
        if r.note:
            lines.append(f"| {r.name} | {r.note} | | | | | | | | | |")
            continue
        ratio = r.rps / ceiling.rps if ceiling.rps else 0.0
        rps = f"{r.rps:,.0f}" if r.rps >= 100 else f"{r.rps:.1f}"  # logins: a few per second
        cpu = f"{r.cpu_us:,.0f} | {ceiling.cpu_us / r.cpu_us:.1%}" if r.cpu_us and r.requests else "- | -"
        reference = r.reference or references.get(REFERENCE_OF.get(r.name, ""))
        if reference is not None and reference.rps and r.name in REFERENCE_OF:
            versus = r.rps / reference.rps
            against = f"{reference.name} ({reference.rps:,.0f}) | {versus:.1%}"
        else:
            versus, against = None, " | "
        lines.append(
            f"| {r.name} | {rps} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {_non_2xx(r)} | "
            f"{ratio:.1%} | {cpu} | {against} | {_verdict(r, ratio, versus, reference)} |"
        )
    return "\n".join(lines)


def _non_2xx(r: Result) -> str:
    if not r.non_2xx:
        return "0"
    bad = ", ".join(f"{code} x{n}" for code, n in sorted(r.statuses.items()) if not code.startswith("2"))
    return f"**{r.non_2xx}** ({bad or 'socket errors'})"


def _verdict(r: Result, ratio: float, versus: float | None = None, reference: Result | None = None) -> str:
    checks = []
    base = r.name.split(" ")[0]
    if versus is not None and reference is not None and r.name in REFERENCE_TARGETS:
        target = REFERENCE_TARGETS[r.name]
        checks.append((f"≥ {target:.0%} of {reference.name}", versus >= target))
        if r.name == "contact":
            bound = CONTACT_P99_VS_ONE_ROW * reference.p99_ms
            checks.append((f"p99 ≤ {CONTACT_P99_VS_ONE_ROW} x {reference.name}'s", r.p99_ms <= bound))
    elif base in RATIO_TARGETS and r.name == base:
        checks.append((f"≥ {RATIO_TARGETS[base]:.0%}", ratio >= RATIO_TARGETS[base]))
    if r.name in CACHED_READS:
        checks.append((f"p99 ≤ {P99_CACHED_MS:.0f} ms", r.p99_ms <= P99_CACHED_MS))
    if "during logins" in r.name:
        checks.append((f"p99 ≤ {P99_MIXED_MS:.0f} ms", r.p99_ms <= P99_MIXED_MS))
    if r.name not in ("ceiling", "one-row", "one-insert"):
        checks.append(("2xx", r.non_2xx == 0))
        if r.requests == 0:  # nothing finished within the run (wrk counts only complete answers)
            checks.append(("an answer within the run", False))
    return ", ".join(f"{label} {'ok' if good else 'MISSED'}" for label, good in checks)


# --------------------------------------------------------------------------- modes


#: Set by --observability: metrics on and a JSON access line per request (issue 17's budget:
#: the hot reads keep at least 90 % of their req/s compared with a run without the flag).
OBSERVABILITY_ENV = {
    "METRICS_ENABLED": "true",
    "METRICS_TOKEN": "bench-metrics-token-0123456789",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "json",
}
OBSERVABILITY = False


def service_env(secret: str) -> dict[str, str]:
    env = {
        "APP_ENV": "production",
        "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DB_NAME}",
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": secret,
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "AUTO_MIGRATE": "true",
        "PUBLIC_BASE_URL": "http://127.0.0.1",
    }
    return {**env, **OBSERVABILITY_ENV} if OBSERVABILITY else env


def start_service(
    secret: str, sizes: list[int], every_id: int | None = None
) -> tuple[Server, list[SeededUser]]:
    asyncio.run(reset_database())
    asyncio.run(flush_redis())
    print(f"starting the service on a fresh database {DB_NAME!r} and Redis {REDIS_URL} ...", file=sys.stderr)
    server = Server("app.main:app", service_env(secret), "/api/healthchecker", "service")
    started = time.monotonic()
    try:
        users = asyncio.run(seed(secret, sizes, every_id))
    except BaseException:
        server.stop()
        raise
    print(f"seeded {sizes} contacts in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return server, users


def run_full(args: argparse.Namespace) -> None:
    secret = secrets.token_urlsafe(48)
    nonce = secrets.token_hex(4)
    ceiling_server = Server("bench.ceiling:app", {}, "/", "ceiling")
    server: Server | None = None
    reference_server: Server | None = None
    try:
        # The ceiling is measured before and after the scenarios and the higher figure is
        # used: on a shared machine that keeps the ratios conservative.
        ceiling_before = measure_ceiling(ceiling_server, args)
        server, (user, writer, victims) = start_service(
            secret, [args.contacts, 0, DELETE_VICTIMS], every_id=2
        )
        reference_server = start_references(user, writer)
        paired = Paired(ceiling_server, reference_server, user, nonce, args)
        references = {name: paired.measure(name, warm_up=True) for name in ("one-row", "one-insert")}
        sessions_before = asyncio.run(db_sessions())
        results = run_scenarios(server, user, nonce, args, victims, paired)
        rss = server.rss
        print(
            f"database sessions opened during the run: {asyncio.run(db_sessions()) - sessions_before}",
            file=sys.stderr,
        )
        server.stop()
        ceiling_after = measure_ceiling(ceiling_server, args)
    finally:
        ceiling_server.stop()
        if reference_server is not None:
            reference_server.stop()
        if server is not None:
            server.stop()
    ceiling = max(ceiling_before, ceiling_after, key=lambda r: r.rps)

    print()
    print(
        f"{args.contacts:,} contacts, wrk -t1 -c{args.connections} -d{args.duration}s, "
        f"{os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; ceiling "
        f"{ceiling_before.rps:,.0f} req/s before, {ceiling_after.rps:,.0f} after (higher one used)"
    )
    print()
    print(table(results, ceiling, references))
    print()
    print(f"server RSS: {rss[0]:.0f} MB after start-up and seeding, {rss[1]:.0f} MB after the run")
    if args.profile:
        print()
        print("py-spy, sampling the service during each scenario (these figures ran under it):")
        print(profile_tops([r.name for r in results]))


def measure_ceiling(server: Server, args: argparse.Namespace) -> Result:
    wrk_args = ["get", "/", "-", "-"]
    wrk("ceiling", server.url, wrk_args, duration=1, connections=args.connections)  # warm-up
    return wrk(
        "ceiling", server.url, wrk_args, duration=args.duration, connections=args.connections, server=server
    )


def start_references(user: SeededUser, writer: SeededUser) -> Server:
    """Issue 18's references (bench/references.py) on the seeded database, served like the app."""
    env = {
        # The app's form: the server's protocol class reads the app's settings too.
        "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DB_NAME}",
        "OWNER_ID": user.id,
        "WRITE_OWNER_ID": writer.id,
        "DB_POOL_SIZE": os.environ.get("DB_POOL_SIZE", "20"),
    }
    return Server("bench.references:app", env, "/", "references")


class Paired:
    """Measures a scenario's reference (ceiling, one-row or one-insert) next to the scenario."""

    def __init__(
        self, ceiling: Server, references: Server, user: SeededUser, nonce: str, args: argparse.Namespace
    ) -> None:
        self.servers = {"ceiling": ceiling, "one-row": references, "one-insert": references}
        self.wrk_args = {
            "ceiling": ["get", "/", "-", "-"],
            "one-row": ["get", "/one-row/{id}", "-", str(user.ids_file)],
            "one-insert": ["create", "/one-insert", "-", f"ref-{nonce}"],
        }
        self.args = args

    def measure(self, name: str, warm_up: bool = False) -> Result:
        """One run of reference ``name`` (after a 1 s warm-up when ``warm_up``)."""
        server, wrk_args = self.servers[name], self.wrk_args[name]
        connections = self.args.connections
        if warm_up:
            wrk(name, server.url, wrk_args, duration=1, connections=connections)
        return wrk(
            name, server.url, wrk_args, duration=self.args.duration, connections=connections, server=server
        )


def run_scenarios(
    server: Server,
    user: SeededUser,
    nonce: str,
    args: argparse.Namespace,
    victims: SeededUser | None = None,
    paired: Paired | None = None,
) -> list[Result]:
    results: list[Result] = []
    rss_before = server.rss_mb()
    wanted = set(args.only.split(",")) if args.only else None
    for scenario in scenarios(user, nonce, victims):
        if wanted and scenario.name not in wanted:
            continue
        status = probe(server.url, scenario, scenario.args[2])
        if status in (0, 404, 405):
            results.append(Result(scenario.name, note=f"n/a ({status or 'probe timed out'})"))
            continue
        print(f"  {scenario.name} ...", file=sys.stderr)
        common = {"connections": args.connections, "timeout": scenario.timeout}
        wrk(scenario.name, server.url, scenario.warmup or scenario.args, duration=1, **common)  # warm-up
        settle(server)  # logins the warm-up left queued (bcrypt) would be counted against the run
        reference = REFERENCE_OF.get(scenario.name) if paired is not None else None
        before = paired.measure(reference) if paired is not None and reference else None
        spy = start_profile(server, scenario.name, args.duration) if args.profile else None
        result = wrk(
            scenario.name, server.url, scenario.args, duration=args.duration, server=server, **common
        )
        if spy is not None:
            spy.wait()
        drain(server)
        if paired is not None and before is not None:
            result.reference = mean_of(before, paired.measure(before.name))
        results.append(result)
    if not wanted or "mixed" in wanted:
        results += run_mixed(server.url, user, scenarios(user, nonce), args)
    server.rss = (rss_before, server.rss_mb())
    return results


def start_profile(server: Server, name: str, duration: float) -> subprocess.Popen[bytes]:
    """py-spy sampling the service for the scenario's run, into ``results/profile-NAME.txt``."""
    out = RESULTS / f"profile-{name.replace('/', '_')}.txt"
    command = [
        "py-spy", "record", "--pid", str(server.process.pid), "--rate", "250", "--duration", str(int(duration)),
        "--format", "raw", "--nonblocking", "--output", str(out),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_tops(names: list[str], top: int = 8) -> str:
    """Each profiled scenario's functions by own time (share of samples), and the app's by total."""
    lines = []
    for name in names:
        path = RESULTS / f"profile-{name.replace('/', '_')}.txt"
        if not path.exists():
            continue
        own: collections.Counter[str] = collections.Counter()
        total: collections.Counter[str] = collections.Counter()
        samples = 0
        for row in path.read_text().splitlines():
            stack, _, count = row.rpartition(" ")
            samples += int(count)
            frames = [_frame(f) for f in stack.split(";") if f]
            if frames:
                own[frames[-1]] += int(count)
            for frame in set(frames):
                if frame.startswith("app/"):
                    total[frame] += int(count)
        if not samples:
            continue
        lines += [
            f"- **{name}** ({samples} samples) own: {_shares(own, samples, top)}",
            f"  - app, total: {_shares(total, samples, top)}",
        ]
    return "\n".join(lines)


def _shares(counter: collections.Counter[str], samples: int, top: int) -> str:
    return "; ".join(f"`{key}` {n / samples:.0%}" for key, n in counter.most_common(top))


def _frame(raw: str) -> str:
    """``function (path:line)`` as ``path:function``, the path from the project or site-packages."""
    function, _, where = raw.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{function}"


def drain(server: Server, timeout: float = 120.0) -> None:
    """Wait until the service answers promptly again (queued logins can outlive wrk)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            started = time.monotonic()
            if http(server.url + "/api/healthchecker")[0] == 200 and time.monotonic() - started < 0.5:
                return
        time.sleep(0.5)


def run_mixed(
    url: str, user: SeededUser, all_scenarios: list[Scenario], args: argparse.Namespace
) -> list[Result]:
    """``/users/me`` at full load while another wrk keeps logins (bcrypt) saturated."""
    by_name = {s.name: s for s in all_scenarios}
    me, login = by_name["users/me"], by_name["login"]
    if probe(url, me, user.token) in (0, 404, 405) or probe(url, login, "") in (0, 404, 405):
        return [Result("users/me during logins", note="n/a (404)")]
    print("  users/me during logins ...", file=sys.stderr)
    command = [
        WRK, "-t1", f"-c{args.login_connections}", f"-d{args.duration + 2}s", "--latency", "--timeout", "30s",
        "-s", str(BENCH / "wrk.lua"), url, "--", *login.args,
    ]  # fmt: skip
    logins = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    me_result = wrk(
        "users/me during logins", url, me.args, duration=args.duration, connections=args.connections
    )
    out, _ = logins.communicate()
    data = json.loads(
        next(line for line in out.splitlines() if line.startswith("BENCH ")).removeprefix("BENCH ")
    )
    login_result = Result(
        f"login during users/me (c{args.login_connections})",
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        requests=data["requests"],
        non_2xx=sum(n for code, n in data["statuses"].items() if not code.startswith("2"))
        + data["socket_errors"],
        statuses=data["statuses"],
    )
    return [me_result, login_result]


#: ``--outbox``: (name, ASGI app, extra environment) of each variant, measured in this order.
OUTBOX_VARIANTS = (
    ("no mail", "bench.no_outbox:app", {"JOBS_IN_PROCESS": "false"}),
    ("outbox row", "app.main:app", {"JOBS_IN_PROCESS": "false"}),
    ("outbox + runner", "app.main:app", {"JOBS_IN_PROCESS": "true"}),
)


async def outbox_counts(clear: bool = False) -> dict[str, int]:
    """Outbox rows by status (then deleted when ``clear``): what a variant wrote and sent."""
    conn = await connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{DB_NAME}")
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM outbox GROUP BY status")
        if clear:
            await conn.execute("DELETE FROM outbox")
        return {row["status"]: row["n"] for row in rows}
    finally:
        await conn.close()


def outbox_scenarios(user: SeededUser, nonce: str) -> list[tuple[Scenario, int]]:
    """Registration and reset request (they mail), and login (bcrypt, no mail) as the control.

    With their connections: the reset request answers before its lookup and outbox write run
    (so that its timing tells nothing about which accounts exist); a flood of them would
    pile up that work faster than it drains, so it runs at two connections.
    """
    login = next(s for s in scenarios(user, nonce) if s.name == "login")
    reset = json.dumps({"email": user.email})
    no_probe = ("GET", "/api/healthchecker", None, "")
    return [
        (Scenario("register", ["register", "/api/auth/register", "-", nonce], no_probe, timeout="30s"), 8),
        (Scenario("reset request", ["json", "/api/auth/update_password", "-", reset], no_probe), 2),
        (login, 8),
    ]


def settle(server: Server, timeout: float = 180.0) -> float:
    """Wait until the server is idle (work after the answers done); return when it last worked."""
    deadline = time.monotonic() + timeout
    last_busy, quiet = time.monotonic(), 0
    cpu = server.cpu_seconds()
    while quiet < 4 and time.monotonic() < deadline:
        time.sleep(0.25)
        now = server.cpu_seconds()
        if now - cpu > 0.02:  # more than 8 % of a core: still working
            last_busy, quiet = time.monotonic(), 0
        else:
            quiet += 1
        cpu = now
    return last_busy


@dataclass
class Cell:
    """One scenario on one variant, every round: the measurements and what they left behind."""

    results: list[Result] = field(default_factory=list)
    #: Outbox rows the measured requests wrote (after every delivery and lookup was done).
    rows: int = 0
    #: "account mail: lookup failed" lines the measured requests caused.
    failures: int = 0


#: What the server finished, counted in the database (wrk misses the requests still in flight
#: when it stops, and at a few per second those matter); others count wrk's answers.
SERVED_SQL = {
    "register": "SELECT count(*) FROM users",
    "login": "SELECT count(*) FROM user_sessions",
}


async def count_served(scenario: str) -> int | None:
    """Requests of ``scenario`` the server finished so far (``None``: use wrk's count)."""
    sql = SERVED_SQL.get(scenario)
    if sql is None:
        return None
    conn = await connect(PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{DB_NAME}")
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def measure_settled(
    name: str, server: Server, scenario: Scenario, connections: int, duration: float
) -> tuple[Result, int]:
    """wrk, then wait for the work the requests left behind; rates count that time too.

    Returns:
        The result, with req/s and CPU per request over wrk's run plus the settling, and the
        outbox rows written meanwhile.
    """
    rows_before = sum(asyncio.run(outbox_counts()).values())
    served_before = asyncio.run(count_served(name))
    started, cpu_before = time.monotonic(), server.cpu_seconds()
    result = wrk(
        name, server.url, scenario.args, duration=duration, connections=connections, timeout=scenario.timeout
    )
    finished = settle(server)
    served_after = asyncio.run(count_served(name))
    if served_before is not None and served_after is not None:
        result.requests = served_after - served_before
    result.rps = result.requests / (finished - started)
    result.cpu_us = (server.cpu_seconds() - cpu_before) / max(result.requests, 1) * 1e6
    return result, sum(asyncio.run(outbox_counts()).values()) - rows_before


def run_outbox(args: argparse.Namespace) -> None:
    """``--outbox``: every variant, restarted for each of ``--rounds`` interleaved rounds."""
    secret = secrets.token_urlsafe(48)
    nonce = secrets.token_hex(4)
    server, (user,) = start_service(secret, [100])  # migrates and seeds; each variant restarts
    server.stop()
    cells: dict[tuple[str, str], Cell] = {}
    for round_no in range(args.rounds):
        for name, app_ref, env in OUTBOX_VARIANTS:
            asyncio.run(outbox_counts(clear=True))
            print(f"  round {round_no + 1}: {name} ...", file=sys.stderr)
            server = Server(app_ref, {**service_env(secret), **env}, "/api/healthchecker", "service")
            try:
                for scenario, connections in outbox_scenarios(user, nonce):
                    common = {"connections": connections, "timeout": scenario.timeout}
                    wrk(scenario.name, server.url, scenario.args, duration=1, **common)  # warm-up
                    settle(server)
                    failed_before = server.log_path.read_text().count("lookup failed")
                    result, rows = measure_settled(
                        scenario.name, server, scenario, connections, args.duration
                    )
                    cell = cells.setdefault((scenario.name, name), Cell())
                    cell.results.append(result)
                    cell.rows += rows
                    cell.failures += server.log_path.read_text().count("lookup failed") - failed_before
            finally:
                server.stop()
    print()
    print(
        f"wrk -t1 -d{args.duration}s per cell (register and login -c8, reset request -c2), rates over "
        f"wrk's run plus the time until the server was idle again (registrations and logins counted "
        f"in the database); {args.rounds} interleaved round(s), "
        f"{os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; BCRYPT_ROUNDS=12"
    )
    print()
    print(outbox_table(cells))


def outbox_table(cells: dict[tuple[str, str], Cell]) -> str:
    """req/s and server CPU per request of each scenario and variant, every round shown."""
    lines = [
        "| scenario | variant | req/s (each round) | median | vs no mail "
        "| CPU ms/req (each round) | median | vs no mail | non-2xx | rows written / served | lookups failed |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for scenario in dict.fromkeys(s for s, _ in cells):
        base = cells[(scenario, OUTBOX_VARIANTS[0][0])].results
        base_rps = statistics.median(r.rps for r in base) or float("nan")
        base_cpu = statistics.median(r.cpu_us for r in base) / 1000 or float("nan")
        for variant, _app, _env in OUTBOX_VARIANTS:
            cell = cells[(scenario, variant)]
            results = cell.results
            rps = statistics.median(r.rps for r in results)
            cpu = statistics.median(r.cpu_us for r in results) / 1000
            answered = sum(r.requests for r in results)
            lines.append(
                f"| {scenario} | {variant} | {' / '.join(f'{r.rps:.1f}' for r in results)} | {rps:.1f} | "
                f"{rps / base_rps - 1:+.1%} | {' / '.join(f'{r.cpu_us / 1000:.2f}' for r in results)} | "
                f"{cpu:.2f} | {cpu / base_cpu - 1:+.1%} | {_non_2xx_all(results)} | {cell.rows} / {answered} | "
                f"{cell.failures} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- overhead


#: What --overhead compares, in the same run: the service as the other scenarios run it
#: (metrics off, warnings only), then with metrics on and a JSON access line per request, then
#: also with traces to an OTLP/HTTP receiver in this process: every request, and one in ten.
OVERHEAD_VARIANTS = ("off", "metrics+logs", "+traces 100%", "+traces 10%")
#: The sampler share of each tracing variant.
TRACE_SHARES = {"+traces 100%": "1.0", "+traces 10%": "0.1"}
OVERHEAD_SCENARIOS = ("users/me", "contact")
#: Issue 17: the hot reads keep at least 90 % of their req/s with metrics and JSON logs on.
OVERHEAD_BUDGET = 0.10


class OtlpSink:
    """A stand-in collector: accepts OTLP/HTTP exports on a free port and counts them."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self
        self.exports = 0
        self.bytes = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.exports += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


def _tracing_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("opentelemetry.sdk") is not None


def run_overhead(args: argparse.Namespace) -> None:
    """The hot reads with each variant, pairs back to back, the order rotating each round."""
    secret = secrets.token_urlsafe(48)
    nonce = secrets.token_hex(4)
    chosen = args.variants.split(",") if args.variants else OVERHEAD_VARIANTS
    variants = [v for v in chosen if v not in TRACE_SHARES or _tracing_installed()]
    if len(variants) < len(chosen):
        print("  ! tracing not measured: the `otel` extra is not installed", file=sys.stderr)
    sink = OtlpSink()
    servers: dict[str, Server] = {}
    # Same pools for every variant, and small: three services share the PostgreSQL server.
    base = {**service_env(secret), "DB_POOL_SIZE": str(args.overhead_pool)}
    envs = {
        "off": base,
        "metrics+logs": {**base, **OBSERVABILITY_ENV},
        # Each half alone, to tell their costs apart (--variants off,metrics,logs,metrics+logs).
        "metrics": {**base, **OBSERVABILITY_ENV, "LOG_LEVEL": "WARNING"},
        "logs": {**base, "LOG_LEVEL": "INFO", "LOG_FORMAT": "json"},
    }
    for name, share in TRACE_SHARES.items():
        envs[name] = {
            **base,
            **OBSERVABILITY_ENV,
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
            "OTEL_TRACES_SAMPLER_ARG": share,
        }
    try:
        asyncio.run(reset_database())
        asyncio.run(flush_redis())
        print(f"starting {len(variants)} services on a fresh database {DB_NAME!r} ...", file=sys.stderr)
        servers["off"] = Server("app.main:app", envs["off"], "/api/healthchecker", "overhead-off")
        (user,) = asyncio.run(seed(secret, [args.contacts]))
        for name in variants[1:]:
            servers[name] = Server(
                "app.main:app",
                envs[name],
                "/api/healthchecker",
                "overhead-" + name.strip("+%").replace(" ", "-"),
            )
        hot = [s for s in scenarios(user, nonce) if s.name in OVERHEAD_SCENARIOS]
        for server in servers.values():
            for scenario in hot:
                if probe(server.url, scenario, user.token) != 200:
                    sys.exit(f"{scenario.name} does not answer 200 on {server.log_path.name}")
        runs: dict[tuple[str, str], list[Result]] = {}
        for round_ in range(args.rounds):
            order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
            for scenario in hot:
                for name in order:
                    print(f"  round {round_ + 1}: {scenario.name} / {name} ...", file=sys.stderr)
                    server = servers[name]
                    common = {"connections": args.connections, "timeout": scenario.timeout}
                    wrk(scenario.name, server.url, scenario.args, duration=1, **common)  # warm-up
                    result = wrk(
                        scenario.name,
                        server.url,
                        scenario.args,
                        duration=args.duration,
                        server=server,
                        **common,
                    )
                    runs.setdefault((scenario.name, name), []).append(result)
    finally:
        for server in servers.values():
            server.stop()
        sink.stop()

    print()
    print(
        f"{args.contacts:,} contacts, wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds "
        f"(variants interleaved, order rotating), {os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"traces: {sink.exports} OTLP exports, {sink.bytes / 1e6:.1f} MB"
    )
    print()
    print(overhead_table(runs, [s.name for s in hot], variants))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def overhead_table(runs: dict[tuple[str, str], list[Result]], names: list[str], variants: list[str]) -> str:
    """Median req/s and CPU per request of each variant, and the loss against ``off``.

    The loss is the median over rounds of each round's own ratio (the runs of one round are
    back to back, so they share the machine's load of the moment).
    """
    lines = [
        "| scenario | variant | req/s (median) | req/s each round | p99 ms | non-2xx | CPU µs/req | "
        "req/s loss | CPU cost | target |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in names:
        off = runs[(name, "off")]
        for variant in variants:
            results = runs[(name, variant)]
            rps = _median([r.rps for r in results])
            cpu = _median([r.cpu_us for r in results])
            each = ", ".join(f"{r.rps:,.0f}" for r in results)
            non_2xx = sum(r.non_2xx for r in results)
            if variant == "off":
                loss = cost = target = "-"
            else:
                loss_value = _median([1 - r.rps / o.rps for r, o in zip(results, off, strict=True) if o.rps])
                cost_value = _median(
                    [r.cpu_us / o.cpu_us - 1 for r, o in zip(results, off, strict=True) if o.cpu_us]
                )
                loss, cost = f"{loss_value:.1%}", f"{cost_value:+.1%}"
                target = (
                    f"≤ {OVERHEAD_BUDGET:.0%} {'ok' if loss_value <= OVERHEAD_BUDGET else 'MISSED'}"
                    if variant == "metrics+logs"
                    else "(no target)"
                )
            lines.append(
                f"| {name} | {variant} | {rps:,.0f} | {each} | {_median([r.p99_ms for r in results]):.2f} | "
                f"{non_2xx} | {cpu:,.0f} | {loss} | {cost} | {target} |"
            )
    return "\n".join(lines)


def _non_2xx_all(results: list[Result]) -> str:
    """The non-2xx answers of all rounds, by status."""
    merged: dict[str, int] = {}
    for r in results:
        for code, n in r.statuses.items():
            if not code.startswith("2"):
                merged[code] = merged.get(code, 0) + n
    total = sum(r.non_2xx for r in results)
    return (
        "0"
        if not total
        else f"**{total}** ({', '.join(f'{c} x{n}' for c, n in sorted(merged.items())) or 'socket errors'})"
    )


def run_scale(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.scale_sizes.split(",")]
    secret = secrets.token_urlsafe(48)
    server, users = start_service(secret, sizes)
    paths = {
        "list": "/api/contacts/?limit=20",
        "search": f"/api/contacts/?q={SEARCH_TERM}&limit=20",
        "birthdays": "/api/contacts/birthdays?days=7",
    }
    medians: dict[str, list[str]] = {name: [] for name in paths}
    try:
        for name, path in paths.items():
            for user in users:
                status, _body = http(server.url + path, token=user.token)
                if status != 200:
                    medians[name].append(f"n/a ({status})")
                    continue
                wrk(name, server.url, ["get", path, user.token, "-"], duration=1, connections=1)  # warm-up
                r = wrk(
                    name,
                    server.url,
                    ["get", path, user.token, "-"],
                    duration=args.scale_duration,
                    connections=1,
                )
                cell = f"{r.p50_ms:.2f}"
                medians[name].append(cell if r.non_2xx == 0 else f"{cell} (**{r.non_2xx} non-2xx**)")
    finally:
        server.stop()
    print()
    print(
        f"median latency (ms), wrk -t1 -c1 -d{args.scale_duration}s, {NEEDLES} hits per search and birthdays"
    )
    print()
    print("| endpoint | " + " | ".join(f"{n:,} contacts" for n in sizes) + " | last / first |")
    print("|---|" + "---:|" * (len(sizes) + 1))
    for name, cells in medians.items():
        try:
            growth = f"{float(cells[-1].split()[0]) / float(cells[0].split()[0]):.2f}x"
        except ValueError:
            growth = "-"
        print(f"| {name} | " + " | ".join(cells) + f" | {growth} |")


# --------------------------------------------------------------------------- CardDAV

DAV_SYNC = (
    '<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:"><D:sync-token>{token}</D:sync-token>'
    "<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>"
)
DAV_PROPFIND = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'


def dav_request(
    url: str, method: str, auth: str, body: str | None = None, depth: str = "0"
) -> tuple[int, bytes]:
    """One WebDAV request with Basic credentials; returns (status, body)."""
    request = urllib.request.Request(url, method=method, data=body.encode() if body else None)
    request.add_header("Authorization", auth)
    request.add_header("Depth", depth)
    request.add_header("Content-Type", "application/xml; charset=utf-8")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _put_card(url: str, auth: str, i: int) -> int:
    """PUT the ``i``-th card of the benchmark book; returns the status."""
    first = FIRST_NAMES[i % len(FIRST_NAMES)]
    last = LAST_NAMES[(i // len(FIRST_NAMES)) % len(LAST_NAMES)]
    text = (
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:bench-{i}\r\nFN:{first} {last}\r\nN:{last};{first};;;\r\n"
        f"EMAIL;TYPE=work:c{i}@example.com\r\nTEL;TYPE=cell:+38050{i:07d}\r\n"
        f"ORG:Bench Ltd\r\nNOTE:card {i}\r\nEND:VCARD\r\n"
    )
    request = urllib.request.Request(f"{url}bench-{i}.vcf", method="PUT", data=text.encode())
    request.add_header("Authorization", auth)
    request.add_header("Content-Type", "text/vcard; charset=utf-8")
    request.add_header("If-None-Match", "*")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _timed(call: Any, rounds: int) -> tuple[float, Any]:
    """The median wall time (ms) of ``rounds`` calls, and the last call's result."""
    times = []
    result = None
    for _ in range(rounds):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def _sync_token(body: bytes) -> str:
    from defusedxml.ElementTree import fromstring

    return fromstring(body).findtext("{DAV:}sync-token") or ""


async def _count_dav_sql(secret: str, book: str, auth: str, token: str) -> list[str]:
    """The SQL statements of one incremental sync, counted in-process on the same database."""
    from litestar.testing import AsyncTestClient

    from app.config import load_settings
    from app.main import create_app

    env = {**service_env(secret), "AUTO_MIGRATE": "false", "JOBS_IN_PROCESS": "false", "APP_ENV": "test"}
    app = create_app(load_settings(env, env_file=None))
    statements: list[str] = []
    async with AsyncTestClient(app, base_url="http://127.0.0.1") as client:
        headers = {"Authorization": auth, "Depth": "0", "Content-Type": "application/xml"}
        body = DAV_SYNC.format(token=token)
        await client.request("REPORT", book, content=body, headers=headers)  # credential cached, pool warm

        def log(record: Any) -> None:
            statements.append(record.query)

        await asyncio.to_thread(client.blocking_portal.call, _add_logger, app, log)
        response = await client.request("REPORT", book, content=body, headers=headers)
        assert response.status_code == 207, response.text
        await asyncio.to_thread(client.blocking_portal.call, _remove_logger, app, log)
    return statements


async def _add_logger(app: Any, log: Any) -> None:
    app.state.direct_pool.add_query_logger(log)


async def _remove_logger(app: Any, log: Any) -> None:
    app.state.direct_pool.remove_query_logger(log)


def run_dav(args: argparse.Namespace) -> None:
    """Initial and incremental ``sync-collection`` of a ``--dav-cards`` book, a depth-1 PROPFIND, and their SQL.

    Issue 15's targets: the incremental sync after one change touches O(1) rows and answers
    within 2x a single-contact ``GET``; a depth-1 PROPFIND of the whole book streams (the
    server's RSS does not grow with the book).
    """
    import base64

    secret = secrets.token_urlsafe(48)
    # The book is filled through CardDAV itself (PUT), as a phone's first upload would.
    server, (user,) = start_service(secret, [0])
    try:
        status, body = http(server.url + "/api/users/me", token=user.token)
        user_id = json.loads(body)["id"]
        status, body = http(
            server.url + "/api/users/me/app-passwords/",
            "POST",
            user.token,
            json.dumps({"name": "bench"}).encode(),
            "application/json",
        )
        if status != 201:
            sys.exit(f"app password: {status} {body[:200]!r}")
        password = json.loads(body)["password"]
        auth = "Basic " + base64.b64encode(f"{user.email}:{password}".encode()).decode()
        book = f"/dav/addressbooks/{user_id}/contacts/"
        url = server.url + book
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda i: _put_card(url, auth, i), range(args.dav_cards)))
        if set(statuses) != {201}:
            sys.exit(f"PUT of the cards: {collections.Counter(statuses)}")
        print(f"PUT {args.dav_cards} cards in {time.monotonic() - started:.1f} s", file=sys.stderr)
        status, body = http(server.url + "/api/contacts/?limit=1", token=user.token)
        contact_id = json.loads(body)["items"][0]["id"]

        rss_start = server.rss_mb()
        propfind_ms, (status, listing) = _timed(
            lambda: dav_request(url, "PROPFIND", auth, DAV_PROPFIND, "1"), 3
        )
        assert status == 207, listing[:300]
        rss_propfind = server.rss_mb()
        initial_ms, (status, first) = _timed(
            lambda: dav_request(url, "REPORT", auth, DAV_SYNC.format(token="")), 5
        )
        assert status == 207, first[:300]
        token = _sync_token(first)

        status, _ = http(
            f"{server.url}/api/contacts/{contact_id}",
            "PATCH",
            user.token,
            json.dumps({"first_name": "Changed"}).encode(),
            "application/json",
        )
        assert status == 200, status
        # Interleaved, so that both see the same load on a shared machine.
        incremental_times, get_times = [], []
        for _ in range(101):
            incremental, (status, delta) = _timed(
                lambda: dav_request(url, "REPORT", auth, DAV_SYNC.format(token=token)), 1
            )
            assert status == 207, delta[:300]
            single, _ = _timed(lambda: http(f"{server.url}/api/contacts/{contact_id}", token=user.token), 1)
            incremental_times.append(incremental)
            get_times.append(single)
        incremental_ms, get_ms = statistics.median(incremental_times), statistics.median(get_times)
        statements = asyncio.run(_count_dav_sql(secret, book, auth, token))
        rss_end = server.rss_mb()
    finally:
        server.stop()
    n = args.dav_cards
    print()
    print(
        f"CardDAV, {n:,} cards, sequential requests over loopback, medians; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print()
    print("| request | median ms | answer | responses |")
    print("|---|---:|---:|---:|")
    print(
        f"| PROPFIND depth 1 (getetag) | {propfind_ms:.1f} | {len(listing) / 1024:.0f} KiB | {listing.count(b'<D:response>')} |"
    )
    print(
        f"| sync-collection, initial | {initial_ms:.1f} | {len(first) / 1024:.0f} KiB | {first.count(b'<D:response>')} |"
    )
    print(
        f"| sync-collection, after one change | {incremental_ms:.2f} | {len(delta)} B | {delta.count(b'<D:response>')} |"
    )
    print(f"| JSON GET of one contact | {get_ms:.2f} | | |")
    print()
    print(f"incremental / single GET: {incremental_ms / get_ms:.2f}x (target <= 2x)")
    print(
        f"server RSS: {rss_start:.0f} MB before, {rss_propfind:.0f} MB after the PROPFINDs, {rss_end:.0f} MB at the end"
    )
    print(f"SQL statements of one incremental sync: {len(statements)}")
    for statement in statements:
        print("    " + " ".join(statement.split())[:200])


def main() -> None:
    global OBSERVABILITY, DB_NAME, REDIS_URL
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000, help="contacts of the benchmark user")
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--login-connections", type=int, default=8, help="wrk connections of the login load")
    parser.add_argument("--only", default="", help="comma-separated scenarios (and 'mixed') to run")
    parser.add_argument(
        "--profile", action="store_true", help="sample the service with py-spy during each scenario"
    )
    parser.add_argument("--scale", action="store_true", help="run the scale check instead")
    parser.add_argument(
        "--scale-sizes", default="1000,10000,100000", help="contacts per user in the scale check"
    )
    parser.add_argument("--scale-duration", type=int, default=5, help="seconds per scale measurement")
    parser.add_argument("--dav", action="store_true", help="CardDAV sync of a --dav-cards book instead")
    parser.add_argument("--dav-cards", type=int, default=5_000, help="cards of the --dav book")
    parser.add_argument(
        "--observability",
        action="store_true",
        help="metrics on and JSON access logs at INFO (compare with a run without it)",
    )
    parser.add_argument(
        "--outbox",
        action="store_true",
        help="register / reset request / login with mails off, with the outbox row, and with the runner",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --outbox and --overhead")
    parser.add_argument("--database", default=DB_NAME, help="the database to drop and re-create")
    parser.add_argument("--redis-url", default=REDIS_URL, help="the Redis database to flush and use")
    parser.add_argument(
        "--overhead",
        action="store_true",
        help="the hot reads with metrics+logs (and traces) on vs off, interleaved, instead of the table",
    )
    parser.add_argument(
        "--overhead-pool", type=int, default=10, help="DB_POOL_SIZE of each --overhead service"
    )
    parser.add_argument(
        "--variants",
        default="",
        help="--overhead variants, comma-separated (default: off, metrics+logs and the two traced ones;"
        " also: metrics, logs)",
    )
    args = parser.parse_args()
    OBSERVABILITY = args.observability
    DB_NAME, REDIS_URL = args.database, args.redis_url
    if not Path(WRK).exists():
        sys.exit(f"{WRK} is missing (Debian package wrk)")
    sys.path.insert(0, str(ROOT))
    if args.dav:
        run_dav(args)
    elif args.scale:
        run_scale(args)
    elif args.outbox:
        run_outbox(args)
    elif args.overhead:
        run_overhead(args)
    else:
        run_full(args)


if __name__ == "__main__":
    main()
