"""The kernel's Content-Security-Policy in a real browser: first-party pages satisfy it, and it bites.

A CSP violation is a console error, so `page_log.assert_clean()` fails on any.
"""

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect
from pytest_aiohttp import AiohttpServer

from nestor import SubApp
from nestor.middleware import SECURITY_HEADERS

from ..conftest import MakeApp
from ..fixtures.tree import sample_specs
from .conftest import PageLog

pytestmark = pytest.mark.e2e

INLINE_PAGE = """<!doctype html><html><head><title>untouched</title>
<link rel="icon" href="data:,"></head>
<body><p id="styled" style="color: rgb(255, 0, 0)">inline style</p>
<script>document.title = "inline script ran";</script></body></html>"""


async def inline(request: web.Request) -> web.Response:
    return web.Response(text=INLINE_PAGE, content_type="text/html")


def create_inline() -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/", inline, name="index")])
    return app


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, make_app: MakeApp) -> TestServer:
    """The usual e2e tree plus /inline, a page that breaks the CSP with inline script and style."""
    specs = [*sample_specs(), SubApp(name="inline", prefix="/inline", factory=create_inline)]
    return await aiohttp_server(make_app({"nestor": {"subapps": ["hello"]}}, specs=specs))


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/routes", 200),
        ("/routes?q=api", 200),
        ("/routes/explain?method=GET&path=/a/items/3", 200),
        ("/routes/explain?method=POST&path=/a/", 200),
        ("/hello/", 200),
        ("/hello/?name=Ada", 200),
        ("/routes/explain?method=GET&path=no-slash", 400),
        ("/no/such/page", 404),
        ("/a/boom", 500),
    ],
)
async def test_first_party_page_satisfies_csp(page: Page, page_log: PageLog, path: str, status: int) -> None:
    response = await page.goto(path)
    assert response is not None and response.status == status
    assert response.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    # nestor.css sets this background: the stylesheet loaded under the policy.
    await expect(page.locator("body")).to_have_css("background-color", "rgb(247, 248, 250)")
    page_log.assert_clean(document_status=status if status >= 400 else None)


async def test_csp_blocks_inline_script_and_style_and_reports_it(page: Page, page_log: PageLog) -> None:
    response = await page.goto("/inline/")
    assert response is not None and response.status == 200
    assert await page.title() == "untouched"
    await expect(page.locator("#styled")).not_to_have_css("color", "rgb(255, 0, 0)")
    assert len(page_log.console_errors) == 2
    assert all("Content Security Policy" in e for e in page_log.console_errors)
    assert page_log.outside_requests == []
