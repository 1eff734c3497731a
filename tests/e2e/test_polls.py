"""The polls pages in a real browser: browse to a poll and vote, live results, ask a question."""

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, expect

from .conftest import PageLog

pytestmark = pytest.mark.e2e

LIVE = re.compile(r"\bon\b")  # the class live.js sets while its websocket is open


@pytest.fixture
def server(site: TestServer) -> TestServer:
    """Nestor with polls (plus chat and monitor), on its own SQLite file."""
    return site


async def create_question(page: Page, text: str, choices: list[str]) -> dict[str, Any]:
    """Create a question through the polls JSON API; return it as the API shows it."""
    response = await page.request.post("/polls/api/questions", data={"text": text, "choices": choices})
    assert response.status == 201, await response.text()
    return await response.json()


async def vote_through_api(page: Page, question_id: int, choice_id: int) -> None:
    """Vote as someone else would: through the JSON API, not this page."""
    response = await page.request.post(f"/polls/api/questions/{question_id}/votes", data={"choice": choice_id})
    assert response.status == 201, await response.text()


async def votes_of(page: Page, question_id: int) -> dict[int, int]:
    """Return {choice id: votes} as the API reports them."""
    response = await page.request.get(f"/polls/api/questions/{question_id}/results")
    assert response.status == 200
    return {c["id"]: c["votes"] for c in (await response.json())["choices"]}


async def test_vote_from_home_page_is_counted_on_results_page(page: Page, page_log: PageLog) -> None:
    question = await create_question(page, "Which test runner?", ["pytest", "unittest"])
    qid, (chosen, other) = question["id"], [c["id"] for c in question["choices"]]
    await vote_through_api(page, qid, other)
    before = await votes_of(page, qid)

    await page.goto("/")
    await page.locator('#subapps > li[data-subapp="polls"] > a').click()
    await expect(page).to_have_url(page_log.origin + "/polls/")
    await page.get_by_role("link", name="Which test runner?").click()
    await expect(page).to_have_url(page_log.origin + f"/polls/{qid}")
    await page.get_by_label("pytest", exact=True).check()
    await page.get_by_role("button", name="Vote").click()

    await expect(page).to_have_url(page_log.origin + f"/polls/{qid}/results")
    await expect(page.locator(f"#votes-{chosen}")).to_have_text(str(before[chosen] + 1))
    await expect(page.locator(f"#votes-{other}")).to_have_text(str(before[other]))
    await expect(page.locator("#total")).to_have_text(str(sum(before.values()) + 1))
    assert await votes_of(page, qid) == {chosen: before[chosen] + 1, other: before[other]}
    page_log.assert_clean()


async def test_results_page_shows_others_votes_without_reload(page: Page, page_log: PageLog) -> None:
    question = await create_question(page, "Tea or coffee?", ["Tea", "Coffee"])
    qid, (tea, coffee) = question["id"], [c["id"] for c in question["choices"]]
    await page.goto(f"/polls/{qid}/results")
    await expect(page.locator("#live-status")).to_have_class(LIVE)
    await expect(page.locator("#total")).to_have_text("0")
    await page.evaluate("window.notReloaded = true")

    await vote_through_api(page, qid, coffee)
    await vote_through_api(page, qid, coffee)
    await vote_through_api(page, qid, tea)

    await expect(page.locator("#total")).to_have_text("3")
    await expect(page.locator(f"#votes-{coffee}")).to_have_text("2")
    await expect(page.locator(f"#votes-{tea}")).to_have_text("1")
    await expect(page.locator(f"#percent-{coffee}")).to_have_text("67")
    assert await page.evaluate("window.notReloaded") is True
    page_log.assert_clean()


@pytest.mark.parametrize(
    ("text", "choices", "field", "error", "fix"),
    [
        ("", ["Tabs", "Spaces"], "#text-error", "Write the question.", ("Question", "Tabs or spaces?")),
        ("Tabs or spaces?", ["Tabs"], "#choices-error", "Give 2 to 10 choices (you gave 1).", ("Choice 2", "Spaces")),
    ],
    ids=["empty-question", "one-choice"],
)
async def test_new_question_form_shows_error_keeps_input_then_saves(
    page: Page, page_log: PageLog, text: str, choices: list[str], field: str, error: str, fix: tuple[str, str]
) -> None:
    await page.goto("/polls/")
    await page.get_by_role("link", name="Ask a question").click()
    await expect(page).to_have_url(page_log.origin + "/polls/new")
    await page.get_by_label("Question", exact=True).fill(text)
    for number, choice in enumerate(choices, 1):
        await page.get_by_label(f"Choice {number}", exact=True).fill(choice)
    page_log.expect_document_status(400)  # the refused form comes back as a 400 page
    async with page.expect_navigation() as refused:
        await page.get_by_role("button", name="Save the question").click()

    assert (await refused.value).status == 400
    await expect(page.locator(field)).to_have_text(error)
    await expect(page.get_by_role("alert")).to_contain_text("The question was not saved")
    await expect(page.get_by_label("Question", exact=True)).to_have_value(text)
    for number, choice in enumerate(choices, 1):
        await expect(page.get_by_label(f"Choice {number}", exact=True)).to_have_value(choice)

    label, value = fix
    await page.get_by_label(label, exact=True).fill(value)
    await page.get_by_role("button", name="Save the question").click()
    await expect(page).to_have_url(re.compile(re.escape(page_log.origin) + r"/polls/\d+$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Tabs or spaces?")
    await expect(page.get_by_role("radio")).to_have_count(2)
    await expect(page.get_by_label("Tabs", exact=True)).to_be_visible()
    await expect(page.get_by_label("Spaces", exact=True)).to_be_visible()
    await page.get_by_role("link", name="← All polls").click()
    await expect(page.locator("li.question > a").first).to_have_text("Tabs or spaces?")
    page_log.assert_clean()
