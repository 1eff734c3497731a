"""Error pages in a real browser: they say what happened and show the request id."""

import pytest
from playwright.async_api import Page, expect

from .conftest import PageLog

pytestmark = pytest.mark.e2e


async def test_unknown_url_shows_404_page_with_request_id(page: Page, page_log: PageLog) -> None:
    response = await page.goto("/no/such/page")
    assert response is not None and response.status == 404
    await expect(page.get_by_role("heading", level=1)).to_have_text("404 · Not Found")
    await expect(page.locator("#request-id")).to_have_text(response.headers["x-request-id"])
    await expect(page.get_by_role("link", name="every route")).to_have_attribute("href", "/routes")
    page_log.assert_clean(document_status=404)


async def test_failing_handler_shows_500_page_with_request_id_and_no_internals(page: Page, page_log: PageLog) -> None:
    response = await page.goto("/a/boom")
    assert response is not None and response.status == 500
    await expect(page.get_by_role("heading", level=1)).to_have_text("500 · Internal Server Error")
    await expect(page.locator("#request-id")).to_have_text(response.headers["x-request-id"])
    await expect(page.locator("body")).not_to_contain_text("secret internals")
    page_log.assert_clean(document_status=500)
