"""Votes: none lost under concurrency, written even when the client leaves, announced live."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import aiohttp
import pytest

from nestor import BUS

from .conftest import Client, create_question, engine_of, slowed, votes_of, wait_for

T = TypeVar("T")
CONCURRENT_VOTES = 200
WRITE_DELAY = 0.5  # long enough for the client to hang up while the write waits


async def test_concurrent_votes_on_one_choice_are_all_counted(client: Client) -> None:
    question = await create_question(client)
    tea = question["choices"][0]["id"]

    async def vote() -> int:
        async with client.post(f"/polls/api/questions/{question['id']}/votes", json={"choice": tea}) as resp:
            return resp.status

    statuses = await asyncio.gather(*(vote() for _ in range(CONCURRENT_VOTES)))
    assert statuses == [201] * CONCURRENT_VOTES
    assert (await votes_of(client, question["id"]))[tea] == CONCURRENT_VOTES


async def eventually(read: Callable[[], Awaitable[T]], expected: T) -> T:
    """Return `read()` once it gives `expected`, trying for up to 5 s; else its last value."""
    for _ in range(100):
        value = await read()
        if value == expected:
            break
        await asyncio.sleep(0.05)
    return value


async def hang_up(client: Client, method: str, path: str, started: asyncio.Event, **kwargs: Any) -> None:
    """Send a request with its own connection and close it once the server's write has started."""
    async with aiohttp.ClientSession() as session:

        async def send() -> None:
            async with session.request(method, client.make_url(path), **kwargs) as resp:
                await resp.read()

        request = asyncio.create_task(send())
        await asyncio.wait_for(started.wait(), 10)
        request.cancel()
        with suppress(asyncio.CancelledError):
            await request
    assert request.cancelled()  # no answer came before the client left


async def test_vote_is_counted_when_the_client_disconnects_during_the_write(client: Client) -> None:
    question = await create_question(client)
    tea = question["choices"][0]["id"]
    with slowed(engine_of(client), "UPDATE polls_choice", WRITE_DELAY) as (started, events):
        await hang_up(client, "POST", f"/polls/api/questions/{question['id']}/votes", started, json={"choice": tea})
        events.append("client gone")
        assert await wait_for(lambda: "done" in events or "cancelled" in events)
    assert events == ["client gone", "done"]

    async def tea_votes() -> int:
        return (await votes_of(client, question["id"]))[tea]

    assert await eventually(tea_votes, 1) == 1


async def test_new_question_is_saved_when_the_client_disconnects_during_the_write(client: Client) -> None:
    body = {"text": "Still here?", "choices": ["Yes", "No"]}
    with slowed(engine_of(client), "INSERT INTO polls_question", WRITE_DELAY) as (started, events):
        await hang_up(client, "POST", "/polls/api/questions", started, json=body)
        events.append("client gone")
        assert await wait_for(lambda: "done" in events or "cancelled" in events)
    assert events == ["client gone", "done"]

    async def saved() -> int:
        async with client.get("/polls/api/questions", params={"q": "Still here?"}) as resp:
            assert resp.status == 200
            return (await resp.json())["total"]

    assert await eventually(saved, 1) == 1


@pytest.mark.parametrize("path", ["/polls/", "/polls/api/questions"])
async def test_slow_get_whose_client_left_is_cancelled(client: Client, path: str) -> None:
    with slowed(engine_of(client), "SELECT page.id, page.text", 30) as (started, events):  # the list
        await hang_up(client, "GET", path, started)
        assert await wait_for(lambda: bool(events))
    assert events == ["cancelled"]


async def test_vote_publishes_new_counts_on_the_bus(client: Client) -> None:
    question = await create_question(client)
    tea, coffee = (c["id"] for c in question["choices"])
    async with client.app[BUS].subscribe("polls.votes") as subscription:
        async with client.post(f"/polls/api/questions/{question['id']}/votes", json={"choice": tea}) as resp:
            assert resp.status == 201
        message = await asyncio.wait_for(subscription.get(), 5)
    assert message == {
        "question_id": question["id"],
        "total": 1,
        "choices": [{"id": tea, "votes": 1}, {"id": coffee, "votes": 0}],
    }


async def test_two_results_pages_see_each_vote_live(client: Client) -> None:
    question = await create_question(client)
    tea, coffee = (c["id"] for c in question["choices"])
    other = await create_question(client, "Another question?")
    async with (
        client.ws_connect(f"/polls/{question['id']}/live") as first,
        client.ws_connect(f"/polls/{question['id']}/live") as second,
    ):
        for ws in (first, second):
            now = await asyncio.wait_for(ws.receive_json(), 5)
            assert now["total"] == 0
        # A vote on another question is not sent to these pages.
        async with client.post(
            f"/polls/api/questions/{other['id']}/votes", json={"choice": other["choices"][0]["id"]}
        ) as resp:
            assert resp.status == 201
        async with client.post(f"/polls/api/questions/{question['id']}/votes", json={"choice": coffee}) as resp:
            assert resp.status == 201
        for ws in (first, second):
            update = await asyncio.wait_for(ws.receive_json(), 5)
            assert update == {
                "question_id": question["id"],
                "total": 1,
                "choices": [{"id": tea, "votes": 0}, {"id": coffee, "votes": 1}],
            }


async def test_live_for_unknown_question_is_404(client: Client) -> None:
    async with client.get("/polls/9999/live") as resp:
        assert resp.status == 404


async def test_live_page_closing_stops_its_subscription(client: Client) -> None:
    question = await create_question(client)
    async with client.ws_connect(f"/polls/{question['id']}/live") as ws:
        await asyncio.wait_for(ws.receive_json(), 5)

    async def subscribers() -> int:  # publish returns how many subscriptions got the message
        return await client.app[BUS].publish("polls.votes", {"question_id": question["id"]})

    assert await eventually(subscribers, 0) == 0
