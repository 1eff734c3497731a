"""The access log of `nestor serve`.

A line a request: client, request line, status, bytes, time, handler time, the serving
sub-app and the request id (text), or one JSON object with the same fields and the route and
user agent (JSON). In the event loop `log()` only copies what the line needs (strings and
numbers, the match and the headers, all immutable by then) into the writer's queue; the writer
thread turns the queued entries into lines a few hundred at a time and writes them. Built
there, with its caches warm, a line costs a fraction of what it cost between two requests
(measured by `python -m bench.accesslog`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from json.encoder import encode_basestring as _string  # a JSON string, quotes included (C)
from typing import Any

from aiohttp import WSMessage, WSMsgType, web
from aiohttp.abc import AbstractAccessLogger

from . import proxies
from .logwriter import Clock, LogWriter
from .middleware import HANDLER_TIME, REQUEST_ID
from .proxies import CLIENT
from .tree import level_of

_TEXT_CLOCK, _JSON_CLOCK = Clock(iso=False), Clock(iso=True)  # used by the writer thread only


class Serving:
    """What `nestor.logs.configure_logging` chose for this process: the writer and the line's layout."""

    writer: LogWriter | None = None  # None: not under nestor serve (tests, another runner): through logging
    head, tail = "", " INFO aiohttp.access: "  # around the time stamp, from the text format
    pid = os.getpid()


_now = time.time


class AccessLogger(AbstractAccessLogger):
    """Access log line with the request id, the serving sub-app and the handler time.

    Under `nestor serve` the entry goes to the LogWriter, whose thread builds the line with the
    layout the log's formatter gives every other line: no LogRecord, no formatter, no string
    building or write in the event loop. Elsewhere the line goes through `logging`.
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._connection: Any = None  # the connection whose peer is _peer
        self._peer: str | None = None

    @property
    def enabled(self) -> bool:
        """False when INFO is off: aiohttp then skips building the line at all."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float, closed: bool = False) -> None:
        # Only what the line needs, copied (the match and the headers are immutable by now). The path
        # is the request target as the client sent it, as nginx's $request has it.
        if isinstance(response, WebSocket):
            if not closed:
                return  # it writes its own record when it closes
            socket: dict[str, Any] | None = response.summary()
        else:
            socket = None
        try:
            rid = request[REQUEST_ID]
            match = request.match_info  # type: ignore[attr-defined]
        except KeyError:  # aiohttp answered before routing (a bad request line): no app served it
            rid = match = None
        try:
            handler = response[HANDLER_TIME]
        except KeyError:
            handler = None
        client = request.get(CLIENT) if proxies.IN_USE else None
        if client is not None:
            peer = client.remote
        elif request.protocol is self._connection:  # aiohttp makes an access logger per connection
            peer = self._peer
        else:
            self._connection, peer = request.protocol, request.remote
            self._peer = peer
        entry = (
            self._line, _now(), peer, request.method, request.raw_path, response.status, response.body_length,
            time, handler, match, rid, socket, request.headers,
        )
        writer = Serving.writer
        if writer is None:
            self._through_logging(entry)
        elif len(writer.lines) < writer.MAX_PENDING:
            writer.lines.append(entry)
        else:
            writer.dropped += 1

    def _through_logging(self, entry: tuple[Any, ...]) -> None:
        self.logger.info("%s", self._message(entry))

    @staticmethod
    def _message(entry: tuple[Any, ...]) -> str:
        _, _, peer, method, path, status, length, took, handler, match, rid, socket, _ = entry
        message = (
            f'{peer} "{method} {path}" {status} {length} {took * 1000:.1f}ms '
            f"handler={'-' if handler is None else f'{handler * 1000:.1f}ms'} "
            f"app={served_by(match)[0]} rid={rid or '-'}"
        )
        if socket is not None:  # logged when it closes
            message += f" ws_in={socket['messages_in']} ws_out={socket['messages_out']} close={socket['close_code']}"
        return message

    @staticmethod
    def _line(entry: tuple[Any, ...]) -> str:
        return f"{Serving.head}{_TEXT_CLOCK(entry[1])}{Serving.tail}{AccessLogger._message(entry)}\n"


class JsonAccessLogger(AccessLogger):
    """Access log record for machines: one JSON object, the fields JsonFormatter gives every record."""

    def _through_logging(self, entry: tuple[Any, ...]) -> None:
        fields = json.loads(f"{{{self._fields(entry)}")
        self.logger.info("%s", fields.pop("message"), extra={"access": fields})

    @staticmethod
    def _fields(entry: tuple[Any, ...]) -> str:
        """The record's JSON from `"message"` on, closing brace included.

        An f-string of the fields (a msgspec struct and its encoder cost more), each string escaped
        by the standard library's C encoder, the times in milliseconds to three places (`0.600`:
        rounding a float and writing it costs three times as much). The method is an HTTP token
        (aiohttp's parsers refuse any other) and the request id one the kernel made or checked
        against `[A-Za-z0-9._:-]`: neither needs escaping.
        """
        _, _, peer, method, path, status, length, took, handler, match, rid, socket, headers = entry
        path = _string(path)
        agent = headers.get("User-Agent")
        fields = (
            f'"message":"\\"{method} {path[1:-1]}\\" {status}","remote":{"null" if peer is None else _string(peer)},'
            f'"method":"{method}","path":{path},"status":{status},"bytes":{length},"duration_ms":{took * 1000:.3f},'
            f'"handler_ms":{"null" if handler is None else f"{handler * 1000:.3f}"},{_served_json(match)},'
            f'"user_agent":{"null" if agent is None else _string(agent)},"request_id":{"null" if rid is None else f"{_Q}{rid}{_Q}"}'
        )
        if socket is None:
            return fields + "}"
        # A websocket, logged when it closes: its whole life, what went through it.
        code = socket["close_code"]
        return (
            f'{fields},"messages_in":{socket["messages_in"]},"messages_out":{socket["messages_out"]},'
            f'"close_code":{"null" if code is None else code}}}'
        )

    @classmethod
    def _line(cls, entry: tuple[Any, ...]) -> str:
        # JsonFormatter's fields (time, level, logger, process), then the request's, in this order.
        return (
            f'{{"time":"{_JSON_CLOCK(entry[1])}","level":"INFO","logger":"aiohttp.access",'
            f'"process":{Serving.pid},{cls._fields(entry)}\n'
        )


_Q = '"'


ACCESS_LOGGERS: dict[str, type[AccessLogger]] = {"text": AccessLogger, "json": JsonAccessLogger}
ACCESS_CLASS: list[type[AccessLogger]] = [AccessLogger]  # the access log nestor serve writes


class WebSocket(web.WebSocketResponse):
    """A `web.WebSocketResponse` with an access record of its own, written once when it closes: how long
    it lived, the messages in and out, the close code. (aiohttp writes none for a handler cancelled when
    its client goes away, the usual end of a websocket under handler_cancellation.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages_in = self.messages_out = 0
        self._opened: tuple[web.BaseRequest, float] | None = None

    async def prepare(self, request: web.BaseRequest) -> Any:
        self._opened = (request, time.perf_counter())
        return await super().prepare(request)

    async def receive(self, timeout: float | None = None) -> WSMessage:
        try:
            message = await super().receive(timeout)
        except asyncio.CancelledError:  # the client is gone and the handler cancelled
            self.log_closed()
            raise
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            self.messages_in += 1
        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            self.log_closed()
        return message

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        try:
            return await super().close(code=code, message=message, drain=drain)
        finally:
            self.log_closed()

    async def send_str(self, data: str, compress: int | None = None) -> None:
        await super().send_str(data, compress)
        self.messages_out += 1

    async def send_bytes(self, data: bytes, compress: int | None = None) -> None:
        await super().send_bytes(data, compress)
        self.messages_out += 1

    async def send_frame(self, message: bytes, opcode: WSMsgType, compress: int | None = None) -> None:
        await super().send_frame(message, opcode, compress)
        if opcode in (WSMsgType.TEXT, WSMsgType.BINARY):
            self.messages_out += 1

    def summary(self) -> dict[str, Any]:
        """What the access record adds for a websocket."""
        return {"messages_in": self.messages_in, "messages_out": self.messages_out, "close_code": self.close_code}

    def log_closed(self) -> None:
        """Write the access record, the first time only."""
        if self._opened is None:
            return
        request, opened = self._opened
        self._opened = None
        access = ACCESS_CLASS[0](logging.getLogger("aiohttp.access"), "")
        if access.enabled:
            access.log(request, self, time.perf_counter() - opened, closed=True)


_SERVED_BY: dict[Any, tuple[str, str | None]] = {}  # route -> (label, name); a 404 gets a new route each


def served_by(match: Any) -> tuple[str, str | None]:
    """The config table of the level that served a request (`polls.api`) and the namespaced name of
    its route (`polls:api:vote`), from the request's match; `("-", None)` for no match."""
    if match is None:
        return "-", None
    matched = match.http_exception is None
    if matched:
        found = _SERVED_BY.get(match.route)
        if found is not None:
            return found
    try:
        level = level_of(match.apps)
    except RuntimeError:  # an app not built by create_app()
        return "-", match.route.name if matched else None
    name = match.route.name if matched else None
    found = level.label, f"{level.namespace}:{name}" if name and level.namespace else name
    if matched:
        _SERVED_BY[match.route] = found
    return found


_SERVED_JSON: dict[Any, str] = {}  # route -> its app and route as JSON fields


def _served_json(match: Any) -> str:
    """`"app":...,"route":...` of the JSON record: `served_by`, made JSON once per route."""
    if match is None:
        return '"app":null,"route":null'
    matched = match.http_exception is None
    found = _SERVED_JSON.get(match.route) if matched else None
    if found is None:
        app, route = served_by(match)
        found = f'"app":{_string(app)},"route":{"null" if route is None else _string(route)}'
        if matched:
            _SERVED_JSON[match.route] = found
    return found
