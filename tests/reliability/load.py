"""A small HTTP/1.1 client on raw asyncio sockets, for the reliability suites.

Raw sockets, not aiohttp's client: these suites must know exactly how far each request got
(connected? whole body sent? any byte of the response back?) and must be able to drop a
connection at a chosen moment. Every request carries an `X-Request-ID` the test chose, so
the server's access log (`rid=...`) says which requests it answered.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

HOST = "127.0.0.1"
MAX_HEAD = 64 * 1024
# The text access log line: `127.0.0.1 "POST /chat/api/..." 201 ... rid=<id>` (nestor.logs).
ACCESS_LINE = re.compile(
    r'aiohttp\.access: \S+ "(?P<method>\S+) (?P<path>\S+)" (?P<status>\d{3}) .* rid=(?P<rid>\S+)$'
)


class Incomplete(Exception):
    """The connection ended before a whole response came; `got` bytes of it had arrived."""

    def __init__(self, got: int, reason: str) -> None:
        super().__init__(f"{reason} after {got} bytes of the response")
        self.got = got


@dataclass
class Response:
    """A whole HTTP response: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


def request_bytes(
    method: str, path: str, rid: str, body: Any = None, *, close: bool = False
) -> tuple[bytes, bytes]:
    """Return the head and the body of a request (a JSON body when `body` is not None)."""
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", f"X-Request-ID: {rid}"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), payload


async def read_response(reader: asyncio.StreamReader) -> Response:
    """Read one whole response (Content-Length or chunked); raise Incomplete if the connection ends first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise Incomplete(len(e.partial), "the connection closed") from None
    except asyncio.LimitOverrunError:
        raise Incomplete(MAX_HEAD, "the response head is too long") from None
    except ConnectionError as e:
        raise Incomplete(0, type(e).__name__) from None
    got = len(head)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in filter(None, header_lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        status = int(status_line.split(" ", 2)[1])
    except (IndexError, ValueError):
        raise Incomplete(got, f"bad status line {status_line!r}") from None
    try:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    except asyncio.IncompleteReadError as e:
        raise Incomplete(got + len(e.partial), "the connection closed in the body") from None
    except ConnectionError as e:
        raise Incomplete(got, f"{type(e).__name__} in the body") from None
    return Response(status, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return b"".join(chunks)
        chunks.append(chunk[:-2])


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection to the server on 127.0.0.1."""
    return await asyncio.open_connection(HOST, port, limit=MAX_HEAD)


async def drop(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    """End a connection: a reset (RST) or an orderly close (FIN)."""
    if reset:
        writer.transport.abort()
    else:
        writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


async def fetch(port: int, method: str, path: str, rid: str, body: Any = None) -> Response:
    """Send one request on a new connection and return its whole response."""
    reader, writer = await connect(port)
    try:
        head, payload = request_bytes(method, path, rid, body, close=True)
        writer.write(head + payload)
        await writer.drain()
        return await read_response(reader)
    finally:
        await drop(writer, reset=False)


def access_lines(log: str) -> list[dict[str, str]]:
    """Return the access log lines of a server log: method, path, status, rid."""
    found = []
    for line in log.splitlines():
        match = ACCESS_LINE.search(line)
        if match:
            found.append(match.groupdict())
    return found


@dataclass(frozen=True)
class Call:
    """A request the load client sends, and the status that means it was served."""

    method: str
    path: str
    expect: int = 200
    body: Any = None


@dataclass
class Result:
    """How one request of the load ended: answered, refused or failed."""

    rid: str
    call: Call
    outcome: str  # ANSWERED, REFUSED or FAILED
    sent: bool  # the whole request was written (not so when the connection was refused or reset first)
    detail: str = ""
    at: float = 0.0  # loop time when it ended


ANSWERED, REFUSED, FAILED = "answered", "refused", "failed"


class Load:
    """`connections` keep-alive connections sending `calls` in turn, until `most` requests,
    `seconds`, or the server refusing connections (its listener closed) ends each of them.

    Call `stopping()` just before signalling the server. Each request ends as one of:
    - answered: a whole response with the expected status;
    - refused: the server did not take it, and the request went out after `stopping()`: the
      connection was refused, or the server closed or reset it before the request was written
      whole or before a single byte of a response (an idle keep-alive connection closed as the
      request went out: RFC 9112 9.3.1 lets a client retry those);
    - failed: anything else: a response cut short, another status, no answer in time, or a
      request written before `stopping()` that got no response (the server had it before the
      signal, so it must answer it).
    """

    def __init__(
        self, port: int, calls: list[Call], *, connections: int, most: int, seconds: float, timeout: float
    ) -> None:
        self.port, self.calls = port, calls
        self.connections, self.most, self.seconds, self.timeout = connections, most, seconds, timeout
        self.results: list[Result] = []
        self.signal_at: float | None = None
        self._count = 0

    def stopping(self) -> None:
        """Mark the moment the server is signalled: from now on, it may refuse requests."""
        self.signal_at = asyncio.get_running_loop().time()

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    async def run(self) -> list[Result]:
        """Run every connection to its end; return the results."""
        deadline = asyncio.get_running_loop().time() + self.seconds
        await asyncio.gather(*(self._connection(n, deadline) for n in range(self.connections)))
        return self.results

    async def _connection(self, number: int, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while self._count < self.most and loop.time() < deadline:
                call = self.calls[self._count % len(self.calls)]
                rid = f"load-{number}-{self._count}"
                self._count += 1
                if connection is None:
                    try:
                        connection = await connect(self.port)
                    except ConnectionRefusedError:
                        self._end(rid, call, self._not_taken(loop.time()), False, "connection refused")
                        return  # the listener is closed: the server is going away
                outcome, sent, detail, keep = await self._send(*connection, rid, call)
                self._end(rid, call, outcome, sent, detail)
                if not keep:
                    await drop(connection[1], reset=False)
                    connection = None
        finally:
            if connection is not None:
                await drop(connection[1], reset=False)

    async def _send(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rid: str, call: Call
    ) -> tuple[str, bool, str, bool]:
        """Send one request on an open connection; return (outcome, sent, detail, keep the connection)."""
        loop = asyncio.get_running_loop()
        head, payload = request_bytes(call.method, call.path, rid, call.body)
        try:
            writer.write(head + payload)
            await writer.drain()
        except ConnectionError as e:
            return self._not_taken(loop.time()), False, f"{type(e).__name__} while sending", False
        sent_at = loop.time()
        try:
            async with asyncio.timeout(self.timeout):
                response = await read_response(reader)
        except Incomplete as e:
            return (self._not_taken(sent_at) if e.got == 0 else FAILED), True, str(e), False
        except TimeoutError:
            return FAILED, True, f"no response in {self.timeout} s", False
        if response.status != call.expect:
            return FAILED, True, f"status {response.status}: {response.body[:200]!r}", False
        return ANSWERED, True, "", response.keep_alive

    def _not_taken(self, sent_at: float) -> str:
        return REFUSED if self.signal_at is not None and sent_at > self.signal_at else FAILED

    def _end(self, rid: str, call: Call, outcome: str, sent: bool, detail: str) -> None:
        self.results.append(Result(rid, call, outcome, sent, detail, asyncio.get_running_loop().time()))
