"""`nestor serve` as a real process: graceful shutdown, shielded writes, handler cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from ..conftest import MakeApp
from ..fixtures import serve_tree

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, process: asyncio.subprocess.Process, url: str, db: Path) -> None:
        self.process, self.url, self.db = process, url, db

    def rows(self) -> int:
        with sqlite3.connect(self.db) as conn:
            return conn.execute("SELECT count(*) FROM writes").fetchone()[0]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    port = free_port()
    db = tmp_path / "serve.sqlite3"
    (tmp_path / "nestor.toml").write_text(
        "[nestor]\n"
        'subapps = ["tests.fixtures.serve_tree"]\n'
        f'database_url = "sqlite+aiosqlite:///{db}"\n'
        "entry_points = false\n"
        "shutdown_timeout = 10\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nestor.cli", "serve", "--config", str(tmp_path / "nestor.toml"),
        "--port", str(port), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):  # up to 10 s for start-up
            try:
                async with session.get(f"{url}/health") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        else:
            process.kill()
            pytest.fail("nestor serve did not start: " + (await process.stdout.read()).decode())
    yield Server(process, url, db)
    if process.returncode is None:
        process.kill()
        await process.wait()


async def test_sigterm_finishes_in_flight_write_then_runs_cleanup(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(session.post(f"{server.url}/writes/slow"))
        await asyncio.sleep(serve_tree.WRITE_DELAY / 3)  # the request is in flight
        server.process.send_signal(signal.SIGTERM)
        resp = await pending
        assert resp.status == 201
        resp.release()
    output = (await asyncio.wait_for(server.process.stdout.read(), 20)).decode()
    assert await asyncio.wait_for(server.process.wait(), 20) == 0
    assert server.rows() == 1
    assert "writes: cleanup done" in output
    assert "Traceback" not in output


async def test_shielded_write_completes_after_client_disconnects(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            timeout = aiohttp.ClientTimeout(total=serve_tree.WRITE_DELAY / 5)
            await session.post(f"{server.url}/writes/slow", timeout=timeout)
        for _ in range(50):  # up to 5 s for the shielded job to land
            async with session.get(f"{server.url}/writes/count") as resp:
                assert resp.status == 200
                if (await resp.json())["count"] == 1:
                    break
            await asyncio.sleep(0.1)
    assert server.rows() == 1


async def test_get_whose_client_left_is_cancelled(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.get(f"{server.url}/writes/wait", timeout=aiohttp.ClientTimeout(total=0.2))
        for _ in range(50):
            async with session.get(f"{server.url}/writes/count") as resp:
                cancelled = (await resp.json())["cancelled"]
            if cancelled:
                break
            await asyncio.sleep(0.1)
    assert cancelled == 1


async def test_sub_app_creates_its_tables_in_the_kernel_database(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=[serve_tree.subapp]))
    async with client.get("/writes/count") as resp:
        assert resp.status == 200
        assert (await resp.json())["count"] == 0
