"""The curl examples of the guide pages, run against the app so the docs cannot rot.

Every ``.. code-block:: console`` of a guide page is read. Within it:

* ``$ curl ...`` runs the request on the test client; the lines after it (up to the next
  ``$``) are the documented output: with ``-i`` a status line (``HTTP/1.1 201 Created``),
  optional headers, a blank line and the body; without ``-i`` only the body (and a 2xx is
  expected).
* ``$ NAME=$(curl ... | jq -r .field)`` runs the request (2xx expected) and keeps the field
  (``.a.b``, ``.[0].id``).
* ``$ curl -D - -o FILE ...`` documents the status line and headers (as ``-i`` does) and keeps
  the body as ``FILE``, not compared (a download: a zip...); ``$ unzip -Z1 FILE`` then lists
  the names in that zip, compared line by line.
* ``$ NAME=value`` sets a variable; ``CONFIRM_TOKEN``, ``RESET_TOKEN`` and
  ``EMAIL_CHANGE_TOKEN`` are instead read from the last mail written to the log, the way a
  reader copies them.
* Any other ``$`` command (``uv run ...``, ``docker compose ...``) is not run.

A documented JSON body must match the answer: objects may list a subset of the keys,
``"…"`` (or a string containing ``…``) matches anything there, and the keys in
:data:`VOLATILE` (ids, timestamps, tokens, dates that depend on today) only need to be
present with a value of the same JSON type. Text bodies match line by line with the same
``…`` wildcard. ``.. code-block:: text`` blocks with a ``:caption:`` are files that
``-F file=@name`` can upload.

The pages run in order within one app per page. While another part of the API is still
being built, a page whose examples use a route the app does not have yet is skipped,
naming the route.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["overview", "quickstart", "authentication", "contacts", "account"]
BASE_URL = "http://127.0.0.1:8000"
#: Keys whose value changes from run to run: only their presence and JSON type are checked.
VOLATILE = {"id", "created_at", "updated_at", "access_token", "refresh_token", "next_birthday", "avatar_url"}
#: Variables a reader copies from the mail in the log, with the link that carries them.
FROM_MAIL = {
    "CONFIRM_TOKEN": re.compile(r"/api/auth/confirmed_email/([A-Za-z0-9._~-]+)"),
    "RESET_TOKEN": re.compile(r"/api/auth/confirm_update_password/([A-Za-z0-9._~-]+)"),
    "EMAIL_CHANGE_TOKEN": re.compile(r"/api/auth/confirm_email_change/([A-Za-z0-9._~-]+)"),
}
ELLIPSIS = "…"


# --------------------------------------------------------------------------- parsing the pages


@dataclass
class Example:
    """One ``$`` command of a console block and the output documented under it."""

    page: str
    line: int
    command: str
    output: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"docs/{self.page}.rst:{self.line}"


def _blocks(text: str, language: str) -> Iterator[tuple[int, dict[str, str], list[str]]]:
    """Yield (first content line number, options, dedented lines) of each ``code-block``."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(rf"^(\s*)\.\. code-block:: {language}\s*$", lines[i])
        if not match:
            i += 1
            continue
        indent = len(match.group(1))
        i += 1
        options: dict[str, str] = {}
        while i < len(lines) and (opt := re.match(r"^\s+:(\w+):\s*(.*)$", lines[i])):
            options[opt.group(1)] = opt.group(2).strip()
            i += 1
        body: list[tuple[int, str]] = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append((i + 1, lines[i]))
            i += 1
        while body and not body[-1][1].strip():
            body.pop()
        while body and not body[0][1].strip():
            body.pop(0)
        if not body:
            continue
        cut = min(len(line) - len(line.lstrip()) for _, line in body if line.strip())
        yield body[0][0], options, [line[cut:] for _, line in body]


def parse_page(page: str) -> tuple[list[Example], dict[str, bytes]]:
    """The examples (in order) and the captioned files of a guide page."""
    text = (DOCS / f"{page}.rst").read_text(encoding="utf-8")
    files = {
        options["caption"]: ("\n".join(body) + "\n").encode()
        for _, options, body in _blocks(text, "text")
        if "caption" in options
    }
    examples: list[Example] = []
    for first, _, body in _blocks(text, "console"):
        current: Example | None = None
        continued = False
        for offset, line in enumerate(body):
            if line.startswith("$ "):
                current = Example(page, first + offset, line[2:])
                examples.append(current)
                continued = line.endswith("\\") or _open_quote(current.command)
            elif continued and current is not None:
                current.command += "\n" + line
                continued = line.endswith("\\") or _open_quote(current.command)
            elif current is not None:
                current.output.append(line)
    return examples, files


# --------------------------------------------------------------------------- a little shell


def _open_quote(command: str) -> bool:
    """Whether ``command`` ends inside a quoted string (so the next line continues it)."""
    quote: str | None = None
    escaped = False
    for char in command:
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
    return quote is not None


def shell_words(command: str, env: dict[str, str]) -> list[str]:
    """Split ``command`` like a POSIX shell, expanding ``$NAME``/``${NAME}`` outside single quotes.

    Raises:
        KeyError: A variable is used before it is set (the page's order is wrong).
    """
    command = command.replace("\\\n", " ")
    words: list[str] = []
    word: list[str] | None = None
    i = 0
    quote: str | None = None

    def expand(at: int) -> tuple[str, int]:
        match = re.match(r"\$(?:\{(\w+)\}|(\w+))", command[at:])
        if not match:
            return "$", at + 1
        return env[match.group(1) or match.group(2)], at + match.end()

    while i < len(command):
        char = command[i]
        if quote == "'":
            if char == "'":
                quote = None
            else:
                word.append(char)  # type: ignore[union-attr]
            i += 1
        elif quote == '"':
            if char == '"':
                quote = None
                i += 1
            elif char == "\\" and i + 1 < len(command) and command[i + 1] in '"\\$`':
                word.append(command[i + 1])  # type: ignore[union-attr]
                i += 2
            elif char == "$":
                value, i = expand(i)
                word.append(value)  # type: ignore[union-attr]
            else:
                word.append(char)  # type: ignore[union-attr]
                i += 1
        elif char.isspace():
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
        else:
            word = word if word is not None else []
            if char in "'\"":
                quote = char
                i += 1
            elif char == "\\" and i + 1 < len(command):
                word.append(command[i + 1])
                i += 2
            elif char == "$":
                value, i = expand(i)
                word.append(value)
            else:
                word.append(char)
                i += 1
    if quote:
        msg = f"unterminated quote in {command!r}"
        raise ValueError(msg)
    if word is not None:
        words.append("".join(word))
    return words


@dataclass
class Call:
    """A curl command line translated into a request."""

    method: str
    path: str
    headers: dict[str, str]
    content: bytes | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    include: bool = False
    output_file: str | None = None


def parse_curl(words: list[str], files: dict[str, bytes]) -> Call:
    """Translate the curl options the guides use; any other option fails the test."""
    assert words[0] == "curl", words
    method: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    data: list[str] = []
    form: dict[str, tuple[str, bytes, str]] = {}
    call_include = False
    output_file = None
    args = iter(words[1:])
    for arg in args:
        if arg in {"-s", "-S", "-sS", "--silent", "--show-error", "--fail-with-body"}:
            continue
        if arg in {"-i", "-si", "-is", "--include"}:
            call_include = True
        elif arg in {"-X", "--request"}:
            method = next(args)
        elif arg in {"-H", "--header"}:
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif arg in {"-d", "--data", "--data-raw", "--data-binary"}:
            value = next(args)
            data.append(files[value[1:]].decode() if value.startswith("@") else value)
        elif arg == "--data-urlencode":
            name, _, value = next(args).partition("=")
            data.append(f"{name}={urllib.parse.quote_plus(value)}")
        elif arg in {"-F", "--form"}:
            name, _, value = next(args).partition("=")
            assert value.startswith("@"), f"only file fields are supported: {arg} {value}"
            filename, _, kind = value[1:].partition(";type=")
            form[name] = (filename, files[filename], kind or "application/octet-stream")
        elif arg in {"-o", "--output"}:
            output_file = next(args)
        elif arg in {"-D", "--dump-header"}:
            assert next(args) == "-", "only -D - (the headers to the terminal) is supported"
            call_include = True
        elif arg.startswith("-"):
            pytest.fail(f"curl option {arg!r} is not understood by the docs test")
        else:
            assert url is None, f"two URLs in one curl command: {url!r} and {arg!r}"
            url = arg
    assert url and url.startswith(BASE_URL), f"examples call {BASE_URL}, not {url!r}"
    content: bytes | None = None
    if data:
        content = "&".join(data).encode()
        if not any(h.lower() == "content-type" for h in headers):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
    default = "POST" if data or form else "GET"
    return Call(
        method=(method or default).upper(),
        path=url[len(BASE_URL) :] or "/",
        headers=headers,
        content=content,
        files=form or None,
        include=call_include,
        output_file=output_file,
    )


# --------------------------------------------------------------------------- matching


def _text_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in expected.split(ELLIPSIS)), re.DOTALL)


def match_json(expected: Any, actual: Any, where: str = "$") -> None:
    """Assert that ``actual`` is what ``expected`` documents (see the module docstring)."""
    if expected == ELLIPSIS:
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}: missing key {key!r} in {actual!r}"
            if key in VOLATILE:
                assert type(value) is type(actual[key]), (
                    f"{where}.{key}: {actual[key]!r} is not like {value!r}"
                )
            else:
                match_json(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        assert len(expected) == len(actual), f"{where}: expected {len(expected)} items, got {actual!r}"
        for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
            match_json(e, a, f"{where}[{index}]")
    elif isinstance(expected, str) and ELLIPSIS in expected:
        assert isinstance(actual, str), f"{where}: expected a string, got {actual!r}"
        assert _text_pattern(expected).fullmatch(actual), f"{where}: {actual!r} does not match {expected!r}"
    else:
        assert expected == actual, f"{where}: documented {expected!r}, got {actual!r}"


def check_output(example: Example, call: Call, response: Any) -> None:
    """Compare the answer with the documented output of ``example``."""
    lines = list(example.output)
    where = example.where()
    if call.include:
        assert lines, f"{where}: curl -i needs the documented status line under it"
        status = re.match(r"^HTTP/[\d.]+ (\d{3})\b", lines.pop(0))
        assert status, f"{where}: the first output line must be a status line"
        assert response.status_code == int(status.group(1)), (
            f"{where}: documented {status.group(1)}, got {response.status_code}: {response.text}"
        )
        while lines and lines[0].strip():
            name, _, value = lines.pop(0).partition(":")
            actual = response.headers.get(name.strip())
            assert actual is not None, f"{where}: header {name!r} missing from {dict(response.headers)}"
            assert _text_pattern(value.strip()).fullmatch(actual), f"{where}: {name}: {actual!r} != {value!r}"
        if lines:
            lines.pop(0)
    else:
        assert response.is_success, f"{where}: got {response.status_code}: {response.text}"
    body = "\n".join(lines).strip()
    if not body:
        return
    if "json" in response.headers.get("content-type", ""):
        try:
            documented = json.loads(body)
        except json.JSONDecodeError as exc:
            pytest.fail(f"{where}: the documented body is not JSON ({exc}): {body}")
        match_json(documented, response.json(), where)
    else:
        actual = response.text.replace("\r\n", "\n").strip()
        assert _text_pattern(body).fullmatch(actual), f"{where}: documented\n{body}\n--- got\n{actual}"


# --------------------------------------------------------------------------- running


class MailLog(logging.Handler):
    """Keeps every message logged under ``app`` (where the log mail adapter writes mails)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    async def last(self, pattern: re.Pattern[str], client: AsyncTestClient[Litestar]) -> str:
        """The link of the newest mail logged, once the outbox has delivered every mail written.

        Mails leave through the outbox's runner, a moment after the request that wrote them
        (and maybe during the guide's next request): the newest mail is known only once
        nothing is pending.
        """
        runner = client.app.state.job_runner
        for _ in range(200):
            status = await asyncio.to_thread(client.blocking_portal.call, runner.status)
            if status.pending == 0:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the outbox still has pending mails after 10 s")
        for message in reversed(self.messages):
            if found := pattern.findall(message):
                return found[-1]
        pytest.fail(f"no mail in the log has a link like {pattern.pattern}")


def _route_matcher(app: Litestar) -> Callable[[str, str], bool]:
    routes = []
    for route in app.routes:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(route.path.rstrip("/") or "/"))
        routes.append((re.compile(pattern + "/?"), set(getattr(route, "methods", ()))))

    def exists(method: str, path: str) -> bool:
        path = urllib.parse.urlsplit(path).path
        return any(regex.fullmatch(path) and method in methods for regex, methods in routes)

    return exists


_ASSIGN_CURL = re.compile(r"^(\w+)=\$\((curl\s.*?)\s*\|\s*jq -r '?(\.[\w.\[\]]+)'?\s*\)$", re.DOTALL)


def jq_path(value: Any, path: str) -> Any:
    """What ``jq -r PATH`` picks from ``value``: ``.a.b`` and ``.[0].id`` forms."""
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", path):
        value = value[int(index)] if index else value[key]
    return value


_ASSIGN = re.compile(r"^(\w+)=(\S+)$")
_UNZIP_LIST = re.compile(r"^unzip -Z1 (\S+)$")


def _plan(examples: list[Example], files: dict[str, bytes]) -> list[tuple[str, str]]:
    """The (method, path) of every request on the page, variables left as they are."""
    env = _PlaceholderEnv()
    out = []
    for example in examples:
        command = example.command.replace("\\\n", " ")  # line continuations
        if m := _ASSIGN_CURL.match(command):
            command = m.group(2)
        if command.startswith("curl "):
            call = parse_curl(shell_words(command, env), files)
            out.append((call.method, call.path))
    return out


class _Headers:
    """An answer with its body hidden: what ``curl -D - -o FILE`` shows."""

    def __init__(self, response: Any) -> None:
        self.status_code = response.status_code
        self.headers = response.headers
        self.is_success = response.is_success
        self.text = ""


class _PlaceholderEnv(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "x"


@pytest.mark.parametrize("page", PAGES)
async def test_guide_examples(page: str, make_client: Callable[..., AsyncTestClient[Litestar]]) -> None:
    examples, files = parse_page(page)
    # The log adapter writes mails to the log, where the guides tell readers to find them.
    async with make_client(smtp_host=None) as client:
        exists = _route_matcher(client.app)
        missing = sorted({f"{m} {p}" for m, p in _plan(examples, files) if not exists(m, p)})
        if missing:
            pytest.skip(f"docs/{page}.rst uses routes not built yet: {', '.join(missing)}")
        mail = MailLog()
        app_logger = logging.getLogger("app")
        app_logger.addHandler(mail)
        try:
            await _run(examples, files, client, mail)
        finally:
            app_logger.removeHandler(mail)


async def _run(
    examples: list[Example], files: dict[str, bytes], client: AsyncTestClient[Litestar], mail: MailLog
) -> None:
    env: dict[str, str] = {}
    ran = 0
    for example in examples:
        command = example.command.replace("\\\n", " ")  # line continuations
        keep: tuple[str, str] | None = None
        if m := _ASSIGN_CURL.match(command):
            keep, command = (m.group(1), m.group(3)), m.group(2)
        elif m := _ASSIGN.match(command):
            name = m.group(1)
            if name in FROM_MAIL:
                env[name] = await mail.last(FROM_MAIL[name], client)
            else:
                env[name] = shell_words(m.group(2), env)[0]
            continue
        if m := _UNZIP_LIST.match(command):
            # The names in a zip a curl example downloaded (-o), one a line.
            with zipfile.ZipFile(io.BytesIO(files[m.group(1)])) as archive:
                assert archive.namelist() == example.output, f"{example.where()}: {archive.namelist()}"
            continue
        if not command.startswith("curl "):
            continue
        call = parse_curl(shell_words(command, env), files)
        response = await client.request(
            call.method, call.path, headers=call.headers, content=call.content, files=call.files
        )
        ran += 1
        if keep:
            assert response.is_success, f"{example.where()}: got {response.status_code}: {response.text}"
            env[keep[0]] = str(jq_path(response.json(), keep[1]))
        elif call.output_file:
            files[call.output_file] = response.content
            assert response.is_success, f"{example.where()}: got {response.status_code}: {response.text}"
            if call.include:  # -D -: the status and headers are documented, the body is the file
                check_output(example, call, _Headers(response))
        else:
            check_output(example, call, response)
    assert ran, "a guide page in PAGES has no curl example"


# --------------------------------------------------------------------------- the runner itself


def test_shell_words_quotes_and_variables() -> None:
    env = {"T": "abc", "ID": "42"}
    words = shell_words("""curl -H "Authorization: Bearer $T" -d '{"a": "$T"}' x/${ID}/y \\\n  -i""", env)
    assert words == ["curl", "-H", "Authorization: Bearer abc", "-d", '{"a": "$T"}', "x/42/y", "-i"]
    assert shell_words('''-d "{\\"t\\": \\"$T\\"}"''', env) == ["-d", '{"t": "abc"}']
    with pytest.raises(ValueError, match="unterminated"):
        shell_words("curl 'x", env)
    with pytest.raises(KeyError):
        shell_words("curl $NOPE", env)
    assert _open_quote("""curl -d '{"a":""")
    assert not _open_quote("""curl -d '{"a": 1}' -H "x\\"y" """)


def test_curl_translation() -> None:
    call = parse_curl(
        shell_words(
            "curl -i -X PATCH http://127.0.0.1:8000/api/x?a=1 -H 'If-Match: \"e\"' -d username=a -d password=b",
            {},
        ),
        {},
    )
    assert (call.method, call.path, call.include) == ("PATCH", "/api/x?a=1", True)
    assert call.headers == {"If-Match": '"e"', "Content-Type": "application/x-www-form-urlencoded"}
    assert call.content == b"username=a&password=b"
    upload = parse_curl(["curl", "-F", "file=@c.csv;type=text/csv", f"{BASE_URL}/up"], {"c.csv": b"x"})
    assert (upload.method, upload.files) == ("POST", {"file": ("c.csv", b"x", "text/csv")})
    with pytest.raises(pytest.fail.Exception):
        parse_curl(["curl", "--insecure", f"{BASE_URL}/"], {})
    download = parse_curl(["curl", "-sS", "-D", "-", "-o", "a.zip", f"{BASE_URL}/x"], {})
    assert (download.include, download.output_file) == (True, "a.zip")


def test_jq_paths() -> None:
    value = {"a": {"b": 1}, "items": [{"id": "x"}, {"id": "y"}]}
    assert jq_path(value, ".a.b") == 1
    assert jq_path(value, ".items[1].id") == jq_path(value["items"], ".[1].id") == "y"
    assert _ASSIGN_CURL.match("S=$(curl -s x | jq -r '.[0].id')").group(3) == ".[0].id"  # type: ignore[union-attr]


def test_json_matching_is_strict_where_it_documents() -> None:
    match_json({"a": 1, "id": "x", "b": "…"}, {"a": 1, "id": "y", "b": [1], "c": 3})
    match_json({"detail": "Contact … not found"}, {"detail": "Contact 42 not found"})
    for expected, actual in [
        ({"a": 1}, {"a": 2}),
        ({"a": 1}, {}),
        ([1], [1, 2]),
        ({"id": "x"}, {"id": 1}),
        ({"d": "a…"}, {"d": "b"}),
    ]:
        with pytest.raises(AssertionError):
            match_json(expected, actual)


def test_every_guide_page_is_checked() -> None:
    """A guide page with curl examples must be listed in PAGES, or its examples would go untested."""
    with_curl = {p.stem for p in DOCS.glob("*.rst") if "$ curl" in p.read_text(encoding="utf-8")}
    with_curl |= {p.stem for p in DOCS.glob("*.rst") if "=$(curl" in p.read_text(encoding="utf-8")}
    assert with_curl <= set(PAGES), f"add {sorted(with_curl - set(PAGES))} to PAGES"
