"""Real-browser fixtures: a real Nestor server on 127.0.0.1 and headless Debian Chromium.

`page` is a Playwright page on that server (relative paths work: `page.goto("/routes")`).
`page_log` records what the page's browser complained about: console errors (CSP violations
land there), uncaught page errors, and every request that left the server's origin; tests end
with `page_log.assert_clean()`. When a test fails, a screenshot of its page is saved under
pytest's temp dir and its path is listed at the end of the run.

`site` is a server with the polls, chat and monitor sub-apps (a test file uses it by
overriding `server`; `serve_site()` serves another choice of sub-apps the same way);
`open_page()` opens one more page as another user (its own browser context: cookies,
storage), with its own PageLog and the same screenshot on failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    Request,
    Response,
    async_playwright,
)
from pytest_aiohttp import AiohttpServer

from ..conftest import MakeApp

CHROMIUM = Path("/usr/bin/chromium")
# Root runs need --no-sandbox; the rest keep Chromium from calling Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000


@dataclass
class PageLog:
    """What went wrong while a page browsed the server."""

    page: Page
    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    expected_statuses: list[int] = field(default_factory=list)  # of error pages to load on purpose, not yet loaded
    error_pages: list[tuple[str, int]] = field(default_factory=list)  # (url, status) loaded, console error not yet seen

    @classmethod
    def watch(cls, page: Page, origin: str) -> PageLog:
        """Return a PageLog recording what goes wrong on `page` from now on."""
        log = cls(page=page, origin=origin)
        page.on("console", log.on_console)
        page.on("pageerror", log.on_page_error)
        page.on("request", log.on_request)
        page.on("response", log.on_response)
        return log

    def expect_document_status(self, status: int) -> None:
        """Announce that the next page load answering `status` is an error page loaded on purpose.

        Chromium logs that load as a console error: that one error is not a failure. Call it
        before the navigation; `assert_clean` fails if no page load answered `status`.
        """
        self.expected_statuses.append(status)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "?")
        for loaded in self.error_pages:
            if loaded[0] == url and f"the server responded with a status of {loaded[1]} " in message.text:
                self.error_pages.remove(loaded)  # the one error an expected error page causes
                return
        self.console_errors.append(f"{message.text} at {url}")

    def on_page_error(self, error: Error) -> None:
        self.page_errors.append(str(error))

    def on_request(self, request: Request) -> None:
        url = request.url
        if not (url.startswith(self.origin + "/") or url.startswith("data:")):
            self.outside_requests.append(url)

    def on_response(self, response: Response) -> None:
        # Arrives before the console error that the load causes (the error page logs it).
        if response.status in self.expected_statuses and response.request.is_navigation_request():
            self.expected_statuses.remove(response.status)
            self.error_pages.append((response.url, response.status))

    def assert_clean(self, document_status: int | None = None) -> None:
        """Fail on console errors (CSP violations included), page errors, or outside requests.

        `document_status`: the current page is an error page with this status on purpose;
        Chromium logs that one failed load as a console error, and only that one is allowed.
        The error pages announced with `expect_document_status` must have loaded.
        """
        errors = self.console_errors
        if document_status is not None:
            expected = f"the server responded with a status of {document_status} "
            errors = [e for e in errors if not (expected in e and e.endswith(f" at {self.page.url}"))]
        assert errors == []
        assert self.page_errors == []
        assert self.outside_requests == []
        assert self.expected_statuses == [], "expect_document_status(): no page load answered these statuses"


CALL_REPORT = pytest.StashKey[pytest.TestReport]()
PAGE_LOG = pytest.StashKey[PageLog]()
SCREENSHOTS = pytest.StashKey[list[str]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Keep the call phase's outcome: the page fixture's teardown takes a screenshot on failure.
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    shots = terminalreporter.config.stash.get(SCREENSHOTS, [])
    if shots:
        terminalreporter.section("e2e screenshots of failed tests")
        for line in shots:
            terminalreporter.write_line(line)


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, make_app: MakeApp) -> TestServer:
    """A real Nestor on 127.0.0.1: the hello sub-app plus the sample tree (/a, /a/api, /b)."""
    return await aiohttp_server(make_app({"nestor": {"subapps": ["hello"]}}))


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; in CI a skipped browser suite is a failure", pytrace=False)
        pytest.skip(reason)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


OpenPage = Callable[[], Awaitable[tuple[Page, PageLog]]]


@pytest.fixture
async def open_page(
    browser: Browser,
    server: TestServer,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[OpenPage]:
    """Return `await open_page()`: a page in a new browser context (another user) and its PageLog.

    Each context is closed after the test (a screenshot of its page first, if the test failed).
    """
    origin = str(server.make_url("/")).rstrip("/")
    opened: list[tuple[BrowserContext, Page]] = []

    async def open_one() -> tuple[Page, PageLog]:
        context = await browser.new_context(base_url=origin)
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        opened.append((context, page))
        return page, PageLog.watch(page, origin)

    try:
        yield open_one
    finally:
        report = request.node.stash.get(CALL_REPORT, None)
        for context, page in opened:
            if report is not None and report.failed:
                await _screenshot(page, request, tmp_path_factory)
            await context.close()


@pytest.fixture
async def page(open_page: OpenPage, request: pytest.FixtureRequest) -> Page:
    """A fresh page whose relative URLs go to the server; its problems go to `page_log`."""
    page, request.node.stash[PAGE_LOG] = await open_page()
    return page


@pytest.fixture
def page_log(page: Page, request: pytest.FixtureRequest) -> PageLog:
    """The console errors, page errors and outside requests of the test's `page`."""
    return request.node.stash[PAGE_LOG]


async def _screenshot(page: Page, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    path = tmp_path_factory.mktemp(f"screenshot-{safe_name}") / "page.png"
    try:
        await page.screenshot(path=path, full_page=True)
    except Error as e:  # a crashed page must not hide the test's own failure
        request.config.stash.setdefault(SCREENSHOTS, []).append(f"{request.node.nodeid}: no screenshot ({e})")
        return
    request.config.stash.setdefault(SCREENSHOTS, []).append(f"{request.node.nodeid}: {path}")


SITE_SUBAPPS = ["polls", "chat", "monitor"]


@contextlib.asynccontextmanager
async def serve_site(make_app: MakeApp, subapps: list[str], **settings: Any) -> AsyncIterator[TestServer]:
    """Serve Nestor with `subapps` (by name) and `[nestor]` `settings` on 127.0.0.1 until exit.

    Its socket is bound before the app is built, so the `port` setting is the real one and
    the monitor's default target is this server's own /health.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        app = make_app({"nestor": {**settings, "subapps": subapps, "port": port}}, specs=[])
        server = TestServer(app, port=port, socket_factory=lambda host, port, family: sock)
        try:
            await server.start_server()
            yield server
        finally:
            await server.close()
    finally:
        sock.close()  # already closed by the server, unless it never started


@pytest.fixture
async def site(make_app: MakeApp) -> AsyncIterator[TestServer]:
    """A real Nestor on 127.0.0.1 with polls, chat and monitor, and nothing else (see serve_site)."""
    async with serve_site(make_app, SITE_SUBAPPS) as server:
        yield server
