"""The polls HTML pages: lists, pagination, forms with field errors, CSRF, sessions."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from nestor.sessions import COOKIE_NAME

from nestor_subapps.polls import db

from .conftest import (
    SAMPLE_TEXTS,
    BuildPolls,
    Client,
    create_question,
    csrf_token,
    engine_of,
    transactions,
    votes_of,
)


def question_items(html: str) -> list[str]:
    """Return the question texts listed on /polls/, in page order."""
    return re.findall(r'<li class="question">\s*<a href="/polls/\d+">([^<]*)</a>', html)


async def test_index_lists_questions_newest_first(client: Client) -> None:
    await create_question(client, "Older question?")
    await create_question(client, "Newer question?")
    async with client.get("/polls/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        items = question_items(await resp.text())
    assert items[:2] == ["Newer question?", "Older question?"]


def pager_links(html: str) -> dict[str, str]:
    """Return the pager's links by rel ("prev" is Newer, "next" is Older), unescaped."""
    return {rel: href.replace("&amp;", "&") for rel, href in re.findall(r'<a rel="(prev|next)" href="([^"]+)"', html)}


async def page_at(client: Client, path: str) -> tuple[list[str], dict[str, str]]:
    """Load a list page; return its question texts and its pager links."""
    async with client.get(path) as resp:
        assert resp.status == 200, await resp.text()
        html = await resp.text()
    return question_items(html), pager_links(html)


async def test_first_page_links_to_the_older_one_by_cursor(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls
) -> None:
    client = await aiohttp_client(make_polls({"polls": {"page_size": 2}}))
    for n in range(3):  # with the two samples: 5 questions, 3 pages
        await create_question(client, f"Question {n}?")
    items, links = await page_at(client, "/polls/")
    assert items == ["Question 2?", "Question 1?"]
    assert set(links) == {"next"}  # no newer page
    assert re.fullmatch(r"/polls/\?before=[0-9]+_[0-9]+", links["next"])


async def test_older_and_newer_links_walk_the_list_both_ways(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls
) -> None:
    client = await aiohttp_client(make_polls({"polls": {"page_size": 2}}))
    for n in range(3):
        await create_question(client, f"Question {n}?")
    pages, links = [], {"next": "/polls/"}
    while "next" in links:
        items, links = await page_at(client, links["next"])
        pages.append(items)
    assert pages == [["Question 2?", "Question 1?"], ["Question 0?", SAMPLE_TEXTS[0]], [SAMPLE_TEXTS[1]]]
    back = []
    while "prev" in links:
        items, links = await page_at(client, links["prev"])
        back.append(items)
    assert back == pages[-2::-1]  # the same pages, newest last, ending on the first page
    assert set(links) == {"next"}


async def test_newer_link_near_the_top_shows_a_full_first_page(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls
) -> None:
    client = await aiohttp_client(make_polls({"polls": {"page_size": 2}}))
    newest = [await create_question(client, f"Question {n}?") for n in range(3)][-1]
    _, links = await page_at(client, "/polls/")
    items, links = await page_at(client, links["next"])
    assert items == ["Question 0?", SAMPLE_TEXTS[0]]
    async with engine_of(client).begin() as conn:  # the newest question goes: one newer is left
        await conn.execute(db.choices.delete().where(db.choices.c.question_id == newest["id"]))
        await conn.execute(db.questions.delete().where(db.questions.c.id == newest["id"]))
    items, links = await page_at(client, links["prev"])
    assert items == ["Question 1?", "Question 0?"]
    assert set(links) == {"next"}


@pytest.mark.parametrize("link", ["first", "next", "prev", "page=2", "q=question", "detail", "results"])
async def test_a_page_reads_in_one_connection_and_one_transaction(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls, link: str
) -> None:
    client = await aiohttp_client(make_polls({"polls": {"page_size": 2}}))
    for n in range(3):
        await create_question(client, f"Question {n}?")
    _, first = await page_at(client, "/polls/")
    _, second = await page_at(client, first["next"])
    # "prev" from the second page finds fewer than a page of newer questions, and shows the first page.
    path = {
        "first": "/polls/", "next": first["next"], "prev": second["prev"], "page=2": "/polls/?page=2",
        "q=question": "/polls/?q=question", "detail": "/polls/1", "results": "/polls/1/results",
    }[link]
    with transactions(engine_of(client)) as seen:
        async with client.get(path) as resp:
            assert resp.status == 200
    assert seen == ["checkout", "begin"]


@pytest.mark.parametrize("tables", [{"polls": {"page_size": 2}}, {"nestor": {"page_size": 2}}])
async def test_page_size_comes_from_polls_or_nestor_table(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls, tables: dict[str, Any]
) -> None:
    client = await aiohttp_client(make_polls(tables))
    for n in range(3):
        await create_question(client, f"Question {n}?")
    items, links = await page_at(client, "/polls/?page=3")  # numbered pages still work for the first ones
    assert items == [SAMPLE_TEXTS[1]]  # the oldest sample
    items, _ = await page_at(client, links["prev"])
    assert items == ["Question 0?", SAMPLE_TEXTS[0]]


async def test_search_filters_by_text_and_keeps_q_in_page_links(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls
) -> None:
    client = await aiohttp_client(make_polls({"polls": {"page_size": 1}}))
    await create_question(client, "Best tea in town?")
    await create_question(client, "Coffee or not?")
    await create_question(client, "Green TEA or black?")
    items, links = await page_at(client, "/polls/?q=tea")
    assert items == ["Green TEA or black?"]
    assert re.fullmatch(r"/polls/\?before=[0-9]+_[0-9]+&q=tea", links["next"])
    items, links = await page_at(client, links["next"])
    assert items == ["Best tea in town?"]
    assert set(links) == {"prev"}


async def test_page_past_the_end_of_the_list_links_back_to_the_newest(client: Client) -> None:
    items, links = await page_at(client, "/polls/?before=0_1")  # older than 1970: nothing
    assert (items, links) == ([], {})
    async with client.get("/polls/?before=0_1") as resp:
        assert 'No older questions. <a href="/polls/">' in await resp.text()


async def test_search_without_match_says_so(client: Client) -> None:
    async with client.get("/polls/", params={"q": "nothing like this"}) as resp:
        assert resp.status == 200
        html = await resp.text()
    assert question_items(html) == []
    assert "No question contains “nothing like this”" in html


@pytest.mark.parametrize("q", ["x" * 201, "tea\x00"])
async def test_search_text_that_cannot_be_searched_is_400_page(client: Client, q: str) -> None:
    async with client.get("/polls/", params={"q": q}) as resp:
        assert resp.status == 400
        assert resp.content_type == "text/html"
        assert "search text" in await resp.text()


@pytest.mark.parametrize("page", ["0", "2", "99", "abc", "-1", "1.5", "", "9" * 40, "٣"])
async def test_page_out_of_range_or_not_a_number_is_400_page(client: Client, page: str) -> None:
    async with client.get("/polls/", params={"page": page}) as resp:
        assert resp.status == 400
        assert resp.content_type == "text/html"
        html = await resp.text()
    assert "400" in html
    assert "page" in html.lower()
    assert "Traceback" not in html


async def test_pages_past_the_numbered_ones_say_to_follow_older_links(client: Client) -> None:
    async with client.get("/polls/", params={"page": "52"}) as resp:  # 20 a page: offsets up to 1000
        assert resp.status == 400
        assert "pages are numbered 1 to 51; further on, follow the “Older” links" in await resp.text()


@pytest.mark.parametrize(
    "query",
    [{"before": "abc"}, {"after": "1_"}, {"before": "1_2", "after": "1_2"}, {"before": "1_2", "page": "1"},
     {"before": "-" + "9" * 17 + "_1"}, {"after": "1_" + "9" * 10}, {"before": "١_١"}],
)
async def test_unreadable_place_in_the_list_is_400_page(client: Client, query: dict[str, str]) -> None:
    async with client.get("/polls/", params=query) as resp:
        assert resp.status == 400
        assert resp.content_type == "text/html"
        assert "Traceback" not in await resp.text()


async def test_detail_shows_the_question_and_a_vote_form_with_csrf_token(client: Client) -> None:
    question = await create_question(client, "Tea or coffee?", ["Tea", "Coffee"])
    async with client.get(f"/polls/{question['id']}") as resp:
        assert resp.status == 200
        html = await resp.text()
    assert "Tea or coffee?" in html
    assert f'action="/polls/{question["id"]}/vote"' in html
    for choice in question["choices"]:
        assert f'name="choice" value="{choice["id"]}"' in html
    assert re.search(r'<input type="hidden" name="csrf_token" value="[\w-]{40,}">', html)


@pytest.mark.parametrize(
    "path", ["/polls/9999", "/polls/9999/results", "/polls/99999999999999999999", "/polls/٣"]
)
async def test_unknown_question_is_404_page(client: Client, path: str) -> None:
    async with client.get(path) as resp:
        assert resp.status == 404
        assert resp.content_type == "text/html"


async def test_vote_for_unknown_question_is_404(client: Client) -> None:
    token = await csrf_token(client)
    async with client.post("/polls/9999/vote", data={"choice": "1", "csrf_token": token}) as resp:
        assert resp.status == 404
        assert resp.content_type == "text/html"


async def test_vote_redirects_to_results_and_counts(client: Client) -> None:
    question = await create_question(client)
    tea = question["choices"][0]["id"]
    token = await csrf_token(client, f"/polls/{question['id']}")
    async with client.post(
        f"/polls/{question['id']}/vote", data={"choice": str(tea), "csrf_token": token},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == f"/polls/{question['id']}/results"
    assert (await votes_of(client, question["id"]))[tea] == 1


@pytest.mark.parametrize("choice", [None, "", "abc", "-1", "99999999999999999999", "sample"])
async def test_vote_without_a_valid_choice_shows_the_form_again_with_400(
    client: Client, choice: str | None
) -> None:
    question = await create_question(client)
    if choice == "sample":
        choice = "1"  # a choice of the first sample question, not of this one
    token = await csrf_token(client, f"/polls/{question['id']}")
    data = {"csrf_token": token} | ({} if choice is None else {"choice": choice})
    async with client.post(f"/polls/{question['id']}/vote", data=data) as resp:
        assert resp.status == 400
        html = await resp.text()
    assert 'class="field-error"' in html
    assert "Tea or coffee?" in html
    assert f'action="/polls/{question["id"]}/vote"' in html
    assert set((await votes_of(client, question["id"])).values()) == {0}


async def test_results_page_shows_counts_as_bars(client: Client) -> None:
    question = await create_question(client)
    tea, coffee = (c["id"] for c in question["choices"])
    for choice in (tea, tea, coffee):
        async with client.post(f"/polls/api/questions/{question['id']}/votes", json={"choice": choice}) as resp:
            assert resp.status == 201
    async with client.get(f"/polls/{question['id']}/results") as resp:
        assert resp.status == 200
        html = await resp.text()
    assert f'<td class="votes" id="votes-{tea}">2</td>' in html
    assert f'<td class="votes" id="votes-{coffee}">1</td>' in html
    assert f'<progress id="bar-{tea}" max="3" value="2">' in html
    assert f'<span id="percent-{tea}">67</span>' in html
    assert f'data-live="/polls/{question["id"]}/live"' in html


async def test_new_question_form_creates_the_question_and_redirects(client: Client) -> None:
    token = await csrf_token(client)
    data = [("csrf_token", token), ("text", "  Cats or dogs?  "), ("choice", "Cats"),
            ("choice", ""), ("choice", "Dogs"), ("choice", " ")]
    async with client.post("/polls/new", data=data, allow_redirects=False) as resp:
        assert resp.status == 303
        location = resp.headers["Location"]
    assert re.fullmatch(r"/polls/\d+", location)
    async with client.get(location) as resp:
        assert resp.status == 200
        html = await resp.text()
    assert "Cats or dogs?" in html
    assert html.count('name="choice"') == 2


@pytest.mark.parametrize(
    ("text", "choices", "field", "message"),
    [
        ("", ["Yes", "No"], "text", "Write the question."),
        ("x" * 201, ["Yes", "No"], "text", "At most 200 characters"),
        ("Only one?", ["Yes"], "choices", "Give 2 to 10 choices (you gave 1)."),
        ("Too many?", [f"c{n}" for n in range(11)], "choices", "Give 2 to 10 choices (you gave 11)."),
        ("Twice?", ["Yes", "yes"], "choices", "is given twice"),
        ("Long?", ["Yes", "n" * 201], "choices", "Choice 2 is longer than 200 characters."),
    ],
)
async def test_new_question_with_bad_fields_shows_field_errors_with_400(
    client: Client, text: str, choices: list[str], field: str, message: str
) -> None:
    token = await csrf_token(client)
    data = [("csrf_token", token), ("text", text)] + [("choice", c) for c in choices]
    async with client.post("/polls/new", data=data) as resp:
        assert resp.status == 400
        html = await resp.text()
    assert f'id="{field}-error">' in html
    assert message in html
    assert f'value="{choices[0]}"' in html  # what was typed is kept


async def test_new_question_with_errors_is_not_saved(client: Client) -> None:
    token = await csrf_token(client)
    async with client.post("/polls/new", data={"csrf_token": token, "text": "Lonely?", "choice": "Yes"}) as resp:
        assert resp.status == 400
    async with client.get("/polls/", params={"q": "Lonely"}) as resp:
        assert resp.status == 200
        assert question_items(await resp.text()) == []


@pytest.mark.parametrize("path", ["/polls/1/vote", "/polls/new"])
@pytest.mark.parametrize("token", [None, "", "forged-token-of-the-right-length-0123456789abc"])
async def test_post_without_a_valid_csrf_token_is_403(client: Client, path: str, token: str | None) -> None:
    await csrf_token(client)  # the session exists and has a token; the form does not carry it
    data = {"text": "Q?", "choice": "1"} | ({} if token is None else {"csrf_token": token})
    async with client.post(path, data=data) as resp:
        assert resp.status == 403
        assert resp.content_type == "text/html"
        assert "CSRF" in await resp.text()
    assert (await votes_of(client, 1))[1] == 0


async def test_csrf_token_without_its_session_cookie_is_403(client: Client) -> None:
    token = await csrf_token(client)
    client.session.cookie_jar.clear()
    async with client.post("/polls/1/vote", data={"choice": "1", "csrf_token": token}) as resp:
        assert resp.status == 403


@pytest.mark.parametrize("header", ["", "forged", "é-not-ascii"])
async def test_wrong_csrf_header_is_403(client: Client, header: str) -> None:
    await csrf_token(client)
    async with client.post(
        "/polls/1/vote", data={"choice": "1"}, headers={"X-CSRF-Token": header.encode().decode("latin-1")}
    ) as resp:
        assert resp.status == 403


async def test_csrf_token_in_header_is_accepted(client: Client) -> None:
    token = await csrf_token(client)
    async with client.post(
        "/polls/1/vote", data={"choice": "1"}, headers={"X-CSRF-Token": token}, allow_redirects=False
    ) as resp:
        assert resp.status == 303


@pytest.mark.parametrize("path", ["/polls/1/vote", "/polls/new"])
@pytest.mark.parametrize("token_in", ["header", "form"])
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"no boundary"),
        ("multipart/form-data; boundary=xx", b"no starting boundary"),
        ("application/x-www-form-urlencoded; charset=no-such-charset", b"choice=1"),
    ],
)
async def test_form_body_that_cannot_be_read_is_400(
    client: Client, path: str, token_in: str, content_type: str, body: bytes
) -> None:
    token = await csrf_token(client)
    headers = {"Content-Type": content_type} | ({"X-CSRF-Token": token} if token_in == "header" else {})
    async with client.post(path, data=body, headers=headers) as resp:
        assert resp.status == 400
        assert "The form could not be read" in await resp.text()


async def test_session_cookie_is_httponly_and_samesite_lax(client: Client) -> None:
    async with client.get("/polls/new") as resp:
        assert resp.status == 200
        cookie = SimpleCookie(resp.headers["Set-Cookie"])[COOKIE_NAME]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"


async def test_list_page_sets_no_session_cookie(client: Client) -> None:
    async with client.get("/polls/") as resp:
        assert resp.status == 200
        assert "Set-Cookie" not in resp.headers


@pytest.mark.parametrize(("second_secret", "status"), [("s3cret-one", 303), ("another-secret", 403)])
async def test_session_survives_restart_only_with_the_same_secret_key(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls, second_secret: str, status: int
) -> None:
    first = await aiohttp_client(make_polls({"nestor": {"secret_key": "s3cret-one"}}))
    token = await csrf_token(first)
    cookies = {COOKIE_NAME: first.session.cookie_jar.filter_cookies(first.make_url("/"))[COOKIE_NAME].value}
    await first.close()
    second = await aiohttp_client(make_polls({"nestor": {"secret_key": second_secret}}))
    async with second.post(
        "/polls/1/vote", data={"choice": "1", "csrf_token": token}, cookies=cookies, allow_redirects=False
    ) as resp:
        assert resp.status == status


async def test_pages_keep_to_the_csp_without_inline_script_or_style(client: Client) -> None:
    for path in ["/polls/", "/polls/1", "/polls/1/results", "/polls/new"]:
        async with client.get(path) as resp:
            assert resp.status == 200
            html = await resp.text()
        assert "style=" not in html
        assert "<style" not in html
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/polls/static/polls.css", "/css"), ("/polls/static/live.js", "/javascript")],
)
async def test_polls_serves_its_own_static_files(client: Client, path: str, content_type: str) -> None:
    async with client.get(path) as resp:
        assert resp.status == 200
        assert resp.content_type.endswith(content_type)  # text/ or application/, by platform


@pytest.mark.parametrize("level", ["nestor", "polls"])
async def test_pages_do_not_ask_for_the_api_token(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls, level: str
) -> None:
    client = await aiohttp_client(make_polls({level: {"api_token": "t0ken"}}))
    async with client.get("/polls/") as resp:
        assert resp.status == 200
