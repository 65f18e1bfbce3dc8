"""Private, disposable service instances for fault tests (never the shared ones).

The PostgreSQL on 5432 and the Redis on 6379 serve every test run on this machine, so a
test that stops or restarts a service starts its own copy on a free loopback port:

- :class:`PrivateRedis`: a ``redis-server`` subprocess without persistence, stoppable and
  restartable on the same port.
- :class:`PrivatePostgres`: a throw-away cluster made by ``initdb`` in a temporary directory
  (run as the ``postgres`` OS user when we are root), started and stopped with ``pg_ctl``.
- :class:`SmtpSink`: an aiosmtpd server in a thread that keeps every message it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

PG_BIN_DIRS = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, *, up: bool, timeout: float = 15.0) -> None:
    """Wait until ``port`` accepts connections (``up``) or refuses them (not ``up``).

    Raises:
        TimeoutError: The port did not reach the wanted state in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                listening = True
        except OSError:
            listening = False
        if listening == up:
            return
        time.sleep(0.05)
    msg = f"port {port} still {'down' if up else 'up'} after {timeout}s"
    raise TimeoutError(msg)


class PrivateRedis:
    """A ``redis-server`` of our own: ``stop()`` kills it, ``start()`` brings it back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL of database 0 of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        """Whether ``redis-server`` is installed."""
        return shutil.which("redis-server") is not None

    def start(self) -> None:
        """Start the server (empty: no persistence) and wait until it accepts connections."""
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, up=True)

    def stop(self) -> None:
        """Kill the server (as an outage would) and wait until the port is closed."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
        wait_port(self.port, up=False)


def _pg_bin(name: str) -> str | None:
    for directory in PG_BIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file():
            return str(candidate)
    return shutil.which(name)


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port, restartable with ``pg_ctl``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="contacts-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database of this cluster."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why a private cluster cannot be made here, or ``None`` when it can."""
        if _pg_bin("initdb") is None or _pg_bin("pg_ctl") is None:
            return "initdb/pg_ctl not installed"
        if os.geteuid() == 0 and (shutil.which("runuser") is None or not _user_exists("postgres")):
            return "running as root without a postgres OS user to run initdb as"
        return None

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        command = list(args)
        if self._as_postgres:
            # initdb and postgres refuse to run as root.
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, timeout=timeout, check=True)  # noqa: S603

    def init(self) -> None:
        """Create the cluster (trust auth on loopback only, no fsync: it is disposable)."""
        if self._as_postgres:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            _pg_bin("initdb") or "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl") or "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "start",
        )
        wait_port(self.port, up=True)

    def stop(self) -> None:
        """Stop the server (fast mode: open connections are cut, as in a restart)."""
        self._run(_pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        wait_port(self.port, up=False)

    def destroy(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        with contextlib.suppress(subprocess.CalledProcessError, TimeoutError):
            self._run(_pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@dataclass
class SmtpSink:
    """An SMTP server on a free port that keeps what it receives (aiosmtpd, in a thread)."""

    port: int = field(default_factory=free_port)
    messages: list[Message] = field(default_factory=list)
    #: Seconds the server takes to accept each message (a slow mail server).
    delay: float = 0.0
    _controller: Any = None

    def start(self) -> None:
        """Start listening."""
        from aiosmtpd.controller import Controller

        sink = self

        class _Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                if sink.delay:
                    await asyncio.sleep(sink.delay)
                sink.messages.append(message_from_bytes(envelope.original_content or envelope.content))
                return "250 OK"

        self._controller = Controller(_Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def bodies(self) -> list[str]:
        """The decoded text of every part of every message received."""
        texts = []
        for message in self.messages:
            for part in message.walk():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    texts.append(payload.decode(part.get_content_charset() or "utf-8", "replace"))
        return texts

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Wait (without blocking the event loop) until at least ``count`` messages arrived.

        Raises:
            TimeoutError: Fewer arrived in time.
        """
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                msg = f"{len(self.messages)} of {count} mails arrived within {timeout}s"
                raise TimeoutError(msg)
            await asyncio.sleep(0.05)
