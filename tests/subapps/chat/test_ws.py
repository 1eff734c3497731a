"""The chat websocket: joins, messages and leaves between clients; bad frames; slow clients."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import WSCloseCode
from pytest_aiohttp import AiohttpClient

from .conftest import BuildChat, Client, close_of, eventually, join, next_frame, next_frame_any, people_in, post_message

MANY = 50


async def test_message_reaches_everyone_in_the_room_with_its_sender_name(client: Client) -> None:
    ada, _ = await join(client, "lobby", "Ada")
    bob, _ = await join(client, "lobby", "Bob")
    await ada.send_json({"type": "message", "text": "  Hello, Bob!  ", "name": "Ada L."})
    for ws in (ada, bob):
        message = await next_frame(ws, "message")
        assert (message["room"], message["name"], message["text"]) == ("lobby", "Ada L.", "Hello, Bob!")
        assert isinstance(message["id"], int)


async def test_message_does_not_reach_other_rooms(client: Client) -> None:
    ada, _ = await join(client, "lobby", "Ada")
    other, _ = await join(client, "kitchen", "Cy")
    await ada.send_json({"type": "message", "text": "only the lobby"})
    await other.send_json({"type": "message", "text": "only the kitchen"})
    assert (await next_frame(other, "message"))["text"] == "only the kitchen"
    assert (await next_frame(ada, "message"))["text"] == "only the lobby"


async def test_message_without_a_name_uses_the_name_given_when_joining(client: Client) -> None:
    ada, _ = await join(client, "lobby", "Ada")
    await ada.send_json({"type": "message", "text": "hi"})
    assert (await next_frame(ada, "message"))["name"] == "Ada"


async def test_others_see_a_join_and_a_leave_with_the_people_count(client: Client) -> None:
    ada, history = await join(client, "lobby", "Ada")
    assert history["people"] == 1
    bob, _ = await join(client, "lobby", "Bob")
    joined = await next_frame(ada, "join")
    while joined["name"] != "Bob":  # Ada's own join may come first
        joined = await next_frame(ada, "join")
    assert joined["people"] == 2
    await bob.close()
    left = await next_frame(ada, "leave")
    assert (left["name"], left["people"]) == ("Bob", 1)


@pytest.mark.parametrize("length", [1, 200, 70_000])  # frames with 1-, 2- and 8-byte lengths
async def test_short_and_long_messages_arrive_whole(aiohttp_client: AiohttpClient, make_chat: BuildChat, length: int) -> None:
    client = await aiohttp_client(make_chat({"chat": {"max_text": 100_000, "max_message_size": 200_000}}))
    ada, _ = await join(client, "lobby", "Ada")
    bob, _ = await join(client, "lobby", "Bob")
    text = "é" + "x" * (length - 1)
    await ada.send_json({"type": "message", "text": text})
    for ws in (bob, ada):
        assert (await next_frame(ws, "message"))["text"] == text


async def test_name_from_the_query_string_is_decoded(client: Client) -> None:
    ws = await client.ws_connect("/chat/ws/lobby", params={"name": "Ada L. & Bob+Cy"})
    await next_frame(ws, "history")
    await ws.send_json({"type": "message", "text": "hi"})
    assert (await next_frame(ws, "message"))["name"] == "Ada L. & Bob+Cy"


async def test_every_one_of_many_clients_gets_each_message_once(client: Client) -> None:
    sockets = [(await join(client, "crowd", f"user{n}"))[0] for n in range(MANY)]
    await sockets[0].send_json({"type": "message", "text": "first"})
    # Sent once the first is out: two messages in flight at once may be stored in either order.
    assert (await next_frame(sockets[0], "message"))["text"] == "first"
    await post_message(client, "crowd", "second")
    assert (await next_frame(sockets[0], "message"))["text"] == "second"
    for ws in sockets[1:]:
        assert (await next_frame(ws, "message"))["text"] == "first"
        assert (await next_frame(ws, "message"))["text"] == "second"
    assert await people_in(client, "crowd") == MANY


async def test_joining_shows_the_last_messages_oldest_first(aiohttp_client: AiohttpClient, make_chat: BuildChat) -> None:
    client = await aiohttp_client(make_chat({"chat": {"history": 3}}))
    for n in range(5):
        await post_message(client, "lobby", f"message {n}")
    _, history = await join(client, "lobby")
    assert [m["text"] for m in history["messages"]] == ["message 2", "message 3", "message 4"]


async def test_history_and_live_messages_never_repeat_a_message(client: Client) -> None:
    await post_message(client, "lobby", "before")
    ada, history = await join(client, "lobby", "Ada")
    await post_message(client, "lobby", "after")
    assert [m["text"] for m in history["messages"]] == ["before"]
    assert (await next_frame(ada, "message"))["text"] == "after"


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ("", "not JSON"),
        ("hello", "not JSON"),
        ("[1, 2]", "Unknown frame"),
        ('{"type": "shout", "text": "hi"}', "Unknown frame"),
        ('{"type": "message"}', "text: The text must be a string"),
        ('{"type": "message", "text": "   "}', "text: Write something"),
        ('{"type": "message", "text": "x", "name": 7}', "name: The name must be text"),
        ('{"type": "message", "text": "bell \\u0007"}', "control characters"),
        (json.dumps({"type": "message", "text": "x" * 2001}), "At most 2000 characters"),
    ],
)
async def test_bad_frame_gets_an_error_and_the_connection_stays_open(client: Client, frame: str, says: str) -> None:
    ws, _ = await join(client, "lobby", "Ada")
    await ws.send_str(frame)
    assert says in (await next_frame(ws, "error"))["error"]
    await ws.send_json({"type": "message", "text": "still here"})
    assert (await next_frame(ws, "message"))["text"] == "still here"


async def test_bad_frame_is_not_stored(client: Client) -> None:
    ws, _ = await join(client, "lobby")
    await ws.send_json({"type": "message", "text": ""})
    await next_frame(ws, "error")
    async with client.get("/chat/api/rooms/lobby/messages") as resp:
        assert resp.status == 200
        assert (await resp.json())["items"] == []


async def test_binary_frame_closes_with_1003(client: Client) -> None:
    ws, _ = await join(client, "lobby")
    await ws.send_bytes(b'{"type": "message", "text": "hi"}')
    code, reason = await close_of(ws)
    assert code == WSCloseCode.UNSUPPORTED_DATA
    assert "Binary frames are not accepted" in reason


async def test_oversized_frame_closes_with_1009(aiohttp_client: AiohttpClient, make_chat: BuildChat) -> None:
    client = await aiohttp_client(make_chat({"chat": {"max_message_size": 1024}}))
    ws, _ = await join(client, "lobby")
    await ws.send_str(json.dumps({"type": "message", "text": "x" * 2000}))
    code, _ = await close_of(ws)
    assert code == WSCloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize("room", ["Lobby", "-dash", "a" * 41, "sp ace", "caf%C3%A9", "api"])
async def test_bad_room_name_closes_with_a_reason(client: Client, room: str) -> None:
    ws = await client.ws_connect(f"/chat/ws/{room}")
    code, reason = await close_of(ws)
    assert code == WSCloseCode.POLICY_VIOLATION
    assert "Room name" in reason


async def test_bad_name_closes_with_a_reason(client: Client) -> None:
    ws = await client.ws_connect("/chat/ws/lobby?name=" + "n" * 41)
    code, reason = await close_of(ws)
    assert code == WSCloseCode.POLICY_VIOLATION
    assert "At most 40 characters" in reason


async def test_client_that_stops_reading_is_closed_with_1013_and_others_get_everything(
    aiohttp_client: AiohttpClient, make_chat: BuildChat
) -> None:
    big = 100_000  # characters per message: a few fill the socket buffers of a client that never reads
    client = await aiohttp_client(
        make_chat({"chat": {"send_queue": 4, "max_text": big, "max_message_size": 4 * big}})
    )
    slow, _ = await join(client, "lobby", "slow")
    fast, _ = await join(client, "lobby", "fast")
    sent = 0
    while await people_in(client, "lobby") == 2 and sent < 400:  # bounded: ~40 MB at most
        await post_message(client, "lobby", str(sent).ljust(big, "."))
        sent += 1
        assert (await next_frame(fast, "message"))["text"].startswith(str(sent - 1))
    assert await people_in(client, "lobby") == 1  # the slow one was dropped ...
    await post_message(client, "lobby", "after")
    assert (await next_frame(fast, "message"))["text"] == "after"  # ... and the fast one goes on
    code, reason = await close_of(slow)  # reading now drains what was sent before the close
    assert code == WSCloseCode.TRY_AGAIN_LATER
    assert "Too slow" in reason


async def test_peer_that_does_not_answer_pings_is_dropped(aiohttp_client: AiohttpClient, make_chat: BuildChat) -> None:
    client = await aiohttp_client(make_chat({"chat": {"heartbeat": 0.2}}))
    await join(client, "lobby", "mute", autoping=False)  # receives pings, never answers
    assert await eventually(lambda: people_in(client, "lobby"), 0) == 0


async def test_server_shutdown_closes_every_websocket_with_1001(aiohttp_client: AiohttpClient, make_chat: BuildChat) -> None:
    client = await aiohttp_client(make_chat())
    sockets = [(await join(client, room))[0] for room in ("lobby", "lobby", "kitchen")]
    closing = asyncio.gather(*(close_of(ws) for ws in sockets))
    await client.server.close()
    for code, reason in await closing:
        assert code == WSCloseCode.GOING_AWAY
        assert reason == "The server is shutting down."


async def test_message_sent_just_before_leaving_is_stored(client: Client) -> None:
    ws, _ = await join(client, "lobby", "Ada")
    await ws.send_json({"type": "message", "text": "bye"})
    await ws.close()

    async def texts() -> list[str]:
        async with client.get("/chat/api/rooms/lobby/messages") as resp:
            return [m["text"] for m in (await resp.json())["items"]]

    assert await eventually(texts, ["bye"]) == ["bye"]


async def test_error_frame_goes_to_the_sender_only(client: Client) -> None:
    ada, _ = await join(client, "lobby", "Ada")
    bob, _ = await join(client, "lobby", "Bob")
    await ada.send_str("not json")
    await next_frame(ada, "error")
    await ada.send_json({"type": "message", "text": "after the error"})
    seen = []
    while not seen or seen[-1]["type"] != "message":
        seen.append(await next_frame_any(bob))
    assert [f["type"] for f in seen if f["type"] == "error"] == []
