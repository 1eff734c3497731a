"""Chat across worker processes: two Nestor instances sharing one real Redis (and one database)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode
from pytest_aiohttp import AiohttpClient

from ...fixtures.redis import RedisServer
from .conftest import WAIT, BuildChat, Client, close_of, eventually, join, next_frame, people_in, post_message

REPO = Path(__file__).resolve().parents[3]
Pair = tuple[Client, Client]


@pytest.fixture
async def workers(aiohttp_client: AiohttpClient, make_chat: BuildChat, redis_server: RedisServer) -> Pair:
    """Two Nestor instances (two roots, two servers) on one Redis bus and one database."""
    tables = {"nestor": {"bus_url": redis_server.url()}}
    return await aiohttp_client(make_chat(tables)), await aiohttp_client(make_chat(tables))


async def arrives(ws: aiohttp.ClientWebSocketResponse, send: Callable[[str], Any], text: str) -> bool:
    """Send `text` until it reaches `ws` (right after Redis comes back, the first may be lost)."""
    for attempt in range(int(WAIT / 0.2)):
        await send(f"{text} #{attempt}")
        try:
            async with asyncio.timeout(0.2):
                while (frame := await next_frame(ws, "message"))["text"] != f"{text} #{attempt}":
                    pass
            return True
        except TimeoutError:
            continue
    return False


async def test_websocket_message_on_one_worker_reaches_a_websocket_on_the_other(workers: Pair) -> None:
    first, second = workers
    ada, _ = await join(first, "lobby", "Ada")
    bob, _ = await join(second, "lobby", "Bob")
    await ada.send_json({"type": "message", "text": "across workers"})
    for ws in (bob, ada):
        message = await next_frame(ws, "message")
        assert (message["name"], message["text"]) == ("Ada", "across workers")


async def test_api_message_on_one_worker_reaches_a_websocket_on_the_other(workers: Pair) -> None:
    first, second = workers
    bob, _ = await join(second, "lobby", "Bob")
    posted = await post_message(first, "lobby", "posted on the first")
    assert await next_frame(bob, "message") == posted


async def test_join_on_one_worker_is_seen_on_the_other(workers: Pair) -> None:
    first, second = workers
    ada, _ = await join(first, "lobby", "Ada")
    await join(second, "lobby", "Bob")
    names = [(await next_frame(ada, "join"))["name"]]
    while names[-1] != "Bob":
        names.append((await next_frame(ada, "join"))["name"])
    assert names[-1] == "Bob"


async def test_room_list_counts_people_on_every_worker(workers: Pair) -> None:
    first, second = workers
    await join(first, "lobby", "Ada")
    await join(first, "lobby", "Cy")
    await join(second, "lobby", "Bob")
    assert await eventually(lambda: people_in(second, "lobby"), 3) == 3
    assert await eventually(lambda: people_in(first, "lobby"), 3) == 3


async def test_redis_down_local_rooms_go_on_and_health_says_the_bus_is_not_ready(
    workers: Pair, redis_server: RedisServer
) -> None:
    first, _ = workers
    ada, _ = await join(first, "lobby", "Ada")
    cy, _ = await join(first, "lobby", "Cy")
    redis_server.stop()

    async def health() -> tuple[int, list[str]]:
        async with first.get("/health") as resp:
            return resp.status, (await resp.json())["not_ready"]

    assert await eventually(health, (503, ["bus"])) == (503, ["bus"])
    await ada.send_json({"type": "message", "text": "still chatting"})
    assert (await next_frame(cy, "message"))["text"] == "still chatting"


async def test_redis_back_messages_cross_workers_again_without_a_restart(
    workers: Pair, redis_server: RedisServer
) -> None:
    first, second = workers
    await join(first, "lobby", "Ada")
    bob, _ = await join(second, "lobby", "Bob")
    redis_server.stop()

    async def bus_ready(client: Client) -> bool:
        async with client.get("/health") as resp:
            return (await resp.json())["checks"]["bus"]["ready"]

    assert await eventually(lambda: bus_ready(second), False) is False
    redis_server.start()
    assert await eventually(lambda: bus_ready(second), True) is True
    assert await eventually(lambda: bus_ready(first), True) is True
    assert await arrives(bob, lambda text: post_message(first, "lobby", text), "after the restart")


# -- two real `nestor serve` processes ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Server:
    """A running `nestor serve` process and its base URL."""

    url: str
    process: asyncio.subprocess.Process


Serve = Callable[[], Awaitable[Server]]


@pytest.fixture
async def serve(tmp_path: Path, database_url: str, redis_server: RedisServer) -> AsyncIterator[Serve]:
    """Return `serve()`: start one more `nestor serve` process of one deployment (one Redis, one database)."""
    config = tmp_path / "nestor.toml"
    config.write_text(
        "[nestor]\n"
        'subapps = ["chat"]\n'
        f'database_url = "{database_url}"\n'
        f'bus_url = "{redis_server.url()}"\n'
        "shutdown_timeout = 10\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "platform"), str(REPO)])
    processes: list[asyncio.subprocess.Process] = []

    async def start() -> Server:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nestor.cli", "serve", "--config", str(config), "--port", str(port),
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # up to 20 s for start-up
                try:
                    async with session.get(f"{url}/health") as resp:
                        if resp.status == 200:
                            return Server(url, process)
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        process.kill()
        pytest.fail("nestor serve did not start: " + (await process.stdout.read()).decode())  # type: ignore[union-attr]

    yield start
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def test_message_sent_to_one_server_process_reaches_a_client_of_another(serve: Serve) -> None:
    first, second = await serve(), await serve()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{second.url}/chat/ws/lobby?name=Bob") as bob:
            await next_frame(bob, "history")
            async with session.ws_connect(f"{first.url}/chat/ws/lobby?name=Ada") as ada:
                await next_frame(ada, "history")
                await ada.send_json({"type": "message", "text": "from another process"})
                message = await next_frame(bob, "message")
    assert (message["name"], message["text"]) == ("Ada", "from another process")


async def test_stopping_a_server_process_closes_its_websockets_with_1001(serve: Serve) -> None:
    server = await serve()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/chat/ws/lobby?name=Ada") as ws:
            await next_frame(ws, "history")
            server.process.send_signal(signal.SIGTERM)
            code, reason = await close_of(ws)
    assert (code, reason) == (WSCloseCode.GOING_AWAY, "The server is shutting down.")
    assert await asyncio.wait_for(server.process.wait(), WAIT) == 0
