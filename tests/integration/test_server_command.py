"""The documented ways to start the server, run as a person runs them (real processes, real sockets).

The README's run command is read from the README itself, so the test follows the docs.
Each server runs on the test's backend (the SQLite copy or the PostgreSQL test database).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET, SmtpServer, SmtpSink

ROOT = Path(__file__).parents[2]
NEW_PASSWORD = "an entirely new passphrase 42"


def readme_run_command() -> list[str]:
    """The first command of the README's "Two commands" section, split like a shell would."""
    section = (ROOT / "README.md").read_text().split("## Two commands", 1)[1]
    match = re.search(r"```bash\n(.+?)\n```", section, re.DOTALL)
    assert match, "the README's run command block is missing"
    command = shlex.split(match.group(1).strip())
    if command[:2] == ["uv", "run"] and shutil.which("uv") is None:
        command = [sys.executable, *command[3:]] if command[2] == "python" else command[2:]
    return command


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A server process and the file its output goes to."""

    def __init__(self, base_url: str, output: Path, process: subprocess.Popen[bytes]) -> None:
        self.base_url = base_url
        self.output = output
        self.process = process

    def log(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        return self.output.read_text(errors="replace")


@contextlib.contextmanager
def serve(
    command: list[str], env: dict[str, str], port: int, tmp_path: Path, *, name: str = "server"
) -> Iterator[Server]:
    """Start ``command`` with ``env``, wait until it is healthy, and stop it afterwards."""
    output = tmp_path / f"{name}.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # `uv run` may check the environment first
        while True:
            assert process.poll() is None, f"the server exited:\n{output.read_text()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/api/healthchecker", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"the server did not become healthy:\n{output.read_text()}"
            time.sleep(0.2)
        yield Server(base_url, output, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def server_env(
    database_url: str, redis_url: str | None, smtp_server: SmtpServer, tmp_path: Path
) -> dict[str, str]:
    """The environment of a server on this test's backend, mailing to the test's SMTP sink."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "COV_", "COVERAGE"))}
    env.pop("FORWARDED_ALLOW_IPS", None)
    env.update(
        {
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET,
            "SECRET_KEY_FILE": str(tmp_path / ".secret_key"),
            "MEDIA_DIR": str(tmp_path / "media"),
            "SMTP_HOST": smtp_server.host,
            "SMTP_PORT": str(smtp_server.port),
            "SMTP_TLS": "none",
            "MAIL_RETRY_SECONDS": "0.05",
            "BCRYPT_ROUNDS": "4",
            "PORT": str(_free_port()),
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    else:
        env.pop("REDIS_URL", None)
    return env


def _wait_for_mail(sink: SmtpSink, count: int) -> list:
    deadline = time.monotonic() + 15
    while len(sink.messages) < count:
        assert time.monotonic() < deadline, f"expected {count} mail(s), got {len(sink.messages)}"
        time.sleep(0.05)
    return sink.messages


def _token_of(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[1]


def _account_life(server: Server, smtp: SmtpServer) -> list[str]:
    """Register, confirm (JSON and browser), log in, reset the password; return the tokens used."""
    email = "reader@example.com"
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        answer = http.post(
            "/api/auth/register",
            json={"username": "reader", "email": email, "password": "correct horse battery staple"},
        )
        assert answer.status_code == 201, answer.text
        confirm_link = SmtpSink.links(_wait_for_mail(smtp.sink, 1)[0])[0]
        confirm_path = httpx.URL(confirm_link).path
        assert http.get(confirm_path).status_code == 200
        assert http.get(confirm_path, headers={"Accept": "text/html"}).status_code == 200
        login = http.post(
            "/api/auth/login", data={"username": email, "password": "correct horse battery staple"}
        )
        assert login.status_code == 200, login.text
        assert http.post("/api/auth/update_password", json={"email": email}).status_code == 202
        reset_link = SmtpSink.links(_wait_for_mail(smtp.sink, 2)[1])[0]
        reset_path = httpx.URL(reset_link).path
        assert http.get(reset_path, headers={"Accept": "text/html"}).status_code == 200
        assert http.post(reset_path, json={"password": NEW_PASSWORD}).status_code == 200
        # A used link, asked for again: the error path must not log the token either.
        assert http.get(reset_path).status_code == 400
    return [
        _token_of(confirm_link),
        _token_of(reset_link),
        login.json()["access_token"],
        login.json()["refresh_token"],
    ]


@pytest.mark.parametrize(
    "how",
    [
        "readme",
        # A bare uvicorn keeps its own access log on: the app masks that line too.
        "bare uvicorn",
    ],
)
def test_no_token_or_password_reaches_the_server_output(
    how: str, server_env: dict[str, str], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    port = int(server_env["PORT"])
    command = (
        readme_run_command()
        if how == "readme"
        else [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    )
    with serve(command, server_env, port, tmp_path) as server:
        secrets = _account_life(server, smtp_server)
    output = server.log()
    assert "/api/auth/register" in output  # the request lines are there...
    for secret in [*secrets, NEW_PASSWORD, "correct horse battery staple"]:
        assert secret not in output  # ...and nothing secret
    assert "confirm_update_password/***" in output


@pytest.mark.parametrize("how", ["readme", "litestar run"])
def test_x_forwarded_for_does_not_pick_the_rate_limit_bucket(
    how: str, server_env: dict[str, str], tmp_path: Path
) -> None:
    port = int(server_env["PORT"])
    server_env["RATE_LIMIT_AUTH_PER_MINUTE"] = "3"
    command = (
        readme_run_command()
        if how == "readme"
        else [sys.executable, "-m", "litestar", "--app", "app.main:app", "run", "--port", str(port)]
    )
    with serve(command, server_env, port, tmp_path) as server, httpx.Client(base_url=server.base_url) as http:
        statuses = [
            http.post(
                "/api/auth/login",
                data={"username": "nobody@example.com", "password": "wrong password 1"},
                headers={"X-Forwarded-For": f"203.0.113.{n}"},
            ).status_code
            for n in range(6)
        ]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3:] == [429, 429, 429]


def _raw_exchange(port: int, head: bytes, *, chunk: int = 64 * 1024) -> tuple[bytes, int]:
    """Send ``head`` on a raw socket until the server answers or closes; return (answer, bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            while sent < len(head):
                sent += conn.send(head[sent : sent + chunk])
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while part := conn.recv(65536):
                answer += part
    return answer, sent


def test_the_readme_command_bounds_the_request_head(server_env: dict[str, str], tmp_path: Path) -> None:
    port = int(server_env["PORT"])
    with serve(readme_run_command(), server_env, port, tmp_path) as server:
        many = b"".join(b"X-Filler-%d: x\r\n" % n for n in range(101))
        answer, _ = _raw_exchange(port, b"GET /api/healthchecker HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 ")

        # 2,000 headers of 100 KB (200 MB): refused after the first ~32 KB, never buffered.
        flood = b"GET /api/healthchecker HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"a" * 100_000 + b"\r\n"
        answer, sent = _raw_exchange(port, flood * 2_000)
        assert answer.startswith(b"HTTP/1.1 431 ")
        assert sent < 20 * 1024 * 1024

        # 100 ordinary headers and a large body are still an ordinary request.
        body = b'{"email": "' + b"a" * 600_000 + b'@example.com"}'
        headers = {f"X-Field-{n}": "y" for n in range(90)}
        answer_json = httpx.post(
            f"{server.base_url}/api/auth/request_email",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
            timeout=10,
        )
        assert answer_json.status_code == 400, answer_json.text
        assert httpx.get(f"{server.base_url}/api/healthchecker", headers=headers).status_code == 200
