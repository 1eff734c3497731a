"""Every HTML page a user reaches, audited by axe-core in a real browser: nothing critical or serious.

axe-core is the copy bundled with axe-playwright-python, evaluated in the page by Playwright
(nothing is fetched, and no page script is added, so the CSP stays as it is). Each page is
audited with content in it (a question with a vote, a chat message, a monitor check) and
once its live connection, if it has one, is open. Moderate and minor findings do not fail.
"""

import re
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, expect
from pytest_aiohttp import AiohttpServer

from ..conftest import MakeApp
from .conftest import PageLog, serve_site

pytestmark = pytest.mark.e2e

SUBAPPS = ["polls", "chat", "monitor", "hello", "admin"]
TOKEN = "admin-token-for-the-e2e-tests-4b1d"
BLOCKING = ("critical", "serious")
LIVE = re.compile(r"\bon\b")  # the class the live scripts set on their status line once connected
AXE = Axe()


@pytest.fixture
async def server(make_app: MakeApp) -> AsyncIterator[TestServer]:
    """Every first-party sub-app, the admin enabled with TOKEN."""
    async with serve_site(make_app, SUBAPPS, admin_token=TOKEN) as server:
        yield server


@pytest.fixture
async def content(page: Page) -> None:
    """Give the pages something to show: a vote on sample question 1, a message in lobby, a check."""
    response = await page.request.get("/polls/api/questions/1")  # the polls sub-app seeds samples
    assert response.status == 200, await response.text()
    choice = (await response.json())["choices"][0]["id"]
    response = await page.request.post("/polls/api/questions/1/votes", data={"choice": choice})
    assert response.status == 201, await response.text()
    response = await page.request.post("/chat/api/rooms/lobby/messages", data={"name": "Ada", "text": "Hello"})
    assert response.status == 201, await response.text()
    # With an admin token set, a manual check needs it (the monitor sends no request for anyone).
    response = await page.request.post("/monitor/api/targets/nestor/check", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 202, await response.text()


async def assert_accessible(page: Page) -> None:
    """Fail listing every critical or serious axe-core violation on the page as it is now."""
    live = page.locator("#live-status, #chat-status")  # a page with a websocket is audited connected
    if await live.count():
        await expect(live).to_have_class(LIVE)
    results = await AXE.run(page)
    blocking = [v for v in results.response["violations"] if v["impact"] in BLOCKING]
    lines = [f"{page.url}: {len(blocking)} critical or serious axe-core violation(s)"]
    for violation in blocking:
        lines.append(f"  {violation['id']} ({violation['impact']}): {violation['help']}")
        lines += [f"    {' '.join(node['target'])}" for node in violation["nodes"]]
    assert blocking == [], "\n".join(lines)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/routes", 200),
        ("/routes?q=polls", 200),
        ("/routes/explain?path=/polls/1", 200),
        ("/routes/explain?method=POST&path=/nope", 200),
        ("/nope", 404),
        ("/polls/", 200),
        ("/polls/new", 200),
        ("/polls/1", 200),
        ("/polls/1/results", 200),
        ("/chat/", 200),
        ("/chat/?room=Not+a+room!", 400),
        ("/chat/lobby", 200),
        ("/monitor/", 200),
        ("/monitor/nestor", 200),
        ("/hello/", 200),
        ("/docs", 200),
        ("/polls/api/docs", 200),
        ("/admin/login", 200),
    ],
)
@pytest.mark.usefixtures("content")
async def test_page_has_no_serious_accessibility_violation(
    page: Page, page_log: PageLog, path: str, status: int
) -> None:
    response = await page.goto(path)
    assert response is not None and response.status == status
    await assert_accessible(page)
    page_log.assert_clean(document_status=status if status >= 400 else None)


@pytest.mark.parametrize("path", ["/admin/", "/admin/config", "/admin/routes"])
async def test_admin_page_has_no_serious_accessibility_violation(page: Page, page_log: PageLog, path: str) -> None:
    await page.goto(f"/admin/login?next={path}")
    await page.get_by_label("Admin token").fill(TOKEN)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(page_log.origin + path)
    await assert_accessible(page)
    page_log.assert_clean()


async def submit_refused(page: Page, page_log: PageLog, button: str, status: int) -> None:
    """Submit the page's form with `button`; expect the form back as a `status` page saying why."""
    page_log.expect_document_status(status)
    async with page.expect_navigation() as refused:
        await page.get_by_role("button", name=button).click()
    assert (await refused.value).status == status
    await expect(page.get_by_role("alert").first).to_be_visible()


async def test_refused_new_question_form_has_no_serious_accessibility_violation(page: Page, page_log: PageLog) -> None:
    await page.goto("/polls/new")
    await submit_refused(page, page_log, "Save the question", 400)
    await assert_accessible(page)
    page_log.assert_clean(document_status=400)


@pytest.mark.usefixtures("content")
async def test_refused_vote_has_no_serious_accessibility_violation(page: Page, page_log: PageLog) -> None:
    await page.goto("/polls/1")
    # The radios are `required`: post without a choice, as a client that skips validation can.
    await page.locator("form.vote").evaluate("form => { form.noValidate = true; }")
    await submit_refused(page, page_log, "Vote", 400)
    await assert_accessible(page)
    page_log.assert_clean(document_status=400)


async def test_refused_admin_login_has_no_serious_accessibility_violation(page: Page, page_log: PageLog) -> None:
    await page.goto("/admin/login")
    await page.get_by_label("Admin token").fill("not-the-token")
    await submit_refused(page, page_log, "Log in", 403)
    await assert_accessible(page)
    page_log.assert_clean(document_status=403)


class TestMonitorStates:
    """The monitor's pages with a target in each state: up, down, and unknown (never answered yet)."""

    @pytest.fixture
    def silent(self) -> Iterator[str]:
        """Return the URL of a socket that takes connections and never answers: checks of it hang."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            yield f"http://127.0.0.1:{sock.getsockname()[1]}/"

    @pytest.fixture
    async def server(self, aiohttp_server: AiohttpServer, make_app: MakeApp, silent: str) -> TestServer:
        """Nestor with only the monitor, watching an up, a down and a silent target."""

        async def answer(request: web.Request) -> web.Response:
            return web.Response(status=int(request.match_info["status"]), text="svc")

        svc = web.Application()
        svc.router.add_get(r"/{status:\d+}", answer)
        svc_server = await aiohttp_server(svc)
        targets = [
            {"name": "up", "url": str(svc_server.make_url("/200"))},
            {"name": "down", "url": str(svc_server.make_url("/500"))},
            {"name": "unknown", "url": silent, "timeout": 300},
        ]
        return await aiohttp_server(make_app({"nestor": {"subapps": ["monitor"], "targets": targets}}, specs=[]))

    @pytest.mark.parametrize(
        ("path", "shown"), [("/monitor/", "unknown"), ("/monitor/down", "down"), ("/monitor/unknown", "unknown")]
    )
    async def test_page_has_no_serious_accessibility_violation(
        self, page: Page, page_log: PageLog, path: str, shown: str
    ) -> None:
        for target, state in [("up", "up"), ("down", "down")]:
            response = await page.request.post(f"/monitor/api/targets/{target}/check")
            assert response.status == 202, await response.text()
            assert (await response.json())["state"] == state
        await page.goto(path)
        await expect(page.locator(f".state-{shown}").first).to_be_visible()
        await assert_accessible(page)
        page_log.assert_clean()
