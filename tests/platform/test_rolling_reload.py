"""SIGHUP to `nestor serve --workers 2`: new workers from the current config, then the old ones drain.

Real processes on 127.0.0.1, a SQLite file and the memory bus. A load of 16 client loops runs
through each reload, 8 on keep-alive connections and 8 opening a connection per request. Every
connection error and every status other than 200 is a failure, and so is a request aiohttp's
client sent twice: RFC 9112 lets it resend an idempotent request whose reused connection was
closed under it, which would hide a dropped request, so each attempt is counted.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType

from ..fixtures.served import Served, serve

LOOPS = 16
WAIT = 30.0  # seconds any one step may take
RUNNING = re.compile(r"Running on \S+ with 2 workers \(pids (\d+), (\d+);")
RELOADING = re.compile(r"SIGHUP: reloading")
RELOADED = re.compile(r"reloaded: the new workers \(pids (\d+), (\d+)\) serve; the old ones \(pids (\d+), (\d+)\)")
FAILED = re.compile(
    r"ERROR nestor\.serve: reload failed, the old workers \(pids (\d+), (\d+)\) keep serving: "
    r"new worker \d \(pid \d+\) exited with code 1 during start-up: (.+)"
)
PROBE = "tests.fixtures.reloaded"


def config_body(page_size: int, *subapps: str) -> str:
    """The `[nestor]` lines after the database_url (`serve` writes it; `rewrite_config` keeps it)."""
    names = ", ".join(f'"{name}"' for name in (PROBE, *subapps))
    return f"subapps = [{names}]\npage_size = {page_size}\n"


def rewrite_config(folder: Path, body: str) -> None:
    """Write nestor.toml as `serve` does: [nestor], the SQLite file, then `body`."""
    database = f'database_url = "sqlite+aiosqlite:///{folder / "nestor.sqlite3"}"'
    (folder / "nestor.toml").write_text(f"[nestor]\n{database}\n{body}\n", encoding="utf-8")


class Site:
    """A running `nestor serve --workers 2` (the supervisor) and what its log says."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.url = served.url
        self.pids: set[int] = set()

    def lines(self) -> list[str]:
        return self.served.log().splitlines()

    async def line(self, pattern: re.Pattern[str], nth: int = 1) -> re.Match[str]:
        """Return the `nth` log line matching `pattern`, waiting up to WAIT seconds for it."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            found = [m for m in map(pattern.search, self.lines()) if m]
            if len(found) >= nth:
                return found[nth - 1]
            if not self.served.alive() or asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"no line {nth} matching {pattern.pattern!r} in:\n{self.served.log()}")
            await asyncio.sleep(0.05)

    def hang_up(self) -> None:
        os.kill(self.served.pid, signal.SIGHUP)


def workers_of(supervisor: int) -> set[int]:
    """The worker processes `supervisor` runs now (multiprocessing's resource tracker left out)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == supervisor and b"spawn_main" in command:
                found.add(int(entry.name))
    return found


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def gone(pids: set[int]) -> None:
    """Wait up to WAIT seconds until none of `pids` runs."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while alive := {pid for pid in pids if running(pid)}:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"still running after {WAIT} s: {sorted(alive)}")
        await asyncio.sleep(0.05)


Launch = Callable[..., Awaitable[Site]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start `nestor serve --workers 2` on a config of the probe and `subapps`; stop it and its workers after."""
    sites: list[Site] = []

    async def start(*subapps: str, page_size: int = 20) -> Site:
        served = await serve(
            tmp_path, config_body(page_size, *subapps),
            "--workers", "2", "--allow-memory-bus", "--log-level", "WARNING",
        )
        site = Site(served)
        sites.append(site)
        site.pids = {int(pid) for pid in (await site.line(RUNNING)).groups()}
        return site

    yield start
    for site in sites:
        left = workers_of(site.served.pid)
        await site.served.stop(timeout=WAIT)
        for pid in left:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Answer:
    at: float
    pid: int
    page_size: int


@dataclass
class Load:
    """LOOPS clients asking `GET /reloaded/` back to back, half of them on keep-alive connections."""

    url: str
    sent: int = 0
    attempts: int = 0  # connections taken for a request: more than `sent` means one was resent
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._client(keep_alive=n % 2 == 0)) for n in range(LOOPS)]

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), WAIT)

    async def until(self, answered: int) -> None:
        """Wait until `answered` answers have come in all (the load is under way)."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while len(self.answers) < answered and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert len(self.answers) >= answered, self.failures[:5]

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.at <= end]

    async def _attempt(self, *_: object) -> None:
        self.attempts += 1

    async def _client(self, keep_alive: bool) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_connection_create_start.append(self._attempt)
        trace.on_connection_reuseconn.append(self._attempt)
        connector = aiohttp.TCPConnector(limit=1, force_close=not keep_alive)
        timeout = aiohttp.ClientTimeout(total=10)
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=[trace]) as session:
            while not self.stopping.is_set():
                self.sent += 1
                try:
                    async with session.get(self.url + "/reloaded/") as resp:
                        if resp.status != 200:
                            self.failures.append(f"{resp.status}: {await resp.text()}")
                            continue
                        body = await resp.json()
                    self.answers.append(Answer(loop.time(), body["pid"], body["page_size"]))
                except (aiohttp.ClientError, TimeoutError) as e:
                    self.failures.append(repr(e))


@pytest.fixture
async def load() -> AsyncIterator[Callable[[str], Load]]:
    started: list[Load] = []

    def start(url: str) -> Load:
        running_load = Load(url)
        running_load.start()
        started.append(running_load)
        return running_load

    yield start
    for each in started:
        if not each.stopping.is_set():
            await each.stop()


async def statuses_by_worker(url: str, path: str, pids: set[int]) -> dict[int, int]:
    """GET `path` on new connections until each worker in `pids` has answered it; return the statuses by pid."""
    statuses: dict[int, int] = {}
    for _ in range(64):  # new connections land on either worker: 64 misses have odds of 2 ** -63
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            async with session.get(url + "/reloaded/") as resp:
                pid = (await resp.json())["pid"]
            if pid not in statuses:
                async with session.get(url + path) as resp:  # the same connection: the same worker
                    statuses[pid] = resp.status
        if set(statuses) >= pids:
            break
    return statuses


async def test_sighup_puts_a_new_subapp_and_setting_live_with_no_failed_request(
    launch: Launch, load: Callable[[str], Load], tmp_path: Path
) -> None:
    site = await launch(page_size=20)
    traffic = load(site.url)
    await traffic.until(answered=300)
    rewrite_config(tmp_path, config_body(30, "hello"))
    asked_at = asyncio.get_running_loop().time()
    site.hang_up()
    reloaded = await site.line(RELOADED)
    new, old = {int(reloaded[1]), int(reloaded[2])}, {int(reloaded[3]), int(reloaded[4])}
    await gone(old)
    drained_at = asyncio.get_running_loop().time()
    await traffic.until(answered=len(traffic.answers) + 300)
    await traffic.stop()

    assert traffic.failures == []
    assert traffic.attempts == traffic.sent  # not one request was resent by the client
    assert old == site.pids and not new & old
    during = traffic.between(asked_at, drained_at)
    assert {a.pid for a in during} == old | new  # both generations answered while the reload ran
    assert {(a.pid in new, a.page_size) for a in traffic.answers} == {(False, 20), (True, 30)}
    assert {a.pid for a in traffic.answers if a.at > drained_at} == new
    assert await statuses_by_worker(site.url, "/hello/", new) == {pid: 200 for pid in new}
    print(f"\n{traffic.sent} requests, {len(during)} answered during the reload, 0 failed")


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ('subapps = ["tests.fixtures.reloaded"\n', "invalid TOML"),
        ('subapps = ["tests.fixtures.reloaded", "tests.fixtures.no_such_subapp"]\n', "could not be imported"),
    ],
    ids=["invalid-toml", "missing-subapp"],
)
async def test_broken_config_leaves_the_old_workers_serving_until_a_fixed_one(
    launch: Launch, load: Callable[[str], Load], tmp_path: Path, broken: str, reason: str
) -> None:
    site = await launch(page_size=20)
    traffic = load(site.url)
    await traffic.until(answered=300)
    rewrite_config(tmp_path, broken)
    site.hang_up()
    failed = await site.line(FAILED)
    await gone(workers_of(site.served.pid) - site.pids)  # the other new worker stops too
    tried_at = asyncio.get_running_loop().time()
    await traffic.until(answered=len(traffic.answers) + 300)

    assert {int(failed[1]), int(failed[2])} == site.pids
    assert reason in failed[3]
    assert sum("reload failed" in line for line in site.lines()) == 1
    assert all(running(pid) for pid in site.pids)
    assert {a.pid for a in traffic.answers if a.at > tried_at} == site.pids

    rewrite_config(tmp_path, config_body(30))
    site.hang_up()
    reloaded = await site.line(RELOADED)
    new = {int(reloaded[1]), int(reloaded[2])}
    await gone(site.pids)
    await traffic.until(answered=len(traffic.answers) + 300)
    await traffic.stop()
    assert traffic.failures == []
    assert traffic.attempts == traffic.sent
    assert {a.pid for a in traffic.answers[-100:]} <= new
    assert {a.page_size for a in traffic.answers[-100:]} == {30}


async def next_frame(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, object]:
    """Return the next JSON frame of `type` `kind`, waiting up to 10 s."""
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.TEXT, f"expected a frame, got {msg.type!r}"
        frame = msg.json()
        if frame.get("type") == kind:
            return frame


async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Wait (up to WAIT seconds) for the server to close `ws`; return its close code."""
    while True:
        msg = await ws.receive(timeout=WAIT)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return ws.close_code


Sockets = dict[int, tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]]


async def sockets_on(url: str, pids: set[int]) -> Sockets:
    """Open a chat websocket on each worker in `pids`: on the connection whose `GET /reloaded/` it answered."""
    opened: Sockets = {}
    for _ in range(64):  # new connections land on either worker
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        async with session.get(url + "/reloaded/") as resp:
            pid = (await resp.json())["pid"]
        if pid in opened:
            await session.close()
            continue
        ws = await session.ws_connect(url + "/chat/ws/lobby?name=watcher")  # the same, kept-alive connection
        opened[pid] = (session, ws)
        await next_frame(ws, "history")
        if set(opened) >= pids:
            return opened
    await close_all(opened)
    pytest.fail(f"no websocket on each of {sorted(pids)}: {sorted(opened)}")


async def close_all(sockets: Sockets) -> None:
    for session, ws in sockets.values():
        await ws.close()
        await session.close()


async def test_websockets_on_old_workers_close_with_1001_and_new_ones_work(launch: Launch) -> None:
    site = await launch("chat")
    old_sockets = await sockets_on(site.url, site.pids)
    new_sockets: Sockets = {}
    try:
        site.hang_up()
        reloaded = await site.line(RELOADED)
        # Watched together, as a browser does: a client that reads one socket while another's
        # close frame waits unread answers that one too late (aiohttp's client then reports 1006).
        codes = await asyncio.gather(*(close_code(ws) for _, ws in old_sockets.values()))
        assert dict(zip(old_sockets, codes)) == {pid: WSCloseCode.GOING_AWAY for pid in site.pids}
        new = {int(reloaded[1]), int(reloaded[2])}
        new_sockets = await sockets_on(site.url, new)
        for pid, (_, ws) in new_sockets.items():
            await ws.send_json({"type": "message", "text": f"hello {pid}"})
            assert (await next_frame(ws, "message"))["text"] == f"hello {pid}"
    finally:
        await close_all(old_sockets)
        await close_all(new_sockets)


async def test_sighup_during_a_reload_is_queued_not_run_at_once(launch: Launch) -> None:
    site = await launch()
    site.hang_up()
    await site.line(RELOADING)
    site.hang_up()
    await site.line(re.compile(r"SIGHUP during a reload: another reload follows once this one is done"))
    first = await site.line(RELOADED)
    second = await site.line(RELOADED, nth=2)
    lines = site.lines()
    order = [n for n, line in enumerate(lines) if RELOADING.search(line) or RELOADED.search(line)]
    assert ["reloading" if RELOADING.search(lines[n]) else "reloaded" for n in order] == [
        "reloading", "reloaded", "reloading", "reloaded"
    ]  # one generation at a time
    generations = [site.pids, {int(first[1]), int(first[2])}, {int(second[1]), int(second[2])}]
    assert {int(second[3]), int(second[4])} == generations[1]
    assert len(set().union(*generations)) == 6


async def test_sigterm_during_a_reload_stops_old_and_new_workers(launch: Launch) -> None:
    site = await launch()
    site.hang_up()
    await site.line(RELOADING)
    deadline = asyncio.get_running_loop().time() + WAIT
    while len(workers := workers_of(site.served.pid) - site.pids) < 2:  # the new workers have started
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert await site.served.stop(timeout=WAIT) == 0
    await gone(site.pids | workers)
    assert not [line for line in site.lines() if " ERROR " in line]


async def test_sighup_to_a_single_process_is_logged_and_it_keeps_serving(tmp_path: Path) -> None:
    served = await serve(tmp_path, config_body(20), "--log-level", "WARNING")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(served.url + "/reloaded/") as resp:
                assert resp.status == 200
                before = await resp.json()
            rewrite_config(tmp_path, config_body(30))
            os.kill(served.pid, signal.SIGHUP)
            site = Site(served)
            said = await site.line(re.compile(r"WARNING nestor\.serve: SIGHUP ignored: a single process cannot reload"))
            assert "--workers N" in said.string
            async with session.get(served.url + "/reloaded/") as resp:
                assert resp.status == 200
                after = await resp.json()
        assert after == before  # the same process, with the settings it started with
    finally:
        assert await served.stop(timeout=WAIT) == 0


async def test_workers_1_runs_under_the_supervisor_and_reloads(tmp_path: Path) -> None:
    served = await serve(tmp_path, config_body(20), "--workers", "1", "--log-level", "WARNING")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(served.url + "/reloaded/") as resp:
                before = await resp.json()
            assert before["page_size"] == 20 and before["pid"] != served.pid  # a worker, not the supervisor
            rewrite_config(tmp_path, config_body(30))
            os.kill(served.pid, signal.SIGHUP)
            deadline = asyncio.get_running_loop().time() + WAIT
            after = before
            while after["page_size"] != 30 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
                async with session.get(served.url + "/reloaded/") as resp:
                    assert resp.status == 200  # never a failure while the one worker is replaced
                    after = await resp.json()
        assert after["page_size"] == 30, served.log()
        assert after["pid"] != before["pid"]  # a new worker, with the new configuration
    finally:
        assert await served.stop(timeout=WAIT) == 0
