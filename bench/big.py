"""Big books (issue 18): search, export and import against a 100k-contact address book.

    uv run python bench/big.py [--contacts 100000] [--import-cards 10000]
        [--database contacts_bench_big] [--redis-url redis://127.0.0.1:6379/12]

Seeds (bulk COPY, as ``bench/run.py`` does) one user with ``--contacts`` contacts and one with
none, starts the service (``app.main:app``, production settings of ``bench.run.service_env``)
and measures, one request at a time:

1. search with a 1- and a 2-character ``q`` that match most of the book (the hard case) at one
   connection (``wrk -c1``): p50 <= 5 ms;
2. the vCard and the CSV export of the whole book: time to first byte, total time, bytes, and
   the server's peak RSS growth (``clear_refs`` before, ``VmHWM`` after): <= 20 MB;
3. the import of a ``--import-cards`` vCard file (phone-export cards) into the empty book:
   <= 5 s, peak RSS growth <= 50 MB, every card created.

The database (dropped and re-created) and the Redis db (flushed) default to ones no other
benchmark uses.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402 (after the path is set)

DB_NAME = "contacts_bench_big"
REDIS_URL = "redis://127.0.0.1:6379/12"
#: Search terms matching many contacts: "a" is in every email (example.com), "en" in most last names.
SEARCH_TERMS = ("a", "en")
SEARCH_P50_MS = 5.0
EXPORT_RSS_MB = 20.0
IMPORT_SECONDS = 5.0
IMPORT_RSS_MB = 50.0
#: Bytes read per ``read`` of a streamed answer: the bench never holds a whole export.
CHUNK = 64 * 1024


@dataclass
class Row:
    """One line of the report table."""

    check: str
    figures: str
    target: str
    ok: bool


# --------------------------------------------------------------------------- server memory


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in kB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def reset_peak(pid: int) -> int:
    """Reset the process's peak RSS to its current RSS; return that RSS in kB."""
    # "5" resets VmHWM (Documentation/filesystems/proc.rst); the process must be ours.
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return memory_kb(pid)["VmRSS"]


# --------------------------------------------------------------------------- checks


def check_search(server: run.Server, user: run.SeededUser, duration: int) -> list[Row]:
    """Search with short terms at one connection: p50, p99 and the number of matches."""
    rows = []
    # Prepares the page and count statements (x is in every email), so that a term's first
    # request below measures its count, not a statement's preparation.
    run.http(server.url + "/api/contacts/?q=x&limit=20", token=user.token)
    for term in SEARCH_TERMS:
        path = f"/api/contacts/?q={term}&limit=20"
        started = time.perf_counter()
        status, body = run.http(server.url + path, token=user.token)
        first_ms = (time.perf_counter() - started) * 1000
        if status != 200:
            rows.append(Row(f"search q={term}", f"answered {status}", "200", False))
            continue
        total = json.loads(body)["total"]
        run.wrk("search", server.url, ["get", path, user.token, "-"], duration=1, connections=1)  # warm-up
        r = run.wrk(
            "search",
            server.url,
            ["get", path, user.token, "-"],
            duration=duration,
            connections=1,
            server=server,
        )
        figures = (
            f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, {r.rps:,.0f} req/s, "
            f"{r.cpu_us:,.0f} µs CPU/req, total {total:,}; first request (total counted) {first_ms:.1f} ms"
        )
        if r.non_2xx:
            figures += f", **{r.non_2xx} non-2xx**"
        rows.append(
            Row(
                f"search `q={term}` (-c1, {duration} s)",
                figures,
                f"p50 ≤ {SEARCH_P50_MS:.0f} ms",
                r.p50_ms <= SEARCH_P50_MS and not r.non_2xx,
            )
        )
    return rows


def _connection(server: run.Server, timeout: float = 300) -> http.client.HTTPConnection:
    parts = urlsplit(server.url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


def check_export(server: run.Server, user: run.SeededUser, export_format: str) -> Row:
    """Stream one export, reading it in chunks: first byte, total time, bytes and the server's peak RSS."""
    pid = server.process.pid
    before = reset_peak(pid)
    connection = _connection(server)
    started = time.perf_counter()
    connection.request(
        "GET",
        f"/api/contacts/export?format={export_format}",
        headers={"Authorization": f"Bearer {user.token}"},
    )
    response = connection.getresponse()
    first_byte = size = 0.0
    records = 0
    tail = b""
    marker = b"END:VCARD" if export_format == "vcard" else b"\n"
    while response.status == 200 and (chunk := response.read1(CHUNK)):
        if not size:
            first_byte = time.perf_counter() - started
        size += len(chunk)
        # A marker cut by a chunk boundary is counted once, in the joined tail + chunk.
        joined = tail + chunk
        records += joined.count(marker) - tail.count(marker)
        tail = joined[-len(marker) + 1 :] if len(marker) > 1 else b""
    total_time = time.perf_counter() - started
    status = response.status
    if status != 200:
        detail = response.read()[:200]
    connection.close()
    memory = memory_kb(pid)
    if status != 200:
        return Row(f"export {export_format}", f"answered {status}: {detail!r}", "200", False)
    if export_format == "csv":
        records -= 1  # the header line
    growth = (memory["VmHWM"] - before) / 1024
    figures = (
        f"first byte {first_byte * 1000:.0f} ms, total {total_time:.2f} s, {size / 1e6:.1f} MB, "
        f"{records:,} {'cards' if export_format == 'vcard' else 'rows'}; RSS {before / 1024:.0f} MB before, "
        f"peak {memory['VmHWM'] / 1024:.0f} MB, {memory['VmRSS'] / 1024:.0f} MB after: "
        f"**+{growth:.1f} MB**"
    )
    complete = records == user.contacts
    if not complete:
        figures += f" (**expected {user.contacts:,}**)"
    return Row(
        f"export {export_format}",
        figures,
        f"peak RSS growth ≤ {EXPORT_RSS_MB:.0f} MB",
        growth <= EXPORT_RSS_MB and complete,
    )


def phone_export(cards: int) -> bytes:
    """A vCard 3.0 file as a phone exports it: FN/N/EMAIL/TEL/BDAY/NOTE, some with ADR and ORG; unique emails."""
    first, last = run.FIRST_NAMES, run.LAST_NAMES
    parts = []
    for i in range(cards):
        given, family = first[i % len(first)], last[(i // len(first)) % len(last)]
        lines = [
            "BEGIN:VCARD",
            "VERSION:3.0",
            f"FN:{given} {family}",
            f"N:{family};{given};;;",
            f"EMAIL;TYPE=INTERNET;TYPE=HOME:{given.lower()}.{family.lower()}.{i}@mail.example",
            f"TEL;TYPE=CELL:+38067{i:07d}",
            f"BDAY:{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}",
            f"NOTE:Imported card {i}",
        ]
        if i % 3 == 0:
            lines.append(f"ADR;TYPE=HOME:;;{i % 200 + 1} Khreshchatyk St;Kyiv;;01001;Ukraine")
        if i % 4 == 0:
            lines.append(f"ORG:Company {i % 97};Sales")
        lines.append("END:VCARD")
        parts.append("\r\n".join(lines) + "\r\n")
    return "".join(parts).encode()


def check_import(server: run.Server, user: run.SeededUser, cards: int) -> Row:
    """Import a ``cards``-card vCard file into the user's (empty) book: time, peak RSS growth, ``created``."""
    content = phone_export(cards)
    boundary = secrets.token_hex(16)
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="contacts.vcf"\r\n'
        f"Content-Type: text/vcard\r\n\r\n".encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    pid = server.process.pid
    before = reset_peak(pid)
    connection = _connection(server)
    started = time.perf_counter()
    connection.request(
        "POST",
        "/api/contacts/import",
        body=body,
        headers={
            "Authorization": f"Bearer {user.token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    response = connection.getresponse()
    answer = response.read()
    elapsed = time.perf_counter() - started
    connection.close()
    memory = memory_kb(pid)
    name = f"import {cards:,} vCards ({len(content) / 1e6:.1f} MB)"
    if response.status != 200:
        return Row(name, f"answered {response.status}: {answer[:200]!r}", "200", False)
    result = json.loads(answer)
    growth = (memory["VmHWM"] - before) / 1024
    figures = (
        f"**{elapsed:.2f} s**, created {result['created']:,}, skipped {result['skipped']}, "
        f"errors {len(result['errors'])}; RSS {before / 1024:.0f} MB before, peak {memory['VmHWM'] / 1024:.0f} MB, "
        f"{memory['VmRSS'] / 1024:.0f} MB after: **+{growth:.1f} MB**"
    )
    good = elapsed <= IMPORT_SECONDS and growth <= IMPORT_RSS_MB and result["created"] == cards
    target = f"≤ {IMPORT_SECONDS:.0f} s, peak RSS growth ≤ {IMPORT_RSS_MB:.0f} MB, created = {cards:,}"
    return Row(name, figures, target, good)


# --------------------------------------------------------------------------- main


def main() -> None:
    """Seed, start the service, run the three checks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000, help="contacts of the big book")
    parser.add_argument("--import-cards", type=int, default=10_000, help="cards of the imported file")
    parser.add_argument("--search-duration", type=int, default=5, help="seconds of each search measurement")
    parser.add_argument("--database", default=DB_NAME, help="the database to drop and re-create")
    parser.add_argument("--redis-url", default=REDIS_URL, help="the Redis database to flush and use")
    parser.add_argument("--only", default="search,export,import", help="checks to run, comma-separated")
    args = parser.parse_args()
    if not Path(run.WRK).exists():
        sys.exit(f"{run.WRK} is missing (Debian package wrk)")
    run.DB_NAME, run.REDIS_URL = args.database, args.redis_url
    os.environ.setdefault("IMPORT_MAX_CARDS", str(max(args.import_cards, 10_000)))
    only = set(args.only.split(","))

    secret = secrets.token_urlsafe(48)
    server, (big, empty) = run.start_service(secret, [args.contacts, 0])
    rows: list[Row] = []
    try:
        # As the service would be after a while: warm pool and prepared statements.
        run.http(server.url + "/api/contacts/?limit=20", token=big.token)
        rss_start = server.rss_mb()
        if "search" in only:
            rows += check_search(server, big, args.search_duration)
        if "export" in only:
            rows += [check_export(server, big, "vcard"), check_export(server, big, "csv")]
        if "import" in only:
            rows.append(check_import(server, empty, args.import_cards))
        rss_end = server.rss_mb()
    finally:
        server.stop()

    print()
    print(
        f"{args.contacts:,} contacts, {os.cpu_count()} CPUs, PostgreSQL + Redis, one request at a time; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print()
    print("| check | figures | target (issue 18) | verdict |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row.check} | {row.figures} | {row.target} | {'ok' if row.ok else '**MISSED**'} |")
    print()
    print(f"server RSS: {rss_start:.0f} MB after start-up and seeding, {rss_end:.0f} MB at the end")


if __name__ == "__main__":
    main()
