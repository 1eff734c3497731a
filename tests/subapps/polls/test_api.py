"""The polls JSON API at /polls/api: every endpoint, every bad input, the token, its config."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pytest_aiohttp import AiohttpClient

from nestor_subapps.polls import db

from .conftest import SAMPLE_TEXTS, BuildPolls, Client, create_question, engine_of, transactions, votes_of

PROBLEM = "application/problem+json"


async def problem_of(resp: Any) -> dict[str, Any]:
    """Return the problem document of an error response, after checking its media type."""
    assert resp.content_type == PROBLEM
    body = await resp.json(content_type=PROBLEM)
    assert body["status"] == resp.status
    return body


# -- GET /questions ------------------------------------------------------------------------


async def test_list_gives_questions_newest_first_with_total(client: Client) -> None:
    created = await create_question(client, "Newest?")
    async with client.get("/polls/api/questions") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["total"] == 3  # two samples and ours
    assert body["items"][0] == created
    assert [item["id"] for item in body["items"]] == sorted((i["id"] for i in body["items"]), reverse=True)


async def test_list_pages_with_limit_and_offset(client: Client) -> None:
    for n in range(3):
        await create_question(client, f"Question {n}?")
    async with client.get("/polls/api/questions", params={"limit": "2", "offset": "1"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [item["text"] for item in body["items"]] == ["Question 1?", "Question 0?"]
    assert (body["limit"], body["offset"], body["total"]) == (2, 1, 5)


async def test_list_limit_is_capped_by_max_limit(aiohttp_client: AiohttpClient, make_polls: BuildPolls) -> None:
    client = await aiohttp_client(make_polls({"polls": {"api": {"max_limit": 1}}}))
    async with client.get("/polls/api/questions", params={"limit": "50"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["limit"] == 1
    assert len(body["items"]) == 1


async def walk(client: Client, path: str) -> list[dict[str, Any]]:
    """Follow `next` from `path` to the last page; return every item seen, in order."""
    seen: list[dict[str, Any]] = []
    while path:
        async with client.get(path) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        seen += body["items"]
        assert len(seen) < 1000, "next links go round in circles"
        path = body["next"]
    return seen


def newest_first(items: list[dict[str, Any]]) -> list[int]:
    """The ids of `items` in the list's order, worked out here: by created_at, then id, newest first."""
    ordered = sorted(items, key=lambda i: (datetime.fromisoformat(i["created_at"]), i["id"]), reverse=True)
    return [i["id"] for i in ordered]


def cursor(item: dict[str, Any]) -> str:
    """The place of a listed question, written as the API writes it (microseconds since 1970, id)."""
    at = datetime.fromisoformat(item["created_at"]) - datetime(1970, 1, 1, tzinfo=UTC)
    return f"{at // timedelta(microseconds=1)}_{item['id']}"


async def share_one_instant(client: Client, ids: list[int]) -> None:
    """Give these questions the same created_at: only their ids can order them."""
    same = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    async with engine_of(client).begin() as conn:
        await conn.execute(sa.update(db.questions).where(db.questions.c.id.in_(ids)).values(created_at=same))


async def test_next_links_walk_every_question_once_in_order(client: Client) -> None:
    created = [await create_question(client, f"Question {n}?") for n in range(9)]
    await share_one_instant(client, [q["id"] for q in created[2:7]])  # five at once, across page ends
    seen = await walk(client, "/polls/api/questions?limit=2")
    assert len(seen) == 11  # the two samples too
    assert [i["id"] for i in seen] == newest_first(seen)


async def test_next_link_keeps_limit_and_q_and_ends_with_null(client: Client) -> None:
    for n in range(3):
        await create_question(client, f"Tea {n}?")
    async with client.get("/polls/api/questions", params={"limit": "2", "q": "tea"}) as resp:
        body = await resp.json()
    assert re.fullmatch(r"/polls/api/questions\?before=[0-9]+_[0-9]+&limit=2&q=tea", body["next"])
    assert body["before"] is None
    async with client.get(body["next"]) as resp:
        last = await resp.json()
    assert ([i["text"] for i in last["items"]], last["next"]) == (["Tea 0?"], None)
    assert last["before"] == body["next"].split("before=")[1].split("&")[0]


async def test_before_a_deep_question_lists_the_older_ones(client: Client) -> None:
    created = [await create_question(client, f"Question {n}?") for n in range(6)]
    await share_one_instant(client, [q["id"] for q in created[1:5]])
    everything = await walk(client, "/polls/api/questions?limit=100")
    place = next(i for i in everything if i["id"] == created[3]["id"])
    async with client.get("/polls/api/questions", params={"before": cursor(place), "limit": "100"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [i["id"] for i in body["items"]] == [i["id"] for i in everything[everything.index(place) + 1 :]]


async def test_new_questions_do_not_shift_the_pages_being_walked(client: Client) -> None:
    async with client.get("/polls/api/questions", params={"limit": "1"}) as resp:
        first = await resp.json()
    await create_question(client, "Asked meanwhile?")  # with offsets, the next page would repeat the first
    async with client.get(first["next"]) as resp:
        second = await resp.json()
    assert [i["text"] for i in first["items"] + second["items"]] == SAMPLE_TEXTS


async def test_offset_past_1000_is_400_pointing_to_next(client: Client) -> None:
    async with client.get("/polls/api/questions", params={"offset": "1001"}) as resp:
        assert resp.status == 400
        detail = (await problem_of(resp))["detail"]
    assert detail.startswith("offset=1001 is past 1000: follow the `next` link")


async def test_offset_up_to_1000_still_works(client: Client) -> None:
    async with client.get("/polls/api/questions", params={"offset": "1000"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert (body["items"], body["next"], body["total"]) == ([], None, 2)


async def test_total_is_null_past_the_count_limit(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "COUNT_LIMIT", 3)
    await create_question(client)
    async with client.get("/polls/api/questions", params={"limit": "1"}) as resp:
        assert (await resp.json())["total"] == 3
    await create_question(client)
    async with client.get("/polls/api/questions", params={"limit": "1"}) as resp:
        assert (await resp.json())["total"] is None


async def test_search_total_is_given_only_when_its_first_page_holds_every_match(client: Client) -> None:
    for n in range(3):
        await create_question(client, f"Tea {n}?")
    async with client.get("/polls/api/questions", params={"q": "tea", "limit": "3"}) as resp:
        assert (await resp.json())["total"] == 3
    async with client.get("/polls/api/questions", params={"q": "tea", "limit": "2"}) as resp:
        assert (await resp.json())["total"] is None


@pytest.mark.parametrize(
    "path",
    [
        "/polls/api/questions?limit=1",  # a page, then its count
        "/polls/api/questions?limit=1&offset=1",
        "/polls/api/questions?q=tea&limit=1",  # the search index, then the page
        "/polls/api/questions/1",
        "/polls/api/questions/1/results",
    ],
)
async def test_a_read_uses_one_connection_and_one_transaction(client: Client, path: str) -> None:
    for n in range(3):
        await create_question(client, f"Tea {n}?")
    with transactions(engine_of(client)) as seen:
        async with client.get(path) as resp:
            assert resp.status == 200
    assert seen == ["checkout", "begin"]


async def test_list_filters_by_q_case_insensitively(client: Client) -> None:
    await create_question(client, "Is 100% enough?")
    await create_question(client, "Is 1000 enough?")
    async with client.get("/polls/api/questions", params={"q": "100%"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [item["text"] for item in body["items"]] == ["Is 100% enough?"]
    assert body["total"] == 1


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"limit": "abc"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"limit": "9" * 30}, "limit"),
        ({"offset": "1.5"}, "offset"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "9" * 30}, "offset"),
        ({"q": "x" * 201}, "q"),
        ({"q": "a\x00b"}, "q"),
        ({"before": "abc"}, "before"),
        ({"before": "12"}, "before"),
        ({"before": "1_" + "9" * 10}, "before"),
        ({"before": "-" + "9" * 17 + "_1"}, "before"),
        ({"before": "١_١"}, "before"),
    ],
)
async def test_list_with_bad_query_parameter_is_400_naming_it(
    client: Client, query: dict[str, str], named: str
) -> None:
    async with client.get("/polls/api/questions", params=query) as resp:
        assert resp.status == 400
        assert named in (await problem_of(resp))["detail"]


# -- POST /questions -----------------------------------------------------------------------


async def test_create_answers_201_with_location_and_the_question(client: Client) -> None:
    body = {"text": "  Tabs or spaces?  ", "choices": ["Tabs", " Spaces "]}
    async with client.post("/polls/api/questions", json=body) as resp:
        assert resp.status == 201
        created = await resp.json()
        location = resp.headers["Location"]
    assert location == f"/polls/api/questions/{created['id']}"
    assert created["text"] == "Tabs or spaces?"
    assert [(c["text"], c["votes"]) for c in created["choices"]] == [("Tabs", 0), ("Spaces", 0)]
    async with client.get(location) as resp:
        assert resp.status == 200
        assert await resp.json() == created


async def test_create_needs_no_csrf_token_or_cookie(client: Client) -> None:
    client.session.cookie_jar.clear()
    async with client.post("/polls/api/questions", json={"text": "Q?", "choices": ["a", "b"]}) as resp:
        assert resp.status == 201
        assert "Set-Cookie" not in resp.headers


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"choices": ["a", "b"]}, {"text": "The question must be text."}),
        ({"text": " ", "choices": ["a", "b"]}, {"text": "Write the question."}),
        ({"text": 42, "choices": ["a", "b"]}, {"text": "The question must be text."}),
        ({"text": "Q?"}, {"choices": "The choices must be a list of texts."}),
        ({"text": "Q?", "choices": "a,b"}, {"choices": "The choices must be a list of texts."}),
        ({"text": "Q?", "choices": ["a", 2]}, {"choices": "The choices must be a list of texts."}),
        ({"text": "Q?", "choices": ["a"]}, {"choices": "Give 2 to 10 choices (you gave 1)."}),
        ({"text": "Q?", "choices": list("abcdefghijk")}, {"choices": "Give 2 to 10 choices (you gave 11)."}),
        ({"text": "Q?", "choices": ["a", " "]}, {"choices": "Choice 2 is empty."}),
        ({"text": "", "choices": []}, {"text": "Write the question.", "choices": "Give 2 to 10 choices (you gave 0)."}),
        ({"text": "a\x00b", "choices": ["a", "b"]}, {"text": "The question contains control characters or broken Unicode."}),
        ({"text": "Q?", "choices": ["a", "\ud800"]}, {"choices": "Choice 2 contains control characters or broken Unicode."}),
    ],
)
async def test_create_with_bad_fields_is_422_with_field_errors(
    client: Client, body: dict[str, Any], errors: dict[str, str]
) -> None:
    async with client.post("/polls/api/questions", json=body) as resp:
        assert resp.status == 422
        problem = await problem_of(resp)
    assert problem["errors"] == errors
    assert problem["request_id"] == resp.headers["X-Request-ID"]


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"text": "Q?",}', b"\xff\xfe{", b"[" * 50000])
async def test_invalid_json_is_400_naming_the_problem(client: Client, body: bytes) -> None:
    async with client.post(
        "/polls/api/questions", data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        assert "not valid JSON" in (await problem_of(resp))["detail"]


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"42"])
async def test_json_that_is_not_an_object_is_422(client: Client, body: bytes) -> None:
    async with client.post(
        "/polls/api/questions", data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 422
        assert "must be a JSON object" in (await problem_of(resp))["detail"]


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}],
)
async def test_wrong_content_type_is_415(client: Client, headers: dict[str, str]) -> None:
    async with client.post(
        "/polls/api/questions", data=b'{"text": "Q?", "choices": ["a", "b"]}', headers=headers
    ) as resp:
        assert resp.status == 415
        assert "application/json" in (await problem_of(resp))["detail"]


async def test_body_over_max_body_is_413(aiohttp_client: AiohttpClient, make_polls: BuildPolls) -> None:
    client = await aiohttp_client(make_polls({"polls": {"api": {"max_body": 100}}}))
    body = {"text": "Q?", "choices": ["a" * 100, "b"]}
    async with client.post("/polls/api/questions", json=body) as resp:
        assert resp.status == 413
        assert "at most 100" in (await problem_of(resp))["detail"]


async def test_chunked_body_over_max_body_is_413(aiohttp_client: AiohttpClient, make_polls: BuildPolls) -> None:
    client = await aiohttp_client(make_polls({"polls": {"api": {"max_body": 100}}}))

    async def chunks() -> Any:  # no Content-Length: the limit is checked on what arrives
        for _ in range(10):
            yield b" " * 50

    async with client.post(
        "/polls/api/questions", data=chunks(), headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        await problem_of(resp)


async def test_body_over_client_max_size_is_413(client: Client) -> None:
    async with client.post(
        "/polls/api/questions", data=io.BytesIO(b" " * (1024**2 + 1)), headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        await problem_of(resp)


# -- GET /questions/{id} and /results --------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/results"])
@pytest.mark.parametrize(
    ("question_id", "detail"),
    [
        ("9999", "There is no question 9999."),
        ("99999999999999999999", "There is no question 99999999999999999999."),
        ("0", "There is no question 0."),
        ("abc", "Question id 'abc' is not an integer."),
        ("-1", "Question id '-1' is not an integer."),
        ("1.0", "Question id '1.0' is not an integer."),
        ("٣", "Question id '٣' is not an integer."),
    ],
)
async def test_unknown_or_non_integer_question_id_is_404_naming_it(
    client: Client, suffix: str, question_id: str, detail: str
) -> None:
    async with client.get(f"/polls/api/questions/{question_id}{suffix}") as resp:
        assert resp.status == 404
        assert (await problem_of(resp))["detail"] == detail


async def test_results_give_votes_and_percentages(client: Client) -> None:
    question = await create_question(client, "Up or down?", ["Up", "Down", "Sideways"])
    up, down, _ = (c["id"] for c in question["choices"])
    for choice in (up, up, down):
        async with client.post(f"/polls/api/questions/{question['id']}/votes", json={"choice": choice}) as resp:
            assert resp.status == 201
    async with client.get(f"/polls/api/questions/{question['id']}/results") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["total"] == 3
    assert [(c["text"], c["votes"], c["percent"]) for c in body["choices"]] == [
        ("Up", 2, 66.7),
        ("Down", 1, 33.3),
        ("Sideways", 0, 0.0),
    ]


# -- POST /questions/{id}/votes --------------------------------------------------------------


async def test_vote_is_201_with_the_new_counts(client: Client) -> None:
    question = await create_question(client)
    tea, coffee = (c["id"] for c in question["choices"])
    async with client.post(f"/polls/api/questions/{question['id']}/votes", json={"choice": coffee}) as resp:
        assert resp.status == 201
        body = await resp.json()
    assert body == {
        "question_id": question["id"],
        "choice": coffee,
        "total": 1,
        "choices": [{"id": tea, "votes": 0}, {"id": coffee, "votes": 1}],
    }


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "Required: the id of a choice."),
        ({"choice": None}, "Required: the id of a choice."),
        ({"choice": "1"}, "Must be an integer id."),
        ({"choice": 1.5}, "Must be an integer id."),
        ({"choice": True}, "Must be an integer id."),
        ({"choice": 1}, "is not one of the choices of question"),  # a sample question's choice
        ({"choice": -3}, "is not one of the choices of question"),
        ({"choice": 10**30}, "is not one of the choices of question"),
    ],
)
async def test_vote_with_bad_choice_is_422_naming_it(client: Client, body: dict[str, Any], error: str) -> None:
    question = await create_question(client)
    async with client.post(f"/polls/api/questions/{question['id']}/votes", json=body) as resp:
        assert resp.status == 422
        problem = await problem_of(resp)
    assert error in problem["errors"]["choice"]
    assert set((await votes_of(client, question["id"])).values()) == {0}


@pytest.mark.parametrize(("question_id", "status"), [("9999", 404), ("abc", 404), ("99999999999", 404)])
async def test_vote_on_unknown_question_is_404(client: Client, question_id: str, status: int) -> None:
    async with client.post(f"/polls/api/questions/{question_id}/votes", json={"choice": 1}) as resp:
        assert resp.status == status
        await problem_of(resp)


async def test_vote_with_invalid_json_is_400(client: Client) -> None:
    async with client.post(
        "/polls/api/questions/1/votes", data=b"choice=1", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        await problem_of(resp)


@pytest.mark.parametrize(
    ("method", "path"), [("DELETE", "/polls/api/questions/1"), ("PUT", "/polls/api/questions")]
)
async def test_unsupported_method_is_405_problem(client: Client, method: str, path: str) -> None:
    async with client.request(method, path) as resp:
        assert resp.status == 405
        await problem_of(resp)


async def test_unknown_api_path_is_404_problem(client: Client) -> None:
    async with client.get("/polls/api/nothing-here") as resp:
        assert resp.status == 404
        await problem_of(resp)


# -- token and configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    "tables",
    [
        {"nestor": {"api_token": "t0ken"}},
        {"polls": {"api_token": "t0ken"}},
        {"polls": {"api": {"api_token": "t0ken"}}},
    ],
)
@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 403), ({"Authorization": "Bearer t0ken"}, 200)],
)
async def test_api_token_set_at_any_level_is_demanded(
    aiohttp_client: AiohttpClient,
    make_polls: BuildPolls,
    tables: dict[str, Any],
    headers: dict[str, str],
    status: int,
) -> None:
    client = await aiohttp_client(make_polls(tables))
    async with client.get("/polls/api/questions", headers=headers) as resp:
        assert resp.status == status
        if status != 200:
            await problem_of(resp)


async def test_api_is_open_without_api_token(client: Client) -> None:
    async with client.get("/polls/api/questions") as resp:
        assert resp.status == 200


async def test_page_size_differs_between_polls_and_polls_api(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls
) -> None:
    client = await aiohttp_client(make_polls({"polls": {"page_size": 3, "api": {"page_size": 5}}}))
    for n in range(6):
        await create_question(client, f"Question {n}?")
    async with client.get("/polls/") as resp:
        assert resp.status == 200
        assert (await resp.text()).count('<li class="question">') == 3
    async with client.get("/polls/api/questions") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["limit"] == 5
    assert len(body["items"]) == 5
