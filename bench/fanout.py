"""Chat fan-out: `python -m bench.fanout [--sockets 1000] [--messages 200] [--bus memory|redis]`.

Starts a real `nestor serve` with only the chat sub-app on SQLite, pinned to core 0 (with
`--bus redis`: two of them behind one throw-away `redis-server`, the sockets split between
them). This process is the client, pinned to core 1: it opens `--sockets` websockets to one
room (`--join-batch` at a time), each a lean protocol that parses frames as they arrive
(aiohttp's client, used with `--compress`, costs twice the server's CPU per frame and set the
pace), waits until the room has them all (the API counts them and the join events stop
coming), then sends `--messages` messages one at a time (`POST /chat/api/rooms/{room}/messages`,
or with `--via ws` over the first socket) and times each from just before it is sent until
the last socket received it (client time stamps). It prints a markdown table: median, p99 and
max of those times; the server's resident memory per idle socket (VmRSS with the sockets open
and quiet, minus VmRSS after a first websocket came and went, over the number of sockets); the
CPU time per message of the servers and of the client; and the share of core 0 that other
processes took meanwhile (a run with much of it measures the neighbours). Only 127.0.0.1;
every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from . import load
from .postgres import free_port
from .run import TICKS, Server, busy_ticks

ROOM = "bench"
JOIN_BATCH = 50  # sockets that join at once (--join-batch)
BATCH_QUIET = 0.1  # seconds without a frame before the next batch joins
QUIET = 0.5  # seconds without a frame on any socket: the join events have all arrived
JOIN_SECONDS = 180.0  # every socket is in the room and quiet by then, or the run fails
MESSAGE_SECONDS = 10.0  # a message reaches every socket by then, or it counts as lost
WARMUP = 5  # messages sent and not counted, so that first-use costs stay out of the figures
PAUSE = 0.01  # seconds between a message reaching every socket and the next one being sent


def server_config(folder: Path, name: str, database_url: str, bus_url: str, compress: bool) -> Path:
    """Write the `nestor.toml` of one server: chat only."""
    path = folder / f"{name}.toml"
    path.write_text(
        "[nestor]\n"
        'subapps = ["chat"]\n'
        f'database_url = "{database_url}"\n'
        f'bus_url = "{bus_url}"\n'
    )
    return path


def chat_server(name: str, config: Path, loop: str) -> Server:
    """A `nestor serve` process on `config` (bench.run's Server starts it pinned to core 0)."""
    command = [sys.executable, "-m", "nestor.cli", "serve", "--config", str(config), "--host", "127.0.0.1",
               "--port", "{port}", "--log-level", "WARNING", "--loop", loop]
    return Server(name, command, "/health")


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start a throw-away redis-server on 127.0.0.1 (nothing on disk) on the client's core; return it and its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--bus redis needs redis-server (apt-get install redis-server)")
    port = free_port()
    command = [*load.pin(1), binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(folder), "--logfile", str(folder / "redis.log")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


def progress(text: str) -> None:
    """Say on stderr what the run is doing (the table goes to stdout)."""
    print(f"[fanout] {text}", file=sys.stderr, flush=True)


def rss_kib(pid: int) -> int:
    """The resident memory of a process, in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far, all its threads (schedstat, nanoseconds)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended while we looked
    return total / 1e9


# -- the client ---------------------------------------------------------------------------------


@dataclass
class Waiting:
    """One message on its way: how many sockets still lack it, and when the last one got it."""

    remaining: int
    done: asyncio.Future[None]
    last: float = 0.0


@dataclass
class Room:
    """What the client's sockets saw."""

    sockets: int
    waiting: dict[str, Waiting] = field(default_factory=dict)  # by message text
    last_frame: float = 0.0
    frames: int = 0
    closed: int = 0  # sockets the server closed during the run
    close_codes: dict[int | None, int] = field(default_factory=dict)

    def received(self, data: str | bytes, now: float) -> None:
        self.last_frame = now
        self.frames += 1
        if isinstance(data, str):
            data = data.encode()
        if not data.startswith(b'{"type":"message"'):
            return  # joins and leaves: counted, not parsed
        waiting = self.waiting.get(json.loads(data)["text"])
        if waiting is not None:
            waiting.remaining -= 1
            waiting.last = now
            if waiting.remaining == 0 and not waiting.done.done():
                waiting.done.set_result(None)


async def read(ws: aiohttp.ClientWebSocketResponse, room: Room) -> None:
    """Note the time each frame of `ws` arrives until it closes."""
    clock = time.perf_counter
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            room.received(message.data, clock())
        else:
            break
    room.closed += 1
    room.close_codes[ws.close_code] = room.close_codes.get(ws.close_code, 0) + 1


class RawSocket(asyncio.Protocol):
    """A lean websocket client (RFC 6455) that only notes when each text frame arrives.

    aiohttp's client costs about 20 µs of CPU per frame received (a task woken per frame), so
    with 1000 sockets the client, not the server, set the pace. This one parses frames in
    `data_received`, answers pings, and sends masked frames; the server's frames are
    neither masked nor compressed (it is asked for no permessage-deflate).
    """

    def __init__(self, room: Room, path: str, host: str) -> None:
        self.room, self.path, self.host = room, path, host
        self.transport: Any = None  # asyncio's or uvloop's (which is no asyncio.Transport)
        self.buffer = bytearray()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.close_code: int | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(f"handshake refused: {bytes(buffer[:200])!r}"))
                return
            del buffer[:end + 4]
            self.upgraded.set_result(None)
        now = time.perf_counter()
        start = 0
        size = len(buffer)
        while size - start >= 2:
            opcode, length = buffer[start] & 0x0F, buffer[start + 1] & 0x7F
            head = 2
            if length == 126:
                if size - start < 4:
                    break
                length, head = int.from_bytes(buffer[start + 2:start + 4], "big"), 4
            elif length == 127:
                if size - start < 10:
                    break
                length, head = int.from_bytes(buffer[start + 2:start + 10], "big"), 10
            if size - start < head + length:
                break
            payload = bytes(buffer[start + head:start + head + length])
            start += head + length
            if opcode == 0x1:
                self.room.received(payload, now)
            elif opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.lost()
        del buffer[:start]

    def send(self, opcode: int, payload: bytes) -> None:
        """Send one masked frame (a client must mask)."""
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            head = bytes((0x80 | opcode, 0x80 | size))
        elif size < 1 << 16:
            head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(head + mask + masked)

    async def send_str(self, text: str) -> None:
        self.send(0x1, text.encode())

    def lost(self) -> None:
        if not self.closed:
            self.closed = True
            self.room.closed += 1
            self.room.close_codes[self.close_code] = self.room.close_codes.get(self.close_code, 0) + 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the handshake"))
        self.lost()

    async def close(self) -> None:
        """Send a close frame (1000) and drop the connection."""
        self.closed = True  # ours: not counted as closed by the server
        self.send(0x8, (1000).to_bytes(2, "big"))
        if self.transport is not None:
            self.transport.close()


async def open_raw(url: str, path: str, room: Room) -> RawSocket:
    """Open a `RawSocket` to `path` on the server at `url`; return it once upgraded."""
    address = urllib.parse.urlsplit(url)
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: RawSocket(room, path, address.netloc),
                                               address.hostname or "127.0.0.1", address.port or 80)
    await asyncio.wait_for(protocol.upgraded, MESSAGE_SECONDS)
    return protocol


async def people(session: aiohttp.ClientSession, url: str) -> int:
    """How many people the server counts in the room (on every server, with Redis)."""
    async with session.get(f"{url}/chat/api/rooms") as resp:
        items = (await resp.json())["items"]
    return next((r["people"] for r in items if r["room"] == ROOM), 0)


async def fill_room(session: aiohttp.ClientSession, urls: list[str], count: int, room: Room, compress: int, batch: int
                    ) -> tuple[list[Any], list[asyncio.Task[None]]]:
    """Open `count` websockets to the room, split between `urls`; return once all are in and quiet.

    They join in batches, each once the last one's join events went out: every join is sent
    to everyone in the room, so 1000 joins are half a million frames, and a burst of them
    larger than a socket's send queue is not what this benchmark measures.
    """
    opened: list[Any] = []  # RawSocket, or aiohttp's websockets when the client asks for compression
    readers: list[asyncio.Task[None]] = []

    async def open_one(n: int) -> None:
        url, path = urls[n % len(urls)], f"/chat/ws/{ROOM}?name=c{n}"
        if not compress:
            opened.append(await open_raw(url, path, room))  # it notes frames from the start
            return
        ws = await session.ws_connect(url + path, compress=compress, max_msg_size=0)
        opened.append(ws)
        readers.append(asyncio.create_task(read(ws, room)))  # at once: the join events start coming

    async with asyncio.timeout(JOIN_SECONDS):
        for first in range(0, count, batch):
            await asyncio.gather(*(open_one(n) for n in range(first, min(count, first + batch))))
            while any([await people(session, url) != len(opened) for url in urls]):
                if room.closed:
                    raise RuntimeError(f"the server closed {room.closed} sockets while the room filled "
                                       f"(close codes: {room.close_codes})")
                await asyncio.sleep(0.05)
            await quiet(room, BATCH_QUIET)
        await quiet(room, QUIET)
    return opened, readers


async def quiet(room: Room, seconds: float) -> None:
    """Return once no socket received a frame for `seconds`."""
    while (idle := time.perf_counter() - room.last_frame) < seconds:
        await asyncio.sleep(seconds - idle)


async def send_one(session: aiohttp.ClientSession, url: str, first: Any,
                   room: Room, text: str, via: str) -> float | None:
    """Send one message; return the seconds until every socket had it (None if some never got it)."""
    loop = asyncio.get_running_loop()
    waiting = room.waiting[text] = Waiting(room.sockets, loop.create_future())
    began = time.perf_counter()
    if via == "ws":
        await first.send_str(json.dumps({"type": "message", "text": text}))
    else:
        async with session.post(f"{url}/chat/api/rooms/{ROOM}/messages", json={"text": text, "name": "bench"}) as resp:
            if resp.status != 201:
                raise RuntimeError(f"POST answered {resp.status}: {await resp.text()}")
    try:
        async with asyncio.timeout(MESSAGE_SECONDS):
            await waiting.done
    except TimeoutError:
        return None
    finally:
        del room.waiting[text]
    return waiting.last - began


@dataclass
class Figures:
    """What one run measured."""

    latencies_ms: list[float]
    lost: int
    rss_before_kib: int
    rss_idle_kib: int
    sockets: int
    join_seconds: float
    closed: int
    server_cpu_ms: float  # the servers' CPU time per message sent, while the messages went out
    client_cpu_ms: float  # this process's CPU time per message sent, meanwhile
    disturbance: float  # share of core 0's time that other processes used meanwhile


async def client(urls: list[str], pids: list[int], sockets: int, messages: int, via: str, compress: int,
                 batch: int = JOIN_BATCH) -> Figures:
    """Fill the room, then send the messages one at a time and time each to its last socket."""
    room = Room(sockets)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # First use of the database, a room and a websocket (tables, statements, the bus topic,
        # code run once) before the memory baseline: it is not what each socket costs.
        async with session.post(f"{urls[0]}/chat/api/rooms/warmup/messages", json={"text": "warm up"}) as resp:
            await resp.read()
        for url in urls:
            async with session.ws_connect(f"{url}/chat/ws/warmup?name=warm") as ws:
                await ws.receive(timeout=MESSAGE_SECONDS)  # its history
        await asyncio.sleep(0.5)
        before = sum(rss_kib(pid) for pid in pids)
        began = time.perf_counter()
        opened, readers = await fill_room(session, urls, sockets, room, compress, batch)
        join_seconds = time.perf_counter() - began
        progress(f"the room is full after {join_seconds:.1f} s; sending {WARMUP} + {messages} messages")
        idle = sum(rss_kib(pid) for pid in pids)
        latencies, lost = [], 0
        cpu_before, core_before, wall_before = sum(cpu_seconds(p) for p in pids), busy_ticks("cpu0"), time.monotonic()
        client_before = time.process_time()
        for n in range(WARMUP + messages):
            seconds = await send_one(session, urls[0], opened[0], room, f"m{n}", via)
            if n >= WARMUP:
                if seconds is None:
                    lost += 1
                else:
                    latencies.append(seconds * 1000)
            await asyncio.sleep(PAUSE)
        wall = time.monotonic() - wall_before
        server_cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
        client_cpu = time.process_time() - client_before
        core_after = busy_ticks("cpu0")
        others = 0.0
        if core_before is not None and core_after is not None:
            others = max(0.0, (core_after - core_before) / TICKS - server_cpu) / wall
        closed = room.closed
        progress("closing the sockets")
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
        for task in readers:
            task.cancel()
    return Figures(latencies, lost, before, idle, sockets, join_seconds, closed,
                   server_cpu * 1000 / (WARMUP + messages), client_cpu * 1000 / (WARMUP + messages), others)


# -- the run ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The value below which a share `q` of `values` lies (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def report(args: argparse.Namespace, figures: Figures, servers: int) -> str:
    """The markdown table of one run."""
    lat = figures.latencies_ms
    per_socket = (figures.rss_idle_kib - figures.rss_before_kib) / figures.sockets
    where = "memory bus, 1 server" if args.bus == "memory" else f"Redis bus, {servers} servers"
    header = ("| case | sockets | messages | median ms | p99 ms | max ms | lost | RSS per idle socket "
              "| server CPU per message | client CPU per message | others on core 0 | join s |")
    row = (f"| {where}, via {args.via}, server loop {args.loop}, client compress {args.compress} | {figures.sockets} "
           f"| {len(lat)} | {statistics.median(lat):.1f} | {percentile(lat, 0.99):.1f} | {max(lat):.1f} "
           f"| {figures.lost} | {per_socket:.1f} KiB | {figures.server_cpu_ms:.1f} ms | {figures.client_cpu_ms:.1f} ms "
           f"| {figures.disturbance:.0%} | {figures.join_seconds:.1f} |")
    rows = [header, "|---|---|---|---|---|---|---|---|---|---|---|---|", row]
    if figures.closed:
        rows.append(f"\n{figures.closed} sockets were closed by the server during the run.")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> str:
    """Start the servers (and Redis), run the client in this process on core 1, stop everything."""
    servers: list[Server] = []
    redis: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="nestor-fanout-") as name:
        folder = Path(name)
        try:
            database_url = f"sqlite+aiosqlite:///{folder / 'chat.sqlite3'}"
            bus_url = "memory://"
            count = 1
            if args.bus == "redis":
                redis, port = start_redis(folder)
                bus_url, count = f"redis://127.0.0.1:{port}/0", 2
            for n in range(count):  # one after the other: the first creates the tables
                server = chat_server(f"chat{n}", server_config(folder, f"chat{n}", database_url, bus_url, True), args.loop)
                server.start(folder)
                server.wait_ready(folder)
                servers.append(server)
            if load.pin(1):
                os.sched_setaffinity(0, {1})
            if args.client_loop == "uvloop":
                import uvloop

                uvloop.install()
            figures = asyncio.run(client([s.url for s in servers], [s.process.pid for s in servers if s.process],
                                         args.sockets, args.messages, args.via, args.compress, args.join_batch))
            return report(args, figures, count)
        finally:
            for server in servers:
                server.stop()
            if redis is not None:
                redis.terminate()
                redis.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000, help="websockets in the room (default 1000)")
    parser.add_argument("--messages", type=int, default=200, help="messages timed (default 200)")
    parser.add_argument("--bus", choices=["memory", "redis"], default="memory",
                        help="memory: one server; redis: two servers behind one redis-server")
    parser.add_argument("--via", choices=["post", "ws"], default="post", help="send with POST (default) or over a socket")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="the servers' event loop")
    parser.add_argument("--client-loop", choices=["asyncio", "uvloop"], default="asyncio", help="the client's event loop")
    parser.add_argument("--compress", type=int, default=0,
                        help="permessage-deflate window bits the client asks for (0: none, aiohttp's default; browsers ask for 15)")
    parser.add_argument("--join-batch", type=int, default=JOIN_BATCH,
                        help=f"sockets that join at once while the room fills (default {JOIN_BATCH}); what a burst of "
                             "joins leaves in the allocator counts in the RSS per socket")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    table = report_text = run(args)
    print(table)
    if args.output is not None:
        args.output.write_text(report_text + "\n")


if __name__ == "__main__":
    main()
