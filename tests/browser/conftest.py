"""End-to-end fixtures: the service on a real port, an SMTP sink, and headless Chromium.

The browser is the system's Chromium (Debian packages ``chromium`` and ``chromium-driver``,
installed by ``.ci/browser``); Playwright drives it and never downloads one. Every test here
is marked ``browser`` and skipped when ``/usr/bin/chromium`` is missing.

The server is uvicorn in a thread of the test process (so coverage sees the code it runs),
with the same settings as the rest of the suite (SQLite file or PostgreSQL + Redis), links in
mails pointing at it, and mail going over SMTP to an aiosmtpd server started by the test.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import uvicorn
from aiosmtpd.controller import Controller

from app.config import Settings
from app.main import create_app

if TYPE_CHECKING:
    from playwright.async_api import Page, Route

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the browser tests cleanly where there is no Chromium (or no Playwright)."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (bash .ci/browser installs it)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:  # pragma: no cover - playwright is a dev dependency
            reason = "playwright is not installed"
    if reason:
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


# --------------------------------------------------------------------------- mail


class _Sink:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._arrived:
            self.messages.append(message)  # type: ignore[arg-type]
            self._arrived.notify_all()
        return "250 OK"

    def wait_for(self, to: str, subject_word: str, timeout: float = 15.0) -> EmailMessage:
        """The first mail to ``to`` whose subject contains ``subject_word`` (case-insensitive)."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for message in self.messages:
                    if (
                        to.lower() in str(message["To"]).lower()
                        and subject_word.lower() in str(message["Subject"]).lower()
                    ):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    subjects = [(str(m["To"]), str(m["Subject"])) for m in self.messages]
                    raise AssertionError(f"no mail to {to} about {subject_word!r}; got {subjects}")
                self._arrived.wait(remaining)


def link_in(message: EmailMessage, path_part: str) -> str:
    """The first link in the mail's plain-text body whose URL contains ``path_part``."""
    body = message.get_body(preferencelist=("plain",))
    assert body is not None, "the mail has no text/plain part"
    text = body.get_content()
    for url in re.findall(r"https?://\S+", text):
        if path_part in url:
            return url.rstrip(".,)>\"'")
    raise AssertionError(f"no link containing {path_part!r} in:\n{text}")


@pytest.fixture
def smtp() -> Iterator[_Sink]:
    """An SMTP server on a free local port, collecting the mails the service sends."""
    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=_free_port())
    controller.start()
    sink.port = controller.port  # type: ignore[attr-defined]
    yield sink
    controller.stop()


# --------------------------------------------------------------------------- server


@dataclass
class LiveServer:
    """The service listening on ``url``."""

    url: str
    settings: Settings
    smtp: _Sink
    extra: dict[str, Any] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_server(settings: Settings, smtp: _Sink) -> Iterator[LiveServer]:
    """The whole application served by uvicorn on 127.0.0.1, in a background thread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    live_settings = msgspec.structs.replace(
        settings,
        public_base_url=url,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,  # type: ignore[attr-defined]
        smtp_tls="none",
        smtp_username=None,
        smtp_password=None,
    )
    config = uvicorn.Config(create_app(live_settings), log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    yield LiveServer(url=url, settings=live_settings, smtp=smtp)
    server.should_exit = True
    thread.join(timeout=15)
    sock.close()


# --------------------------------------------------------------------------- browser


@dataclass
class PageWatch:
    """What a page did: console errors and every request to another origin (blocked)."""

    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


@pytest.fixture
async def browser_page(live_server: LiveServer) -> AsyncIterator[tuple[Page, PageWatch]]:
    """A page of a fresh headless Chromium that may reach only the service.

    The async API, because Playwright's sync API claims the thread's event loop for its whole
    life and the suite's async fixtures need it. Requests to any other origin are recorded and
    aborted, so a test sees them and no test ever reaches the network; console errors (CSP
    violations among them) are recorded too.
    """
    from playwright.async_api import async_playwright

    watch = PageWatch()

    async def guard(route: Route) -> None:
        url = route.request.url
        if url.startswith((live_server.url + "/", "data:", "blob:")):
            await route.continue_()
        else:
            watch.foreign.append(url)
            await route.abort()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        context = await browser.new_context(viewport=DESKTOP, service_workers="block")
        await context.route("**/*", guard)
        page = await context.new_page()
        page.on(
            "console", lambda message: watch.errors.append(message.text) if message.type == "error" else None
        )
        page.on("pageerror", lambda error: watch.errors.append(f"page error: {error}"))
        yield page, watch
        await context.close()
        await browser.close()


async def screenshots(page: Page, name: str, *, full_page: bool = True) -> list[Path]:
    """Save the page at phone and desktop widths as ``test-artifacts/<name>-{phone,desktop}.png``.

    The page is left at desktop width.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    paths = []
    for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        await page.set_viewport_size(viewport)
        await page.wait_for_timeout(150)  # let the layout settle after the resize
        path = ARTIFACTS / f"{name}-{label}.png"
        await page.screenshot(path=str(path), full_page=full_page)
        paths.append(path)
    return paths
