"""Bounded mixed load: reads, writes, searches, birthdays and a few logins, all checked.

    uv run python bench/load.py [--duration 60] [--connections 64] [--contacts 2000]

Starts the service the way ``bench/run.py`` does (its :class:`Server`, one uvicorn worker,
uvloop + httptools, rate limits off) on a fresh PostgreSQL database ``contacts_load`` and a
private ``redis-server`` on a free loopback port (never the shared Redis), seeds one
confirmed user with ``--contacts`` contacts (``bench/run.py``'s bulk seed), then runs
``--connections`` asyncio workers over as many keep-alive connections for ``--duration``
seconds, each picking a request by weight:

    GET /api/users/me, GET/PUT/PATCH/DELETE /api/contacts/{id}, POST /api/contacts/,
    GET /api/contacts/ (list and q= search), GET /api/contacts/birthdays, POST /api/auth/login

Every answer is checked against the one status it must have (writes only touch contacts
the same worker created, so a 404 or 409 is a bug, not a race of the script). The run
prints a table per request kind and the server's RSS after warm-up, at half time and at
the end, and exits non-zero on any transport error, any 5xx, or any unexpected status.
The load goes only to 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run as bench_run  # noqa: E402 - needs the project root on sys.path

DB_NAME = "contacts_load"
#: Relative weights of the request kinds.
WEIGHTS = {
    "users/me": 20,
    "contact": 15,
    "list": 10,
    "search": 10,
    "birthdays": 10,
    "create": 12,
    "update": 8,
    "patch": 6,
    "delete": 6,
}
#: One login per this many seconds across all workers: "a few" (bcrypt is slow on purpose, and
#: 64 workers each logging in would measure nothing but the password hash).
LOGIN_EVERY = 2.0


@dataclass
class Stats:
    """Per request kind: statuses, latencies and failures."""

    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    unexpected: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    def record(self, kind: str, status: int, seconds: float, expected: int, detail: str = "") -> None:
        self.statuses[kind][status] += 1
        self.latencies[kind].append(seconds)
        if status != expected and len(self.unexpected) < 20:
            self.unexpected.append(f"{kind}: {status} (expected {expected}) {detail[:200]}")

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for c in self.statuses.values() for s, n in c.items() if s >= 500)

    def unexpected_count(self, expected: dict[str, int]) -> int:
        return sum(n for kind, c in self.statuses.items() for s, n in c.items() if s != expected[kind])


EXPECTED = {
    "users/me": 200,
    "contact": 200,
    "list": 200,
    "search": 200,
    "birthdays": 200,
    "create": 201,
    "update": 200,
    "patch": 200,
    "delete": 204,
    "login": 200,
}


def contact_body(tag: str) -> dict[str, Any]:
    return {
        "first_name": "Load",
        "last_name": f"Worker {tag[:8]}",
        "email": f"load-{tag}@example.com",
        "phone_number": f"+38067{random.randrange(10**7):07d}",
        "birthday": f"19{random.randrange(50, 99)}-0{random.randrange(1, 9)}-1{random.randrange(0, 9)}",
        "additional_data": "made by bench/load.py",
    }


class Worker:
    """One connection's worth of load: a loop of weighted random requests."""

    #: When the next login is due (shared by all workers).
    next_login = 0.0

    def __init__(self, client: Any, token: str, seeded: list[str], login_form: str, stats: Stats) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.seeded = seeded
        self.login_form = login_form
        self.stats = stats
        self.mine: list[str] = []  # contacts this worker created and not yet deleted

    async def run(self, deadline: float) -> None:
        kinds, weights = zip(*WEIGHTS.items(), strict=True)
        while time.monotonic() < deadline:
            if time.monotonic() >= Worker.next_login:
                Worker.next_login = time.monotonic() + LOGIN_EVERY
                kind = "login"
            else:
                kind = random.choices(kinds, weights)[0]
                if kind in ("update", "patch", "delete") and not self.mine:
                    kind = "create"
            try:
                await self.one(kind)
            except Exception as exc:  # transport errors: timeouts, resets
                self.stats.errors[f"{kind}: {type(exc).__name__}"] += 1

    async def call(self, kind: str, method: str, url: str, **kwargs: Any) -> Any:
        started = time.perf_counter()
        response = await self.client.request(method, url, **kwargs)
        self.stats.record(
            kind, response.status_code, time.perf_counter() - started, EXPECTED[kind], response.text
        )
        return response

    async def one(self, kind: str) -> None:
        h = self.headers
        if kind == "users/me":
            await self.call(kind, "GET", "/api/users/me", headers=h)
        elif kind == "contact":
            await self.call(kind, "GET", f"/api/contacts/{random.choice(self.seeded)}", headers=h)
        elif kind == "list":
            await self.call(kind, "GET", "/api/contacts/", params={"limit": 20, "offset": 20}, headers=h)
        elif kind == "search":
            term = random.choice([bench_run.SEARCH_TERM, "anna", "ko", "example.com", "нема"])
            await self.call(kind, "GET", "/api/contacts/", params={"q": term, "limit": 20}, headers=h)
        elif kind == "birthdays":
            await self.call(
                kind, "GET", "/api/contacts/birthdays", params={"days": random.randrange(0, 60)}, headers=h
            )
        elif kind == "create":
            response = await self.call(
                kind, "POST", "/api/contacts/", json=contact_body(uuid.uuid4().hex), headers=h
            )
            if response.status_code == 201:
                self.mine.append(response.json()["id"])
        elif kind == "update":
            body = contact_body(uuid.uuid4().hex)
            await self.call(kind, "PUT", f"/api/contacts/{random.choice(self.mine)}", json=body, headers=h)
        elif kind == "patch":
            body = {"additional_data": f"patched {time.time():.3f}"}
            await self.call(kind, "PATCH", f"/api/contacts/{random.choice(self.mine)}", json=body, headers=h)
        elif kind == "delete":
            contact_id = self.mine.pop(random.randrange(len(self.mine)))
            await self.call(kind, "DELETE", f"/api/contacts/{contact_id}", headers=h)
        elif kind == "login":
            await self.call(
                kind,
                "POST",
                "/api/auth/login",
                content=self.login_form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )


async def run_load(
    url: str, token: str, seeded: list[str], login_form: str, args: argparse.Namespace, server: Any
) -> tuple[Stats, list[tuple[str, float]]]:
    import httpx

    stats = Stats()
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    rss: list[tuple[str, float]] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        # Warm-up: connections opened, caches and pools filled, before the baseline RSS.
        warm = [Worker(client, token, seeded, login_form, Stats()) for _ in range(args.connections)]
        await asyncio.gather(*(w.run(time.monotonic() + 3) for w in warm))
        rss.append(("after warm-up", server.rss_mb()))
        started = time.monotonic()
        deadline = started + args.duration
        workers = [Worker(client, token, seeded, login_form, stats) for _ in range(args.connections)]

        async def sample() -> None:
            await asyncio.sleep(args.duration / 2)
            rss.append(("at half time", server.rss_mb()))

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(w.run(deadline) for w in workers))
        await sampler
        rss.append(("at the end", server.rss_mb()))
        stats.elapsed = time.monotonic() - started
    return stats, rss


def report(stats: Stats, rss: list[tuple[str, float]], args: argparse.Namespace) -> str:
    lines = [
        f"mixed load: {args.connections} connections, {args.duration} s, {args.contacts:,} seeded contacts",
        "",
        "| request | count | p50 ms | p99 ms | statuses |",
        "|---|---:|---:|---:|---|",
    ]
    for kind in [*WEIGHTS, "login"]:
        lat = sorted(stats.latencies.get(kind, []))
        if not lat:
            continue
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        codes = ", ".join(f"{s}: {n}" for s, n in sorted(stats.statuses[kind].items()))
        lines.append(f"| {kind} | {len(lat)} | {p50:.1f} | {p99:.1f} | {codes} |")
    elapsed = stats.elapsed or args.duration
    lines += [
        "",
        f"requests: {stats.total} ({stats.total / elapsed:,.0f} req/s); transport errors: "
        f"{sum(stats.errors.values())}; 5xx: {stats.server_errors}; "
        f"unexpected statuses: {stats.unexpected_count(EXPECTED)}",
        "server RSS: " + ", ".join(f"{label} {mb:.1f} MB" for label, mb in rss),
    ]
    for line in stats.unexpected:
        lines.append(f"  unexpected: {line}")
    for what, n in stats.errors.most_common(10):
        lines.append(f"  error: {what} x{n}")
    return "\n".join(lines)


@contextlib.contextmanager
def private_redis() -> Any:
    """A redis-server of this run only, on a free loopback port, without persistence."""
    port = bench_run.free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is missing (Debian package redis-server)")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds of load (bounded)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--contacts", type=int, default=2000, help="seeded contacts of the load user")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the request mix")
    args = parser.parse_args()
    if not 1 <= args.duration <= 600:
        sys.exit("--duration must be between 1 and 600 seconds")
    random.seed(args.seed)
    # bench/run.py's helpers read these module globals: point them at this run's own database.
    bench_run.DB_NAME = DB_NAME
    secret = secrets.token_urlsafe(48)
    server = None
    with private_redis() as redis_url:
        bench_run.REDIS_URL = redis_url
        try:
            asyncio.run(bench_run.reset_database())
            env = {
                **bench_run.service_env(secret),
                "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{DB_NAME}",
                "REDIS_URL": redis_url,
            }
            print(
                f"starting the service on a fresh database {DB_NAME!r} and a private Redis ...",
                file=sys.stderr,
            )
            server = bench_run.Server("app.main:app", env, "/api/healthchecker", "load")
            (user,) = asyncio.run(bench_run.seed(secret, [args.contacts]))
            seeded = [line.split()[0] for line in user.ids_file.read_text().splitlines() if line.strip()]
            if not seeded:
                sys.exit("no contacts were seeded (is the contacts table there?)")
            form = (
                f"username={user.email.replace('@', '%40')}&password={bench_run.PASSWORD.replace(' ', '+')}"
            )
            stats, rss = asyncio.run(run_load(server.url, user.token, seeded, form, args, server))
        finally:
            if server is not None:
                server.stop()
    print()
    print(report(stats, rss, args))
    failed = sum(stats.errors.values()) + stats.server_errors + stats.unexpected_count(EXPECTED)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
