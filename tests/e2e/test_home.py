"""The home page in a real browser: it lists the mounted sub-apps and its links lead there."""

import pytest
from playwright.async_api import Page, expect

from .conftest import PageLog

pytestmark = pytest.mark.e2e


async def test_home_lists_mounted_subapps_with_nested_levels(page: Page, page_log: PageLog) -> None:
    response = await page.goto("/")
    assert response is not None and response.status == 200
    cards = page.locator("#subapps > li[data-subapp]")
    await expect(cards).to_have_count(3)
    assert sorted(await cards.evaluate_all("cards => cards.map(c => c.dataset.subapp)")) == ["a", "b", "hello"]
    await expect(page.locator('#subapps > li[data-subapp="a"]')).to_contain_text("/a/api")
    await expect(page.locator('#subapps > li[data-subapp="hello"] > a')).to_have_text("Hello")
    page_log.assert_clean()


async def test_home_link_opens_subapp_and_back_returns_home(page: Page, page_log: PageLog) -> None:
    await page.goto("/")
    await page.locator('#subapps > li[data-subapp="hello"] > a').click()
    await expect(page).to_have_url(page_log.origin + "/hello/")
    await expect(page.locator("#greeting")).to_have_text("Hello, world!")
    await page.go_back()
    await expect(page).to_have_url(page_log.origin + "/")
    await expect(page.locator("#subapps > li[data-subapp]")).to_have_count(3)
    page_log.assert_clean()


async def test_every_link_on_home_page_answers(page: Page, page_log: PageLog) -> None:
    await page.goto("/")
    hrefs = await page.locator("a[href]").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert "/hello/" in hrefs and "/routes" in hrefs
    for href in sorted(set(hrefs)):
        response = await page.request.get(href)
        assert response.status == 200, href
    page_log.assert_clean()
