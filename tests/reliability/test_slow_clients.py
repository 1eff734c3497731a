"""Slow and oversized clients: a client that dribbles its request does not hold the server.

A real `nestor serve` (chat on SQLite) runs with `keepalive_timeout = 2`: aiohttp then closes a
connection that has not sent a whole request head 2 seconds after connecting. At once, on raw
sockets: 20 clients send a request head one byte a second; ordinary clients make requests
meanwhile; one client sends a whole head and then its body one byte a second; and requests with
a request line, a header or a header count past aiohttp's limits (max_line_size and
max_field_size: 8190 bytes; max_headers: 128) arrive. Everything runs concurrently, so the
module takes about as long as its longest wait.

What aiohttp does: it closes a slow head's connection KEEPALIVE seconds after the connection
was made, without a response; it answers 400 to an oversized line, header or header count and
closes. aiohttp has no limit for a slow body: a handler that reads the body (here the chat
API's POST) would wait as long as the client takes; Nestor's root setting body_timeout closes
the connection when the body is not all in that long after the handler started. (A handler
that does not read the body answers at once, and aiohttp then waits up to its lingering_time,
10 s, for the rest of the body before it closes.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from ..fixtures.served import serve

HOST = "127.0.0.1"
KEEPALIVE = 2.0  # seconds: the root setting keepalive_timeout of the server under test
DRIBBLERS = 20
DRIBBLE_EVERY = 1.0  # seconds between two bytes of a slow client
# A slow client stops waiting this long after connecting. aiohttp should have closed it after
# KEEPALIVE; the rest is slack for a busy 2-core box.
HELD_AT_LATEST = KEEPALIVE + 6.0
NORMAL = 20  # ordinary requests made while the slow clients dribble
NORMAL_SPREAD = 2 * KEEPALIVE  # seconds over which they are made: during the dribble and after the cut
NORMAL_TIMEOUT = 10.0  # seconds an ordinary request may take (generous: no timing assertion)
BODY_TIMEOUT = 2.0  # seconds: the root setting body_timeout of the server under test
CONFIG = f'subapps = ["chat"]\nkeepalive_timeout = {KEEPALIVE}\nbody_timeout = {BODY_TIMEOUT}'
HEAD = f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nAccept: */*\r\n\r\n".encode()
BODY = json.dumps({"text": "one byte a second", "name": "slow"}).encode()
BODY_HEAD = (
    f"POST /chat/api/rooms/lobby/messages HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(BODY)}\r\n\r\n"
).encode()
LIMIT = 8190  # bytes: aiohttp's max_line_size and max_field_size
MAX_HEADERS = 128  # aiohttp's max_headers
OVERSIZED = {
    "request line": f"GET /health?q={'a' * (LIMIT + 10)} HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
    "header value": f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {'b' * (LIMIT + 10)}\r\n\r\n",
    "header name": f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nX-{'c' * (LIMIT + 10)}: 1\r\n\r\n",
    "header count": f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n"
    + "".join(f"X-H{n}: {n}\r\n" for n in range(MAX_HEADERS + 10))
    + "\r\n",
}


@dataclass
class Dribble:
    """What one slow client saw: when its connection ended, and what came back before."""

    sent: int = 0  # bytes sent
    closed_after: float | None = None  # seconds from connecting to the server's close; None: still open
    response: bytes = b""


async def dribble(port: int, head: bytes, body: bytes = b"") -> Dribble:
    """Send `head` (whole when `body` is given, else one byte a second), then `body` one byte a second."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(HOST, port)
    connected = loop.time()
    seen = Dribble()

    async def read_all() -> None:
        try:
            while chunk := await reader.read(65536):
                seen.response += chunk
        except ConnectionError:
            pass
        seen.closed_after = loop.time() - connected

    reading = asyncio.create_task(read_all())
    slow = body or head
    try:
        if body:
            writer.write(head)
            seen.sent += len(head)
        for n in range(len(slow)):
            writer.write(slow[n : n + 1])
            await writer.drain()
            seen.sent += 1
            try:
                async with asyncio.timeout(DRIBBLE_EVERY):
                    await asyncio.shield(reading)
                break  # the server closed the connection
            except TimeoutError:
                if loop.time() - connected >= HELD_AT_LATEST:
                    break
    except ConnectionError:
        pass  # the server closed the connection before this byte
    finally:
        await asyncio.wait({reading}, timeout=0.5)  # a close may be on its way
        reading.cancel()
        writer.close()
    return seen


async def oversized(port: int, request: str) -> int | None:
    """Send one oversized request; return the status of the response (None without one)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request.encode())
        await writer.drain()
        async with asyncio.timeout(NORMAL_TIMEOUT):
            line = await reader.readline()
    except ConnectionError:
        return None
    finally:
        writer.close()
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def ordinary(url: str) -> list[int | str]:
    """Make NORMAL requests spread over NORMAL_SPREAD seconds; return their statuses (or errors)."""
    timeout = aiohttp.ClientTimeout(total=NORMAL_TIMEOUT)
    # A fresh connection each: a kept-alive one could be closed by the server's keepalive_timeout
    # just as a request goes out on it, which is no fault of the server.
    connector = aiohttp.TCPConnector(force_close=True)
    statuses: list[int | str] = []
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for n in range(NORMAL):
            await asyncio.sleep(NORMAL_SPREAD / NORMAL)
            path = "/health" if n % 2 else "/chat/api/rooms"
            try:
                async with session.get(f"{url}{path}") as resp:
                    await resp.read()
                    statuses.append(resp.status)
            except (aiohttp.ClientError, TimeoutError) as e:
                statuses.append(f"{path}: {type(e).__name__}")
    return statuses


@dataclass
class Run:
    """What the slow, ordinary and oversized clients saw, and whether the server stayed up."""

    heads: list[Dribble]
    body: Dribble
    statuses: list[int | str]
    oversized: dict[str, int | None]
    health_after: int | None
    alive: bool


async def run_clients(folder: Path) -> Run:
    served = await serve(folder, CONFIG)
    try:
        heads = [asyncio.create_task(dribble(served.port, HEAD)) for _ in range(DRIBBLERS)]
        body = asyncio.create_task(dribble(served.port, BODY_HEAD, BODY))
        statuses = await ordinary(served.url)
        big = {name: await oversized(served.port, request) for name, request in OVERSIZED.items()}
        done_heads = await asyncio.gather(*heads)
        done_body = await body
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{served.url}/health") as resp:
                health_after = resp.status
        return Run(done_heads, done_body, statuses, big, health_after, served.alive())
    finally:
        await served.stop()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Run the slow, ordinary and oversized clients once for the whole module, and report the figures."""
    result = asyncio.run(run_clients(tmp_path_factory.mktemp("slow-clients")))
    closed = [d.closed_after for d in result.heads]
    print(
        f"\nslow clients (keepalive_timeout {KEEPALIVE} s): {DRIBBLERS} slow heads closed after "
        f"{', '.join('held' if c is None else f'{c:.1f}' for c in closed)} s, having sent "
        f"{sorted({d.sent for d in result.heads})} bytes, answering "
        f"{sorted({d.response[:12] for d in result.heads})}; "
        f"slow body: {'held' if result.body.closed_after is None else f'closed after {result.body.closed_after:.1f} s'}"
        f" ({result.body.sent} bytes sent); ordinary requests meanwhile: {result.statuses}; "
        f"oversized: {result.oversized}"
    )
    yield result


def test_slow_request_head_is_closed_after_keepalive_timeout(run: Run) -> None:
    closed = [d.closed_after for d in run.heads]
    assert None not in closed, f"the server still held slow clients {HELD_AT_LATEST} s after they connected"
    assert all(KEEPALIVE * 0.9 <= c <= HELD_AT_LATEST for c in closed if c is not None), closed


def test_ordinary_requests_are_served_while_slow_clients_dribble(run: Run) -> None:
    assert run.statuses == [200] * NORMAL


def test_slow_request_body_is_closed_too(run: Run) -> None:
    assert run.body.closed_after is not None, f"the server still held a slow body {HELD_AT_LATEST} s after it connected"


@pytest.mark.parametrize("part", OVERSIZED)
def test_oversized_request_gets_4xx(run: Run, part: str) -> None:
    status = run.oversized[part]
    assert status is not None and 400 <= status < 500, status


def test_server_stays_up(run: Run) -> None:
    assert (run.alive, run.health_after) == (True, 200)
