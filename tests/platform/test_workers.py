"""`nestor serve --workers 2` as real processes on one port, sharing real PostgreSQL and Redis servers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from ..fixtures import serve_tree
from ..fixtures.postgres import free_port, postgres_server, postgres_url  # noqa: F401 (fixtures)
from ..fixtures.redis import RedisServer, redis_server  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[2]
RUNNING = re.compile(r"Running on (\S+) with 2 workers \(pids (\d+), (\d+); loop (\w+)\)")
CLIENTS = 24  # separate connections: all on one worker by chance has odds of 2 ** -23
VOTES_PER_CLIENT = 5


class Site:
    """A running `nestor serve --workers 2`: its supervisor, worker pids and combined output."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.url, self.pids, self.loop = "", (0, 0), ""
        self._new_line = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._new_line.set()

    async def line(self, pattern: str | re.Pattern[str], seconds: float = 30) -> re.Match[str]:
        """Return the first output line matching `pattern`, waiting up to `seconds` for it."""
        regex = re.compile(pattern)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            for line in self.lines:
                if match := regex.search(line):
                    return match
            if self._reader.done() or loop.time() > deadline:
                pytest.fail(f"no line matching {regex.pattern!r} in:\n" + "\n".join(self.lines))
            self._new_line.clear()
            with_timeout = max(0.0, min(1.0, deadline - loop.time()))
            try:
                await asyncio.wait_for(self._new_line.wait(), with_timeout)
            except TimeoutError:
                pass

    async def stop(self) -> int:
        """Send SIGTERM to the supervisor and return its exit status."""
        self.process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(self.process.wait(), 40)
        await asyncio.wait_for(self._reader, 10)
        return status


async def start_site(folder: Path, database_url: str, bus_url: str, *extra: str) -> Site:
    """Start `nestor serve --workers 2` with polls, chat, whoami and the writes fixture; wait until it serves."""
    config = folder / "nestor.toml"
    config.write_text(
        "[nestor]\n"
        'subapps = ["polls", "chat", "tests.fixtures.whoami", "tests.fixtures.serve_tree"]\n'
        f'database_url = "{database_url}"\n'
        f'bus_url = "{bus_url}"\n'
        "shutdown_timeout = 10\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    env["PYTHONPATH"] = f"{REPO / 'platform'}{os.pathsep}{REPO}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nestor.cli", "serve", "--config", str(config),
        "--port", str(free_port()), "--workers", "2", "--log-level", "WARNING", *extra,
        cwd=folder, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    site = Site(process)
    running = await site.line(RUNNING, seconds=60)
    site.url, site.pids, site.loop = running[1], (int(running[2]), int(running[3])), running[4]
    return site


@pytest.fixture
async def site(tmp_path: Path, postgres_url: str, redis_server: RedisServer) -> AsyncIterator[Site]:  # noqa: F811
    """Two workers on one port, both on the same PostgreSQL database and the same Redis bus."""
    started = await start_site(tmp_path, postgres_url, redis_server.url())
    yield started
    if started.process.returncode is None:
        started.process.kill()
        await started.process.wait()


class Connection:
    """One client connection, kept alive: every request on it reaches the same worker."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened = 0  # TCP connections made: 1 means every request went to one worker
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(self._opened)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace])

    async def _opened(self, *_: object) -> None:
        self.opened += 1

    async def request(self, method: str, path: str, **kwargs: object) -> tuple[int, dict[str, object]]:
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            return resp.status, await resp.json()

    async def worker(self) -> int:
        status, body = await self.request("GET", "/whoami/")
        assert status == 200
        return int(body["pid"])

    async def websocket(self, path: str) -> aiohttp.ClientWebSocketResponse:
        """Open a websocket on this connection (so on the worker `worker()` named)."""
        return await self.session.ws_connect(self.url + path)

    async def close(self) -> None:
        await self.session.close()


async def on_each_worker(site: Site, path: str) -> dict[int, tuple[Connection, aiohttp.ClientWebSocketResponse]]:
    """Return a websocket to `path` open on each worker, with its connection, by worker pid."""
    sockets: dict[int, tuple[Connection, aiohttp.ClientWebSocketResponse]] = {}
    spare: list[Connection] = []
    for _ in range(CLIENTS * 2):  # new connections until both workers have one
        conn = Connection(site.url)
        pid = await conn.worker()
        if pid in sockets:
            spare.append(conn)
            continue
        sockets[pid] = (conn, await conn.websocket(path))
        assert conn.opened == 1  # the websocket is on the connection whose worker answered
        if len(sockets) == 2:
            break
    for conn in spare:
        await conn.close()
    assert set(sockets) == set(site.pids)
    return sockets


async def next_json(ws: aiohttp.ClientWebSocketResponse, kind: str | None = None) -> dict[str, object]:
    """Return the next JSON frame (of `type` `kind` when given), waiting up to 10 s."""
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a frame, got {msg.type!r}"
        frame = msg.json()
        if kind is None or frame.get("type") == kind:
            return frame


async def close_all(sockets: dict[int, tuple[Connection, aiohttp.ClientWebSocketResponse]]) -> None:
    for conn, ws in sockets.values():
        await ws.close()
        await conn.close()


async def test_votes_sent_to_both_workers_add_up_exactly(site: Site) -> None:
    first = Connection(site.url)
    status, question = await first.request(
        "POST", "/polls/api/questions", json={"text": "Which worker?", "choices": ["one", "two"]}
    )
    assert status == 201
    await first.close()
    choices = [c["id"] for c in question["choices"]]

    async def client(number: int) -> tuple[int, list[int], int]:
        conn = Connection(site.url)
        try:
            pid = await conn.worker()
            statuses = [
                (await conn.request("POST", f"/polls/api/questions/{question['id']}/votes",
                                    json={"choice": choices[(number + i) % 2]}))[0]
                for i in range(VOTES_PER_CLIENT)
            ]
            return pid, statuses, conn.opened
        finally:
            await conn.close()

    results = await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    assert {pid for pid, _, _ in results} == set(site.pids)
    assert [opened for _, _, opened in results] == [1] * CLIENTS  # each client's votes went to one worker
    assert [s for _, statuses, _ in results for s in statuses] == [201] * (CLIENTS * VOTES_PER_CLIENT)
    sent = {c: sum(1 for n in range(CLIENTS) for i in range(VOTES_PER_CLIENT) if choices[(n + i) % 2] == c)
            for c in choices}
    reader = Connection(site.url)
    status, counts = await reader.request("GET", f"/polls/api/questions/{question['id']}/results")
    await reader.close()
    assert status == 200
    assert {c["id"]: c["votes"] for c in counts["choices"]} == sent


async def test_vote_on_one_worker_reaches_live_results_on_both(site: Site) -> None:
    poster = Connection(site.url)
    status, question = await poster.request(
        "POST", "/polls/api/questions", json={"text": "Seen everywhere?", "choices": ["yes", "no"]}
    )
    assert status == 201
    sockets = await on_each_worker(site, f"/polls/{question['id']}/live")
    try:
        for _, ws in sockets.values():
            first = await next_json(ws)
            assert [c["votes"] for c in first["choices"]] == [0, 0]
        voter_pid = await poster.worker()
        status, _ = await poster.request(
            "POST", f"/polls/api/questions/{question['id']}/votes", json={"choice": question["choices"][1]["id"]}
        )
        assert status == 201
        updates = {pid: await next_json(ws) for pid, (_, ws) in sockets.items()}
    finally:
        await close_all(sockets)
        await poster.close()
    assert voter_pid in updates  # one update came through the voter's own worker, one through Redis
    assert {pid: [c["votes"] for c in u["choices"]] for pid, u in updates.items()} == {
        pid: [0, 1] for pid in site.pids
    }


async def test_chat_message_on_one_worker_reaches_sockets_on_both(site: Site) -> None:
    sockets = await on_each_worker(site, "/chat/ws/lobby?name=watcher")
    try:
        for _, ws in sockets.values():
            await next_json(ws, "history")
        sender_pid, (_, sender) = next(iter(sockets.items()))
        await sender.send_json({"type": "message", "text": f"hello from {sender_pid}"})
        received = {pid: await next_json(ws, "message") for pid, (_, ws) in sockets.items()}
    finally:
        await close_all(sockets)
    assert {pid: frame["text"] for pid, frame in received.items()} == {
        pid: f"hello from {sender_pid}" for pid in site.pids
    }
    assert len({frame["id"] for frame in received.values()}) == 1  # one stored message, seen twice


async def test_sigterm_drains_in_flight_writes_of_both_workers(site: Site, postgres_url: str) -> None:  # noqa: F811
    connections = [Connection(site.url) for _ in range(CLIENTS)]
    pids = [await conn.worker() for conn in connections]
    assert set(pids) == set(site.pids)
    writes = [asyncio.ensure_future(conn.request("POST", "/writes/slow")) for conn in connections]
    await asyncio.sleep(serve_tree.WRITE_DELAY / 3)  # every write is in flight
    status = await site.stop()
    answers = await asyncio.gather(*writes)
    for conn in connections:
        await conn.close()
    assert [code for code, _ in answers] == [201] * CLIENTS
    assert [conn.opened for conn in connections] == [1] * CLIENTS  # each write went to a known worker
    assert status == 0
    assert sum("writes: cleanup done" in line for line in site.lines) == 2
    engine = create_async_engine(postgres_url)
    async with engine.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM writes")) == CLIENTS
    await engine.dispose()


async def test_killed_worker_is_reported_with_its_signal(site: Site) -> None:
    victim = site.pids[0]
    os.kill(victim, signal.SIGKILL)
    await site.line(rf"worker \d \(pid {victim}\) was killed by SIGKILL")


async def test_killed_worker_is_replaced_by_a_new_one(site: Site) -> None:
    victim, survivor = site.pids
    os.kill(victim, signal.SIGKILL)
    replacement = int((await site.line(r"worker \d \(pid (\d+)\) is serving"))[1])
    seen: set[int] = set()
    for _ in range(CLIENTS * 2):  # new connections until both workers have answered
        conn = Connection(site.url)
        seen.add(await conn.worker())
        await conn.close()
        if len(seen) == 2:
            break
    assert seen == {survivor, replacement}


async def test_workers_stop_when_the_supervisor_is_killed(site: Site) -> None:
    site.process.kill()
    await site.process.wait()
    for _ in range(100):  # up to 10 s: each worker checks on its supervisor every second
        alive = [pid for pid in site.pids if _exists(pid)]
        if not alive:
            break
        await asyncio.sleep(0.1)
    assert alive == []


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


async def test_every_worker_runs_the_loop_asked_for(
    tmp_path: Path, postgres_url: str, redis_server: RedisServer  # noqa: F811
) -> None:
    site = await start_site(tmp_path, postgres_url, redis_server.url(), "--loop", "asyncio")
    try:
        loops = set()
        for _ in range(CLIENTS):
            conn = Connection(site.url)
            status, body = await conn.request("GET", "/whoami/")
            await conn.close()
            assert status == 200
            loops.add(body["loop"])
        assert (site.loop, loops) == ("asyncio", {"asyncio"})
    finally:
        assert await site.stop() == 0


async def test_worker_that_cannot_start_stops_the_server_with_exit_1(tmp_path: Path) -> None:
    unreachable = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    config = tmp_path / "nestor.toml"
    config.write_text(
        f'[nestor]\nsubapps = ["tests.fixtures.whoami"]\ndatabase_url = "{unreachable}"\n'
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nestor.cli", "serve", "--config", str(config), "--port", str(free_port()),
        "--workers", "2", "--allow-memory-bus", cwd=tmp_path, env=env,  # no worker gets as far as the bus
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(process.stdout.read(), 60)).decode()
    assert await process.wait() == 1
    assert re.search(r"worker \d \(pid \d+\) exited with code 1 during start-up", output)
    assert "cannot connect" in output


async def test_one_scrape_reports_the_hosts_totals_and_each_workers_figures(site: Site) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    connections = [Connection(site.url) for _ in range(8)]  # new connections land on both workers
    served_by: dict[int, int] = {}
    try:
        for conn in connections:
            for _ in range(5):
                pid = await conn.worker()  # GET /whoami/: 40 in all
                served_by[pid] = served_by.get(pid, 0) + 1
    finally:
        for conn in connections:
            await conn.close()
    assert set(served_by) == set(site.pids), "the test needs requests on both workers"
    for _ in range(4):  # each scrape reaches one worker or the other: every one sees the host
        async with aiohttp.ClientSession() as session, session.get(site.url + "/metrics") as resp:
            assert resp.status == 200
            samples = [s for family in text_string_to_metric_families(await resp.text()) for s in family.samples]
        whoami = [s for s in samples if s.name == "nestor_http_requests_total" and s.labels.get("subapp") == "whoami"]
        assert sum(s.value for s in whoami) == 40
        memory = {s.labels["worker"] for s in samples if s.name == "nestor_process_resident_memory_bytes"}
        assert memory == {"0", "1", "supervisor"}
        pools = {s.labels["worker"] for s in samples if s.name == "nestor_db_pool_size"}
        assert pools == {"0", "1"}
