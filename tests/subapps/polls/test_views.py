"""The polls HTML pages: lists, pagination, forms with field errors, CSRF, sessions."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from nestor.sessions import COOKIE_NAME

from .conftest import BuildPolls, Client, create_question, csrf_token, votes_of



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


async def test_first_page_links_to_the_next(aiohttp_client: AiohttpClient, make_polls: BuildPolls) -> None:
    client = await aiohttp_client(make_polls({"polls": {"page_size": 2}}))
    for n in range(3):  # with the two samples: 5 questions, 3 pages
        await create_question(client, f"Question {n}?")
    async with client.get("/polls/") as resp:
        assert resp.status == 200
        html = await resp.text()
    assert question_items(html) == ["Question 2?", "Question 1?"]
    assert 'href="/polls/?page=2"' in html
    assert "Page 1 of 3" in html


@pytest.mark.parametrize("tables", [{"polls": {"page_size": 2}}, {"nestor": {"page_size": 2}}])
async def test_page_size_comes_from_polls_or_nestor_table(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls, tables: dict[str, Any]
) -> None:
    client = await aiohttp_client(make_polls(tables))
    for n in range(3):
        await create_question(client, f"Question {n}?")
    async with client.get("/polls/?page=3") as resp:
        assert resp.status == 200
        html = await resp.text()
    assert question_items(html) == ["What do you like best in aiohttp?"]  # the oldest sample
    assert 'href="/polls/?page=2"' in html


async def test_search_filters_by_text_and_keeps_q_in_page_links(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls
) -> None:
    client = await aiohttp_client(make_polls({"polls": {"page_size": 1}}))
    await create_question(client, "Best tea in town?")
    await create_question(client, "Coffee or not?")
    await create_question(client, "Green TEA or black?")
    async with client.get("/polls/", params={"q": "tea"}) as resp:
        assert resp.status == 200
        html = await resp.text()
    assert question_items(html) == ["Green TEA or black?"]
    assert 'href="/polls/?page=2&amp;q=tea"' in html
    assert "Page 1 of 2" in html


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
