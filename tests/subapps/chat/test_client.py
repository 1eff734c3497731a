"""The terminal client (`nestor chat ROOM`), run as a real process against a real server."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from ...fixtures.redis import free_port
from .conftest import WAIT, BuildChat, next_frame

REPO = Path(__file__).resolve().parents[3]


class Terminal:
    """A running client: what it printed, and its stdin to type into."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.printed: list[str] = []

    async def line_with(self, text: str) -> str:
        """Return the first printed line containing `text`, reading on as needed."""
        async with asyncio.timeout(WAIT):
            for line in self.printed:
                if text in line:
                    return line
            while True:
                raw = await self.process.stdout.readline()  # type: ignore[union-attr]
                assert raw, f"the client ended without printing {text!r}; it printed {self.printed}"
                self.printed.append(raw.decode().rstrip("\n"))
                if text in self.printed[-1]:
                    return self.printed[-1]

    async def type(self, line: str) -> None:
        """Type a line."""
        self.process.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
        await self.process.stdin.drain()  # type: ignore[union-attr]

    async def exit(self) -> tuple[int, str]:
        """Wait for the client to end; return its exit status and what it said on stderr."""
        async with asyncio.timeout(WAIT):
            _, err = await self.process.communicate()
        assert self.process.returncode is not None
        return self.process.returncode, err.decode()


Start = Callable[..., Awaitable[Terminal]]


@pytest.fixture
async def start_client() -> AsyncIterator[Start]:
    """Return `start_client(*args)`: `nestor chat ARGS` (the repository's nestor.toml mounts chat) with
    pipes; killed after the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "platform"), str(REPO)])
    processes: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> Terminal:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nestor.cli", "chat", *args, cwd=REPO, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        processes.append(process)
        return Terminal(process)

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the client does not care which database the server keeps."""
    return f"sqlite+aiosqlite:///{tmp_path / 'chat.sqlite3'}"


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, make_chat: BuildChat) -> TestServer:
    """A Nestor server with the chat app, on a real port of 127.0.0.1."""
    return await aiohttp_server(make_chat())


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def test_client_prints_the_history_then_each_new_message(server: TestServer, start_client: Start) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base_url(server)}/chat/api/rooms/lobby/messages", json={"text": "earlier", "name": "Ada"}) as resp:
            assert resp.status == 201
        terminal = await start_client("lobby", "--url", base_url(server), "--name", "cli")
        assert (await terminal.line_with("earlier")).endswith("] Ada: earlier")
        await terminal.line_with("-- joined #lobby")
        async with session.ws_connect(f"{base_url(server)}/chat/ws/lobby?name=Bob") as bob:
            await bob.send_json({"type": "message", "text": "hello terminal"})
            assert (await terminal.line_with("hello terminal")).endswith("] Bob: hello terminal")


async def test_client_sends_each_line_typed_under_its_name(server: TestServer, start_client: Start) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{base_url(server)}/chat/ws/lobby") as ada:
        await next_frame(ada, "history")
        terminal = await start_client("lobby", "--url", base_url(server), "--name", "cli")
        await terminal.line_with("-- joined #lobby")
        await terminal.type("first line")
        await terminal.type("")  # an empty line sends nothing
        await terminal.type("second line")
        received = [await next_frame(ada, "message") for _ in range(2)]
    assert [(m["name"], m["text"]) for m in received] == [("cli", "first line"), ("cli", "second line")]


async def test_end_of_input_leaves_the_room_and_exits_0(server: TestServer, start_client: Start) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{base_url(server)}/chat/ws/lobby") as ada:
        await next_frame(ada, "history")
        terminal = await start_client("lobby", "--url", base_url(server), "--name", "cli")
        await terminal.line_with("-- joined #lobby")
        terminal.process.stdin.close()  # type: ignore[union-attr]  # Ctrl-D
        status, said = await terminal.exit()
        left = await next_frame(ada, "leave")
    assert (status, said.strip()) == (0, "Left the room. Bye.")
    assert left["name"] == "cli"


async def test_client_exits_1_saying_so_when_the_server_goes_away(server: TestServer, start_client: Start) -> None:
    terminal = await start_client("lobby", "--url", base_url(server), "--name", "cli")
    await terminal.line_with("-- joined #lobby")
    await server.close()
    status, said = await terminal.exit()
    assert (status, said.strip()) == (1, "The server went away (code 1001): The server is shutting down.")


async def test_client_exits_1_saying_so_when_no_server_answers(start_client: Start) -> None:
    terminal = await start_client("lobby", "--url", f"http://127.0.0.1:{free_port()}")
    status, said = await terminal.exit()
    assert status == 1
    assert said.startswith("Cannot join 'lobby' at ws://127.0.0.1:")


async def test_client_exits_1_with_the_servers_reason_for_a_bad_room(server: TestServer, start_client: Start) -> None:
    terminal = await start_client("Not-Valid", "--url", base_url(server))
    status, said = await terminal.exit()
    assert status == 1
    assert said.startswith("The server closed the connection (code 1008): Room name 'Not-Valid' is not valid")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1", "127.0.0.1:8080", "http://"])
async def test_url_that_is_not_a_server_address_is_a_usage_error(start_client: Start, url: str) -> None:
    terminal = await start_client("lobby", "--url", url)
    status, said = await terminal.exit()
    assert status == 2
    assert "must be an http:// or https:// server address" in said
