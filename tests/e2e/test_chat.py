"""The chat room page in a real browser: two people (two browser contexts) talk in one room."""

import re

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from .conftest import OpenPage, PageLog

pytestmark = pytest.mark.e2e

ROOM = "/chat/e2e-lobby"
HALL = "/chat/e2e-hall"  # another room, where each person first types a name
CONNECTED = re.compile(r"\bon\b")  # the class chat.js sets on #chat-status while its websocket is open


@pytest.fixture
def server(site: TestServer) -> TestServer:
    """Nestor with chat (plus polls and monitor), on its own SQLite file."""
    return site


async def join(page: Page, name: str) -> None:
    """Enter the room as `name`, who chatted before: the page remembers the name it was given."""
    await page.goto(HALL)
    await expect(page.locator("#chat-status")).to_have_class(CONNECTED)
    await page.locator("#name").fill(name)
    await page.locator("#name").press("Tab")  # a changed name is remembered when the field is left
    response = await page.goto(ROOM)
    assert response is not None and response.status == 200
    await expect(page.locator("#name")).to_have_value(name)
    await expect(page.locator("#chat-status")).to_have_class(CONNECTED)


async def say(page: Page, text: str) -> None:
    """Send a message with the room's form."""
    await page.locator("#text").fill(text)
    await page.locator("form#send button").click()
    await expect(page.locator("#text")).to_have_value("")


async def test_two_people_in_a_room_see_each_others_messages_and_names(
    page: Page, page_log: PageLog, open_page: OpenPage
) -> None:
    other, other_log = await open_page()
    await join(page, "Ada")
    await join(other, "Bob")
    await expect(page.locator("#people")).to_have_text("2")
    await expect(other.locator("#people")).to_have_text("2")

    await say(page, "Hello Bob")
    for seen in (other, page):
        await expect(seen.locator("#messages > li.message .name")).to_have_text(["Ada"])
        await expect(seen.locator("#messages > li.message .text")).to_have_text(["Hello Bob"])

    await say(other, "Hi Ada <b>!</b>")
    for seen in (page, other):
        await expect(seen.locator("#messages > li.message .name")).to_have_text(["Ada", "Bob"])
        await expect(seen.locator("#messages > li.message .text")).to_have_text(["Hello Bob", "Hi Ada <b>!</b>"])
    await expect(page.locator("#messages b")).to_have_count(0)  # text, never markup
    page_log.assert_clean()
    other_log.assert_clean()


async def test_newcomer_gets_history_and_count_drops_when_someone_leaves(
    page: Page, page_log: PageLog, open_page: OpenPage
) -> None:
    await join(page, "Ada")
    await say(page, "Anyone here?")
    await expect(page.locator("#messages > li.message .text")).to_have_text(["Anyone here?"])

    other, other_log = await open_page()
    await join(other, "Bob")
    await expect(other.locator("#messages > li.message .name")).to_have_text(["Ada"])
    await expect(other.locator("#messages > li.message .text")).to_have_text(["Anyone here?"])
    await expect(page.locator("#people")).to_have_text("2")
    other_log.assert_clean()

    await expect(page.locator("#messages > li.event").last).to_have_text("Bob joined")
    await other.context.close()
    await expect(page.locator("#people")).to_have_text("1")
    await expect(page.locator("#messages > li.event").last).to_have_text("Bob left")
    page_log.assert_clean()


async def test_name_typed_after_entering_the_room_is_the_name_others_see_leave(
    page: Page, page_log: PageLog, open_page: OpenPage
) -> None:
    await join(page, "Ada")
    other, other_log = await open_page()
    await other.goto(ROOM)  # a newcomer: no name remembered yet
    await expect(other.locator("#chat-status")).to_have_class(CONNECTED)
    events = page.locator("#messages > li.event")
    await expect(events.last).to_have_text("anonymous joined")

    await other.locator("#name").fill("Bob")
    await other.locator("#name").press("Tab")
    await expect(events.filter(has_text="Bob joined")).to_have_count(1)
    await expect(events.filter(has_text="anonymous left")).to_have_count(1)
    await expect(other.locator("#chat-status")).to_have_class(CONNECTED)
    await say(other, "Hi, I am Bob")
    await expect(page.locator("#messages > li.message .name")).to_have_text(["Bob"])
    other_log.assert_clean()

    await other.context.close()
    await expect(page.locator("#people")).to_have_text("1")
    await expect(events.last).to_have_text("Bob left")
    page_log.assert_clean()
