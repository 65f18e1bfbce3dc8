"""End-to-end fixtures: the service on a real port, an SMTP sink, and headless Chromium.

The browser is the system's Chromium (Debian packages ``chromium`` and ``chromium-driver``,
installed by ``.ci/browser``); Playwright drives it and never downloads one. Every test here
is marked ``browser`` and skipped when ``/usr/bin/chromium`` is missing.

The server is uvicorn in a thread of the test process (so coverage sees the code it runs),
with the same settings as the rest of the suite (SQLite file or PostgreSQL + Redis), links in
mails pointing at it, and mail going over SMTP to the suite's aiosmtpd sink (``smtp_server``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import uvicorn

from app.config import Settings
from app.main import create_app
from tests.conftest import SmtpServer, SmtpSink

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


async def mail_to(smtp: SmtpServer, address: str, subject_word: str, timeout: float = 15.0) -> EmailMessage:
    """The first mail to ``address`` whose subject has ``subject_word`` (mail goes out in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        for message in smtp.sink.to(address):
            if subject_word.lower() in str(message["Subject"]).lower():
                return message
        if time.monotonic() > deadline:
            got = [(str(m["To"]), str(m["Subject"])) for m in smtp.messages]
            raise AssertionError(f"no mail to {address} about {subject_word!r}; got {got}")
        await asyncio.sleep(0.05)


def link_in(message: EmailMessage, path_part: str) -> str:
    """The first link in the mail's plain-text part whose URL contains ``path_part``."""
    for url in SmtpSink.links(message):
        if path_part in url:
            return url
    raise AssertionError(f"no link containing {path_part!r} in:\n{SmtpSink.text(message)}")


# --------------------------------------------------------------------------- server


@dataclass
class LiveServer:
    """The service listening on ``url``."""

    url: str
    settings: Settings
    smtp: SmtpServer


@pytest.fixture
def live_server(settings: Settings, smtp_server: SmtpServer) -> Iterator[LiveServer]:
    """The whole application served by uvicorn on 127.0.0.1, in a background thread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    live_settings = msgspec.structs.replace(settings, public_base_url=url, **smtp_server.settings)
    config = uvicorn.Config(create_app(live_settings), log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    yield LiveServer(url=url, settings=live_settings, smtp=smtp_server)
    server.should_exit = True
    thread.join(timeout=15)
    sock.close()


# --------------------------------------------------------------------------- browser


@dataclass
class PageWatch:
    """What a page did: console errors and every request to another origin (blocked)."""

    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


@asynccontextmanager
async def _chromium_page(
    live_server: LiveServer, **context_options: Any
) -> AsyncIterator[tuple[Page, PageWatch]]:
    """A page of a fresh headless Chromium that may reach only the service.

    Requests to any other origin are recorded and aborted, so a test sees them and no test ever
    reaches the network; console errors (CSP violations among them) are recorded too.
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
        context = await browser.new_context(viewport=DESKTOP, service_workers="block", **context_options)
        await context.route("**/*", guard)
        page = await context.new_page()
        page.on(
            "console", lambda message: watch.errors.append(message.text) if message.type == "error" else None
        )
        page.on("pageerror", lambda error: watch.errors.append(f"page error: {error}"))
        yield page, watch
        await context.close()
        await browser.close()


@pytest.fixture
async def browser_page(live_server: LiveServer) -> AsyncIterator[tuple[Page, PageWatch]]:
    """A page of a fresh headless Chromium that may reach only the service.

    The async API, because Playwright's sync API claims the thread's event loop for its whole
    life and the suite's async fixtures need it.
    """
    async with _chromium_page(live_server) as page_and_watch:
        yield page_and_watch


@pytest.fixture
async def audit_page(live_server: LiveServer) -> AsyncIterator[tuple[Page, PageWatch]]:
    """Like ``browser_page``, but the pages' CSP is bypassed so that axe-core can be injected.

    Only for the accessibility audit (``tests/browser/axe.py``): a test of the CSP itself needs
    ``browser_page``.
    """
    async with _chromium_page(live_server, bypass_csp=True) as page_and_watch:
        yield page_and_watch


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
