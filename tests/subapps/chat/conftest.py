"""Chat fixtures: every chat test runs twice, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

import nestor_subapps.chat

from ...conftest import MakeApp
from ...fixtures.postgres import database_url, postgres_server  # noqa: F401 (fixtures)
from ...fixtures.redis import redis_server  # noqa: F401 (a fixture)

BuildChat = Callable[..., web.Application]
Client = TestClient[web.Request, web.Application]
Socket = aiohttp.ClientWebSocketResponse
T = TypeVar("T")
WAIT = 10.0  # seconds any one expected frame or state may take before the test fails


@pytest.fixture
def make_chat(make_app: MakeApp, database_url: str) -> BuildChat:
    """Return `make_chat(tables=None)`: Nestor with only the chat sub-app, on this test's database."""

    def build(tables: dict[str, Any] | None = None) -> web.Application:
        tables = {key: dict(value) for key, value in (tables or {}).items()}
        tables.setdefault("nestor", {}).setdefault("database_url", database_url)
        return make_app(tables, specs=[nestor_subapps.chat.subapp])

    return build


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_chat: BuildChat) -> Client:
    """A client of Nestor with chat on its default configuration."""
    return await aiohttp_client(make_chat())


async def join(client: Client, room: str, name: str = "", **kwargs: Any) -> tuple[Socket, dict[str, Any]]:
    """Open a websocket to a room and return it with its history frame."""
    query = f"?name={name}" if name else ""
    ws = await client.ws_connect(f"/chat/ws/{room}{query}", **kwargs)
    history = await next_frame(ws, "history")
    return ws, history


async def next_frame(ws: Socket, kind: str) -> dict[str, Any]:
    """Return the next frame of type `kind`, skipping others (joins and leaves come and go)."""
    while True:
        frame = await next_frame_any(ws)
        if frame["type"] == kind:
            return frame


async def next_frame_any(ws: Socket) -> dict[str, Any]:
    """Return the next frame, whatever its type; fail if the socket closes instead."""
    msg = await ws.receive(timeout=WAIT)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a frame, got {msg.type!r} {msg.data!r} {msg.extra!r}"
    return msg.json()


async def close_of(ws: Socket) -> tuple[int | None, str]:
    """Read until the server closes; return its close code and reason."""
    async with asyncio.timeout(WAIT):
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return msg.data, msg.extra
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code, ""


async def post_message(client: Client, room: str, text: str, name: str = "api") -> dict[str, Any]:
    """Post a message through the API and return it as JSON."""
    async with client.post(f"/chat/api/rooms/{room}/messages", json={"text": text, "name": name}) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def people_in(client: Client, room: str) -> int:
    """Return how many people the API counts in a room."""
    async with client.get("/chat/api/rooms") as resp:
        assert resp.status == 200
        return next((r["people"] for r in (await resp.json())["items"] if r["room"] == room), 0)


async def eventually(read: Callable[[], Awaitable[T]], expected: T, seconds: float = WAIT) -> T:
    """Return `read()` once it gives `expected`, trying for up to `seconds`; else its last value."""
    for _ in range(int(seconds / 0.05)):
        value = await read()
        if value == expected:
            return value
        await asyncio.sleep(0.05)
    return await read()
