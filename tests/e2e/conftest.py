"""Real-browser fixtures: a real Nestor server on 127.0.0.1 and headless Debian Chromium.

`page` is a Playwright page on that server (relative paths work: `page.goto("/routes")`).
`page_log` records what the page's browser complained about: console errors (CSP violations
land there), uncaught page errors, and every request that left the server's origin; tests end
with `page_log.assert_clean()`. When a test fails, a screenshot of its page is saved under
pytest's temp dir and its path is listed at the end of the run.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, ConsoleMessage, Error, Page, Request, async_playwright
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

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} at {message.location.get('url', '?')}")

    def on_page_error(self, error: Error) -> None:
        self.page_errors.append(str(error))

    def on_request(self, request: Request) -> None:
        url = request.url
        if not (url.startswith(self.origin + "/") or url.startswith("data:")):
            self.outside_requests.append(url)

    def assert_clean(self, document_status: int | None = None) -> None:
        """Fail on console errors (CSP violations included), page errors, or outside requests.

        `document_status`: the current page is an error page with this status on purpose;
        Chromium logs that one failed load as a console error, and only that one is allowed.
        """
        errors = self.console_errors
        if document_status is not None:
            expected = f"the server responded with a status of {document_status} "
            errors = [e for e in errors if not (expected in e and e.endswith(f" at {self.page.url}"))]
        assert errors == []
        assert self.page_errors == []
        assert self.outside_requests == []


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
    return await aiohttp_server(make_app({"nestor": {"subapps": ["subapps.hello"]}}))


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


@pytest.fixture
async def page(
    browser: Browser,
    server: TestServer,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Page]:
    """A fresh page whose relative URLs go to the server; its problems go to `page_log`."""
    origin = str(server.make_url("/")).rstrip("/")
    context = await browser.new_context(base_url=origin)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    log = request.node.stash[PAGE_LOG] = PageLog(page=page, origin=origin)
    page.on("console", log.on_console)
    page.on("pageerror", log.on_page_error)
    page.on("request", log.on_request)
    try:
        yield page
    finally:
        report = request.node.stash.get(CALL_REPORT, None)
        if report is not None and report.failed:
            await _screenshot(page, request, tmp_path_factory)
        await context.close()


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
