"""The API docs pages in a real browser: operations grouped by sub-app, opened to their schema,
example and curl line, under the kernel's Content-Security-Policy (no script, no CDN)."""

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from .conftest import PageLog

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(site: TestServer) -> TestServer:
    return site


async def test_an_apis_docs_page_opens_an_operation_to_its_schema_and_curl(page: Page, page_log: PageLog) -> None:
    await page.goto("/polls/api/docs")
    await expect(page.get_by_role("heading", level=1)).to_have_text("API: Nestor: polls.api")
    operation = page.locator('details[id="polls:api:questions.post"]')
    await operation.locator("summary").click()
    await expect(operation.locator("pre.example")).to_contain_text('"Which database do you use?"')
    await expect(operation.locator("pre.curl")).to_contain_text(
        f"curl -X POST '{page_log.origin}/polls/api/questions' -H 'Content-Type: application/json'"
    )
    await expect(operation.locator("pre.schema")).to_contain_text('"minItems": 2')
    page_log.assert_clean()


async def test_home_links_each_apis_docs(page: Page, page_log: PageLog) -> None:
    await page.goto("/")
    await page.get_by_role("link", name="polls.api docs").click()
    await expect(page).to_have_url(f"{page_log.origin}/polls/api/docs")
    page_log.assert_clean()


async def test_the_whole_trees_docs_are_linked_from_home_and_routes(page: Page, page_log: PageLog) -> None:
    await page.goto("/")
    await page.get_by_role("link", name="API docs", exact=True).click()
    await expect(page.locator("section.api-group[data-group]")).not_to_have_count(0)
    groups = await page.locator("section.api-group").evaluate_all("s => s.map(g => g.dataset.group)")
    assert {"polls.api", "chat.api", "monitor.api"} <= set(groups)
    await page.goto("/routes")
    await page.get_by_role("link", name="API docs").click()
    await expect(page).to_have_url(f"{page_log.origin}/docs")
    page_log.assert_clean()
