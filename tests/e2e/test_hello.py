"""The hello sub-app's page in a real browser: its GET form greets by name."""

import pytest
from playwright.async_api import Page, expect

from .conftest import PageLog

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", ["Ada", "<b>Ada</b> & <script>alert(1)</script>"])
async def test_hello_form_greets_by_name_as_typed(page: Page, page_log: PageLog, name: str) -> None:
    await page.goto("/hello/")
    await page.get_by_label("Your name").fill(name)
    await page.get_by_role("button", name="Greet me").click()
    await expect(page.locator("#greeting")).to_have_text(f"Hello, {name}!")
    await expect(page.get_by_label("Your name")).to_have_value(name)
    assert page.url.startswith(page_log.origin + "/hello/?name=")
    page_log.assert_clean()
