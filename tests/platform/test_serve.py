"""`nestor serve` as a real process: graceful shutdown, shielded writes, handler cancellation,
the event loop, and what the configuration allows for several workers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from ..conftest import MakeApp
from ..fixtures import serve_tree
from ..fixtures.cli_run import nestor, write_config
from ..fixtures.served import serve

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


async def start_server(folder: Path, *extra: str) -> Server:
    """Run `nestor serve` (plus `extra` arguments) on a free port; return once /health answers."""
    port = free_port()
    db = folder / "serve.sqlite3"
    (folder / "nestor.toml").write_text(
        "[nestor]\n"
        'subapps = ["tests.fixtures.serve_tree", "tests.fixtures.whoami"]\n'
        f'database_url = "sqlite+aiosqlite:///{db}"\n'
        "shutdown_timeout = 10\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nestor.cli", "serve", "--config", str(folder / "nestor.toml"),
        "--port", str(port), *extra, cwd=folder, env=env,
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
    return Server(process, url, db)


async def stop_server(server: Server) -> None:
    if server.process.returncode is None:
        server.process.kill()
        await server.process.wait()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    started = await start_server(tmp_path)
    yield started
    await stop_server(started)


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


# -- the event loop ----------------------------------------------------------------------------


async def loop_of(server: Server) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/whoami/") as resp:
            assert resp.status == 200
            return (await resp.json())["loop"]


async def test_loop_asyncio_serves_on_the_standard_loop(tmp_path: Path) -> None:
    server = await start_server(tmp_path, "--loop", "asyncio")
    try:
        assert await loop_of(server) == "asyncio"
    finally:
        await stop_server(server)


async def test_uvloop_is_used_by_default_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("uvloop")
    server = await start_server(tmp_path)
    try:
        assert await loop_of(server) == "uvloop"
    finally:
        await stop_server(server)


def test_loop_uvloop_without_uvloop_exits_1_saying_how_to_install(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    # `sys.modules[name] = None` is how Python marks a module as not importable.
    program = (
        "import sys; sys.modules['uvloop'] = None; from nestor.cli import main; "
        f"sys.exit(main(['serve', '--loop', 'uvloop', '--config', {str(config)!r}]))"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "nestor: error: --loop uvloop: uvloop is not installed; install it with "
        "pip install 'nestor[uvloop]', or use --loop asyncio"
    ]


# -- several workers: what the configuration allows ---------------------------------------------


def test_check_refuses_several_workers_with_the_in_process_bus(tmp_path: Path) -> None:
    result = nestor("check", "--workers", "2", "--config", str(write_config(tmp_path, "")))
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1
    assert "bus_url is 'memory://'" in problems[0]
    assert "redis://" in problems[0]


def test_serve_refuses_several_workers_with_the_in_process_bus(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    result = nestor("serve", "--workers", "2", "--port", str(free_port()), "--config", str(config))
    assert result.returncode == 1
    [error] = [line for line in result.stderr.splitlines() if line.startswith("nestor: error: ")]
    assert "--workers 2: bus_url is 'memory://'" in error
    assert "--allow-memory-bus" in error


def test_check_warns_that_sqlite_has_one_writer_with_several_workers(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    result = nestor("check", "--workers", "2", "--allow-memory-bus", "--config", str(config))
    assert result.returncode == 0, result.stdout
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert any("SQLite" in w and "one writer" in w for w in warnings)
    assert result.stdout.splitlines()[-1] == "no problems found"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"NESTOR_DATABASE_URL": "sqlite+aiosqlite:///:memory:"}, "in-memory SQLite database, a different one in each worker"),
        ({"NESTOR_PORT": "0"}, "port 0 would give each worker a port of its own"),
    ],
    ids=["in-memory-sqlite", "port-0"],
)
def test_check_refuses_what_cannot_be_shared_by_several_workers(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    config = write_config(tmp_path, "")
    result = nestor("check", "--workers", "2", "--allow-memory-bus", "--config", str(config), env=env)
    assert result.returncode == 1
    [line] = [line for line in result.stdout.splitlines() if line.startswith("  - ")]
    assert problem in line


def test_check_with_one_worker_says_nothing_about_workers(tmp_path: Path) -> None:
    result = nestor("check", "--workers", "1", "--config", str(write_config(tmp_path, "")))
    assert result.returncode == 0, result.stdout
    assert "--workers" not in result.stdout


@pytest.mark.parametrize("workers", ["0", "-2", "two"])
def test_workers_must_be_a_whole_number_of_at_least_one(tmp_path: Path, workers: str) -> None:
    result = nestor("serve", f"--workers={workers}", "--config", str(write_config(tmp_path, "")))
    assert result.returncode == 2
    assert "--workers" in result.stderr


async def test_port_given_on_the_command_line_is_the_port_the_app_sees(tmp_path: Path) -> None:
    # The monitor checks this server's own /health at the `port` setting: --port must reach it.
    served = await serve(tmp_path, 'subapps = ["monitor"]')  # serve() passes --port
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{served.url}/monitor/api/targets") as resp:
                assert resp.status == 200
                (own,) = (await resp.json())["items"]
    finally:
        await served.stop()
    assert own["url"] == f"{served.url}/health"


# -- one instance per address -------------------------------------------------------------------------


async def test_a_second_nestor_serve_on_the_same_address_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = await serve(tmp_path, "")
    try:
        second = tmp_path / "second"
        second.mkdir()
        config = write_config(second, "", subapps="[]")
        result = nestor("serve", "--config", str(config), "--port", str(first.port))
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"nestor: error: nestor serve (pid {first.pid}) already serves 127.0.0.1:{first.port}: stop it first, "
            "or start this one with --overlap to run both for a deploy (then stop the old one with SIGTERM)"
        ]
    finally:
        assert await first.stop() == 0


async def test_overlap_starts_beside_the_running_one_and_a_pidfile_comes_and_goes(tmp_path: Path) -> None:
    first = await serve(tmp_path, "")
    second_folder = tmp_path / "second"
    second_folder.mkdir()
    pidfile = second_folder / "nestor.pid"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    try:
        # /health answers at once (the first one serves the port): the second one's pidfile says it is up.
        second = await serve(second_folder, "", "--overlap", "--pid-file", str(pidfile), env=env, port=first.port)
        try:
            for _ in range(200):
                if pidfile.exists() or not second.alive():
                    break
                await asyncio.sleep(0.1)
            assert pidfile.read_text() == f"{second.pid}\n", second.log()
        finally:
            assert await second.stop() == 0
        assert not pidfile.exists()
    finally:
        assert await first.stop() == 0
