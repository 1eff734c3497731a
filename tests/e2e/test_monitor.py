"""The monitor dashboard in a real browser: it watches this server's own /health, live.

With no `targets` configured the monitor checks Nestor's own /health (target `nestor`),
first after a one-second grace, then every 30 s; a check asked for through the API is
recorded and published at once, which is how these tests cause an update on demand.
"""

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Locator, Page, WebSocketRoute, expect
from pytest_aiohttp import AiohttpServer

from ..conftest import MakeApp
from .conftest import PageLog

pytestmark = pytest.mark.e2e

LIVE = re.compile(r"\bon\b")  # the class monitor.js sets on #live-status while its websocket is open
FIRST_CHECK_MS = 10_000  # the first scheduled check comes about a second after start-up
CHECKED = re.compile(r"[1-9]\d*")  # data-last-id once the target has a check


@pytest.fixture
def server(site: TestServer) -> TestServer:
    """Nestor with monitor (plus polls and chat), watching its own /health."""
    return site


async def check_now(page: Page) -> dict[str, Any]:
    """Ask for a check of `nestor` through the API; return the recorded check."""
    response = await page.request.post("/monitor/api/targets/nestor/check")
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["state"] == "up", body
    return body["check"]


async def checks_recorded(page: Page, target: str, count: int) -> None:
    """Wait (up to 10 s) until the API lists at least `count` checks of `target`."""
    for _ in range(200):
        response = await page.request.get(f"/monitor/api/targets/{target}/checks")
        assert response.status == 200
        if len((await response.json())["items"]) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{target} has fewer than {count} checks after 10 s")


async def first_check_shown(page: Page, target: Locator) -> None:
    """Wait until the page is live and shows the scheduled first check, then mark the page."""
    await expect(page.locator("#live-status")).to_have_class(LIVE)
    await expect(target).to_have_attribute("data-last-id", CHECKED, timeout=FIRST_CHECK_MS)
    await page.evaluate("window.notReloaded = true")


async def test_dashboard_shows_own_health_going_up_live(page: Page, page_log: PageLog) -> None:
    response = await page.goto("/monitor/")
    assert response is not None and response.status == 200
    rows = page.locator("tr.target")
    await expect(rows).to_have_count(1)
    row = page.locator('tr.target[data-target="nestor"]')
    await expect(row.get_by_role("link", name="nestor")).to_have_attribute("href", "/monitor/nestor")
    await expect(row.locator(".url")).to_have_text(page_log.origin + "/health")
    await expect(page.locator("#live-status")).to_have_text("Live: checks appear as they happen.")
    await expect(page.locator("#live-status")).to_have_class(LIVE)
    # The first check runs about a second after start-up: shown as rendered, or as it arrives.
    await expect(row.locator(".state-cell")).to_have_text("up", timeout=FIRST_CHECK_MS)
    await expect(row.locator("td.latency")).to_have_text(re.compile(r"^\d+ ms$"))
    page_log.assert_clean()


async def test_new_check_appears_on_open_dashboard_without_reload(page: Page, page_log: PageLog) -> None:
    await page.goto("/monitor/")
    row = page.locator('tr.target[data-target="nestor"]')
    await first_check_shown(page, row)

    check = await check_now(page)

    await expect(row).to_have_attribute("data-last-id", str(check["id"]))
    await expect(row.locator(".checked time")).to_have_attribute("datetime", check["checked_at"])
    await expect(row.locator(".state-cell")).to_have_text("up")
    assert await page.evaluate("window.notReloaded") is True
    page_log.assert_clean()


async def test_target_page_adds_new_check_to_recent_checks_without_reload(page: Page, page_log: PageLog) -> None:
    await page.goto("/monitor/")
    await page.get_by_role("link", name="nestor", exact=True).click()
    await expect(page).to_have_url(page_log.origin + "/monitor/nestor")
    target = page.locator('#monitor > .target[data-target="nestor"]')
    await expect(target.locator(".mono")).to_have_text(page_log.origin + "/health")
    await first_check_shown(page, target)
    checks = page.locator("tbody.checks > tr")
    shown = await checks.count()

    check = await check_now(page)

    await expect(checks).to_have_count(shown + 1)
    await expect(checks.first.locator("time")).to_have_attribute("datetime", check["checked_at"])
    await expect(checks.first.locator("td")).to_have_text([re.compile(r"UTC$"), "up", "200", re.compile(r"^\d+ ms$"), "ok"])
    assert await page.evaluate("window.notReloaded") is True
    page_log.assert_clean()


async def test_chart_label_and_latency_cell_follow_a_new_check_live(page: Page, page_log: PageLog) -> None:
    await page.goto("/monitor/")
    row = page.locator('tr.target[data-target="nestor"]')
    await first_check_shown(page, row)
    chart = row.locator("svg.chart")
    label = re.compile(r"^nestor: latency of the last (\d+) checks, up to \d+ ms$")
    await expect(chart).to_have_attribute("aria-label", label)
    shown = int(label.fullmatch(await chart.get_attribute("aria-label") or "")[1])

    check = await check_now(page)

    await expect(row).to_have_attribute("data-last-id", str(check["id"]))
    await expect(chart).to_have_attribute("aria-label", re.compile(rf"^nestor: latency of the last {shown + 1} checks, "))
    await expect(row.locator("td.latency")).to_have_text(f"{int(check['latency_ms'] + 0.5)} ms")
    await expect(chart).to_have_text("")  # the latency is written in its cell, not into the drawing
    points = (await chart.locator("polyline").get_attribute("points") or "").split()
    assert len(points) == shown + 1
    page_log.assert_clean()


class TestTargetThatGoesDown:
    """The dashboard of a monitor watching `svc`, a local server the test turns up or down."""

    @pytest.fixture
    async def svc(self, aiohttp_server: AiohttpServer) -> tuple[TestServer, list[int]]:
        """A target on 127.0.0.1 answering with the last status of its list."""
        statuses = [200]

        async def answer(request: web.Request) -> web.Response:
            return web.Response(status=statuses[-1], text="svc")

        app = web.Application()
        app.router.add_get("/", answer)
        return await aiohttp_server(app), statuses

    @pytest.fixture
    async def server(
        self, aiohttp_server: AiohttpServer, make_app: MakeApp, svc: tuple[TestServer, list[int]]
    ) -> TestServer:
        """Nestor with only the monitor, checking `svc` at start-up and then only when asked."""
        target = {"name": "svc", "url": str(svc[0].make_url("/")), "interval": 86400, "timeout": 5}
        tables = {"nestor": {"subapps": ["monitor"]}, "monitor": {"targets": [target]}}
        return await aiohttp_server(make_app(tables, specs=[]))

    @pytest.fixture
    async def release(self, page: Page) -> AsyncIterator[asyncio.Event]:
        """Hold the page's live websocket: it connects once the returned event is set."""
        release = asyncio.Event()

        async def connect_when_released(socket: WebSocketRoute) -> None:
            await release.wait()
            socket.connect_to_server()

        await page.route_web_socket(re.compile(r"/monitor/ws$"), connect_when_released)
        try:
            yield release
        finally:
            release.set()  # a failed test must not leave the handler waiting

    @staticmethod
    async def open_dashboard_then_go_down(page: Page, svc: tuple[TestServer, list[int]]) -> Locator:
        """Open the dashboard showing `svc` up, then make it fail a check; return its row."""
        await checks_recorded(page, "svc", 1)  # the start-up check, up
        await page.goto("/monitor/")
        row = page.locator('tr.target[data-target="svc"]')
        await expect(row.locator(".uptime-hour")).to_have_text("100.00 %")
        svc[1].append(500)
        response = await page.request.post("/monitor/api/targets/svc/check")
        assert response.status == 202
        assert (await response.json())["state"] == "down"
        return row

    async def test_check_made_while_page_connects_shows_its_uptime(
        self, page: Page, page_log: PageLog, svc: tuple[TestServer, list[int]], release: asyncio.Event
    ) -> None:
        row = await self.open_dashboard_then_go_down(page, svc)
        release.set()
        await expect(row.locator(".state-cell")).to_have_text("down")
        # The same message that says "down" says the new uptime: no wait is needed.
        await expect(row.locator(".uptime-hour")).to_have_text("50.00 %", timeout=1000)
        page_log.assert_clean()

    async def test_change_made_while_page_connects_is_listed(
        self, page: Page, page_log: PageLog, svc: tuple[TestServer, list[int]], release: asyncio.Event
    ) -> None:
        await self.open_dashboard_then_go_down(page, svc)
        changes = page.locator("#changes > li")
        await expect(changes).to_have_text(["No target has changed state yet."])
        release.set()
        await expect(page.locator("#live-status")).to_have_class(LIVE)
        await expect(changes).to_have_count(1)
        await expect(changes.first).to_contain_text("svc up → down")
        page_log.assert_clean()
