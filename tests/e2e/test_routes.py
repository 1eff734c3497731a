"""/routes in a real browser: the listing, the filter box (routes.js) and the explain form."""

import pytest
from playwright.async_api import Page, expect

from .conftest import PageLog

pytestmark = pytest.mark.e2e

ROW_PATHS = "tr[data-route]:visible td:nth-child(2)"


async def test_routes_page_lists_every_route_grouped_by_app(page: Page, page_log: PageLog) -> None:
    response = await page.goto("/routes")
    assert response is not None and response.status == 200
    listed = await page.request.get("/routes.json")
    assert listed.status == 200
    total = len(await listed.json())
    await expect(page.locator("tr[data-route]")).to_have_count(total)
    await expect(page.locator("#route-count")).to_have_text(str(total))
    groups = await page.locator("section[data-group]").evaluate_all("s => s.map(g => g.dataset.group)")
    assert groups == ["nestor", "a", "a.api", "b", "hello", "hello.api"]
    paths = await page.locator(ROW_PATHS).all_inner_texts()
    assert {"/", "/a/items/{item_id}", "/a/api/echo", "/b/", "/hello/", "/hello/api/greeting"} <= set(paths)
    page_log.assert_clean()


async def test_typing_in_filter_narrows_rows_and_hides_empty_groups(page: Page, page_log: PageLog) -> None:
    await page.goto("/routes")
    await page.get_by_label("Filter").press_sequentially("items")
    await expect(page.locator(ROW_PATHS)).to_have_text(["/a/items/{item_id}", "/a/api/items/{item_id}"])
    await expect(page.locator("#route-count")).to_have_text("2")
    visible = await page.locator("section[data-group]:visible").evaluate_all("s => s.map(g => g.dataset.group)")
    assert visible == ["a", "a.api"]
    page_log.assert_clean()


async def test_clearing_filter_shows_every_route_again(page: Page, page_log: PageLog) -> None:
    await page.goto("/routes")
    total = await page.locator("tr[data-route]").count()
    box = page.get_by_label("Filter")
    await box.press_sequentially("hello")
    await expect(page.locator(ROW_PATHS)).to_have_text(
        ["/hello/", "/hello/api/docs", "/hello/api/greeting", "/hello/api/openapi.json"]
    )
    await box.fill("")
    await expect(page.locator(ROW_PATHS)).to_have_count(total)
    await expect(page.locator("#route-count")).to_have_text(str(total))
    page_log.assert_clean()


async def test_filter_matching_nothing_says_so(page: Page, page_log: PageLog) -> None:
    await page.goto("/routes")
    await expect(page.locator("#route-empty")).to_be_hidden()
    await page.get_by_label("Filter").press_sequentially("no-such-route")
    await expect(page.locator(ROW_PATHS)).to_have_count(0)
    await expect(page.locator("#route-empty")).to_have_text("No route matches no-such-route.")
    await expect(page.locator("#route-count")).to_have_text("0")
    page_log.assert_clean()


async def test_explain_form_shows_matched_handler(page: Page, page_log: PageLog) -> None:
    await page.goto("/routes")
    await page.locator("#explain-method").select_option("GET")
    await page.locator("#explain-path").fill("/a/items/3")
    await page.get_by_role("button", name="Explain").click()
    await expect(page).to_have_url(page_log.origin + "/routes/explain?method=GET&path=%2Fa%2Fitems%2F3")
    await expect(page.locator("#explain-status")).to_have_text("matched")
    await expect(page.locator("#explain-handler")).to_have_text("tests.fixtures.tree.item")
    await expect(page.locator("#explanation")).to_contain_text("item_id=3")
    page_log.assert_clean()


async def test_explain_form_names_other_methods_for_wrong_method(page: Page, page_log: PageLog) -> None:
    await page.goto("/routes")
    await page.locator("#explain-method").select_option("POST")
    await page.locator("#explain-path").fill("/a/")
    await page.get_by_role("button", name="Explain").click()
    await expect(page.locator("#explain-status")).to_have_text("405 Method Not Allowed")
    await expect(page.locator("#explain-notes")).to_contain_text("GET")
    page_log.assert_clean()
