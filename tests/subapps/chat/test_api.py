"""The chat JSON API: rooms, history pages by id, posting messages that reach the websockets."""

from __future__ import annotations

import pytest
from pytest_aiohttp import AiohttpClient

from .conftest import BuildChat, Client, join, next_frame, post_message

PROBLEM = "application/problem+json"


async def test_posted_message_reaches_websockets_like_a_websocket_message(client: Client) -> None:
    ada, _ = await join(client, "lobby", "Ada")
    bob, _ = await join(client, "lobby", "Bob")
    async with client.post("/chat/api/rooms/lobby/messages", json={"text": "from the API", "name": "bot"}) as resp:
        assert resp.status == 201
        posted = await resp.json()
    for ws in (ada, bob):
        assert await next_frame(ws, "message") == posted
    assert (posted["type"], posted["room"], posted["name"], posted["text"]) == ("message", "lobby", "bot", "from the API")


async def test_posted_message_without_a_name_is_anonymous(client: Client) -> None:
    async with client.post("/chat/api/rooms/lobby/messages", json={"text": "who am I?"}) as resp:
        assert resp.status == 201
        assert (await resp.json())["name"] == "anonymous"


async def test_history_is_oldest_first_and_pages_back_by_id(client: Client) -> None:
    ids = [(await post_message(client, "lobby", f"m{n}"))["id"] for n in range(5)]
    await post_message(client, "elsewhere", "not in the lobby")
    async with client.get("/chat/api/rooms/lobby/messages?limit=2") as resp:
        assert resp.status == 200
        page = await resp.json()
    assert [m["text"] for m in page["items"]] == ["m3", "m4"]
    assert page["next"] == f"/chat/api/rooms/lobby/messages?before={ids[3]}&limit=2"
    async with client.get(page["next"]) as resp:
        assert [m["text"] for m in (await resp.json())["items"]] == ["m1", "m2"]
    async with client.get(f"/chat/api/rooms/lobby/messages?before={ids[1]}&limit=2") as resp:
        last = await resp.json()
    assert ([m["text"] for m in last["items"]], last["next"]) == (["m0"], None)


async def test_history_of_an_empty_room_is_an_empty_page(client: Client) -> None:
    async with client.get("/chat/api/rooms/quiet/messages") as resp:
        assert resp.status == 200
        assert await resp.json() == {"items": [], "limit": 20, "before": None, "next": None}


async def test_history_limit_is_capped_by_max_limit(aiohttp_client: AiohttpClient, make_chat: BuildChat) -> None:
    client = await aiohttp_client(make_chat({"chat": {"api": {"max_limit": 3}}}))
    for n in range(4):
        await post_message(client, "lobby", f"m{n}")
    async with client.get("/chat/api/rooms/lobby/messages?limit=100") as resp:
        page = await resp.json()
    assert (page["limit"], len(page["items"])) == (3, 3)


async def test_before_beyond_any_id_is_the_latest_page(client: Client) -> None:
    await post_message(client, "lobby", "latest")
    async with client.get("/chat/api/rooms/lobby/messages?before=9999999999") as resp:
        assert resp.status == 200
        assert [m["text"] for m in (await resp.json())["items"]] == ["latest"]


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=-1", "before=0", "before=1.5", "before=12345678901"])
async def test_bad_paging_parameter_is_a_400_problem(client: Client, query: str) -> None:
    async with client.get(f"/chat/api/rooms/lobby/messages?{query}") as resp:
        assert resp.status == 400
        assert resp.content_type == PROBLEM
        assert query.split("=")[0] in (await resp.json())["detail"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_bad_room_name_is_a_400_problem_saying_what_a_name_may_be(client: Client, method: str) -> None:
    async with client.request(method, "/chat/api/rooms/No%20Way/messages", json={"text": "hi"}) as resp:
        assert resp.status == 400
        assert resp.content_type == PROBLEM
        assert "lower-case letters" in (await resp.json())["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"text": ""}, "text"), ({"text": 3}, "text"), ({"text": "hi", "name": "x" * 41}, "name"), ({}, "text")],
)
async def test_invalid_message_is_a_422_naming_the_field(client: Client, body: dict[str, object], field: str) -> None:
    async with client.post("/chat/api/rooms/lobby/messages", json=body) as resp:
        assert resp.status == 422
        assert resp.content_type == PROBLEM
        assert list((await resp.json())["errors"]) == [field]


async def test_body_that_is_not_json_is_a_400(client: Client) -> None:
    headers = {"Content-Type": "application/json"}
    async with client.post("/chat/api/rooms/lobby/messages", data="{text", headers=headers) as resp:
        assert resp.status == 400
        assert "not valid JSON" in (await resp.json())["detail"]


async def test_body_sent_as_a_form_is_a_415(client: Client) -> None:
    async with client.post("/chat/api/rooms/lobby/messages", data={"text": "hi"}) as resp:
        assert resp.status == 415


async def test_body_over_max_message_size_is_a_413(aiohttp_client: AiohttpClient, make_chat: BuildChat) -> None:
    client = await aiohttp_client(make_chat({"chat": {"max_message_size": 100}}))
    async with client.post("/chat/api/rooms/lobby/messages", json={"text": "x" * 200}) as resp:
        assert resp.status == 413
        assert "max_message_size" in (await resp.json())["detail"]


async def test_rooms_lists_people_and_messages(client: Client) -> None:
    await join(client, "lobby", "Ada")
    await join(client, "lobby", "Bob")
    await post_message(client, "archive", "old news")
    async with client.get("/chat/api/rooms") as resp:
        assert resp.status == 200
        rooms = {r["room"]: r for r in (await resp.json())["items"]}
    assert (rooms["lobby"]["people"], rooms["lobby"]["messages"]) == (2, 0)
    assert (rooms["archive"]["people"], rooms["archive"]["messages"]) == (0, 1)
    assert rooms["archive"]["last_message_at"] is not None


async def test_api_token_guards_the_api_when_set(aiohttp_client: AiohttpClient, make_chat: BuildChat) -> None:
    client = await aiohttp_client(make_chat({"chat": {"api": {"api_token": "s3cret"}}}))
    async with client.get("/chat/api/rooms") as resp:
        assert resp.status == 401
    async with client.get("/chat/api/rooms", headers={"Authorization": "Bearer s3cret"}) as resp:
        assert resp.status == 200
