"""Logging for `nestor serve`: the access log (text, or JSON for machines) and the set-up.

The access line carries the request id, the serving sub-app and the handler time. aiohttp's
own complaints about malformed requests become one WARNING line (no traceback per request).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import IO, Any

from aiohttp import WSMessage, WSMsgType, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import HttpProcessingError

from . import jsonenc
from .config import Setting, one_of
from .middleware import HANDLER_TIME, REQUEST_ID
from .proxies import client_address
from .tree import level_of

LOG_FORMAT = Setting(
    "log_format",
    str,
    "text",
    validate=one_of("text", "json"),
    root_only=True,
    help="Log lines of `nestor serve`: 'text' for people, 'json' (one object a line) for machines",
)


class LogWriter:
    """One thread writes every log line: the event loop only appends it to a bounded queue.

    A slow disk or a full pipe never blocks the loop; past MAX_PENDING lines the newest are
    dropped and counted (one line says how many, once the stream keeps up again). The thread
    writes what is queued every FLUSH_EVERY seconds, and `close()` (at exit) writes the rest.
    """

    MAX_PENDING = 100_000
    FLUSH_EVERY = 0.02

    def __init__(self, stream: IO[str]) -> None:
        self.stream, self.dropped = stream, 0
        self._lines: deque[str] = deque()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nestor log writer", daemon=True)
        self._thread.start()

    def put(self, line: str) -> None:
        """Queue a whole line (with its newline); never blocks."""
        if len(self._lines) >= self.MAX_PENDING:
            self.dropped += 1
            return
        self._lines.append(line)

    def _run(self) -> None:
        while not self._closing.wait(self.FLUSH_EVERY):
            self._write()
        self._write()

    def _write(self) -> None:
        lines = self._lines
        if not lines:
            return
        chunk = []
        while lines:
            chunk.append(lines.popleft())
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            chunk.append(f"nestor: {dropped} log line(s) dropped: the log's stream did not keep up\n")
        try:
            self.stream.write("".join(chunk))
            self.stream.flush()
        except (OSError, ValueError):  # the stream is closed or gone: nothing to write to
            pass

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        self._closing.set()
        self._thread.join(timeout=10)


_WRITER: LogWriter | None = None  # set by configure_logging: `nestor serve` writes through it


class WriterHandler(logging.Handler):
    """A logging handler that formats in the caller's thread and hands the line to the LogWriter."""

    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.put(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 (logging's own rule: a handler never raises)
            self.handleError(record)


class _Clock:
    """Time stamps for log lines, the text formatted once per second."""

    def __init__(self, iso: bool) -> None:
        self.iso, self.second, self.text = iso, -1, ""

    def __call__(self, now: float) -> str:
        second = int(now)
        if second != self.second:
            self.second = second
            if self.iso:  # ISO 8601 with the zone (JSON logs): 2026-12-02T01:17:11.253+00:00
                self.text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            else:  # what logging's default asctime writes: 2026-12-02 01:17:11,253
                self.text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        ms = int((now - second) * 1000)
        return f"{self.text}.{ms:03d}+00:00" if self.iso else f"{self.text},{ms:03d}"


class AccessLogger(AbstractAccessLogger):
    """Access log line with the request id, the serving sub-app and the handler time.

    Under `nestor serve` the line is built here, with the same layout the log's formatter
    gives every other line, and handed to the LogWriter: no LogRecord, no formatter, no
    write in the event loop (a few microseconds a request, where logging took about 30).
    """

    prefix = "{time} INFO aiohttp.access: "  # configure_logging sets it from the text format
    _clock = _Clock(iso=False)

    @property
    def enabled(self) -> bool:
        """False when INFO is off: aiohttp then skips building the line at all."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float, closed: bool = False) -> None:
        if isinstance(response, WebSocket) and not closed:
            return  # it writes its own record when it closes
        rid = request.get(REQUEST_ID)
        handler_time = response.get(HANDLER_TIME)
        message = (
            f'{client_address(request)} "{request.method} {request.path_qs}" {response.status} {response.body_length} '
            f"{time * 1000:.1f}ms handler={f'{handler_time * 1000:.1f}ms' if handler_time is not None else '-'} "
            # No request id: aiohttp answered before routing, so no app served it.
            f"app={_app_label(request) if rid is not None else '-'} rid={rid or '-'}"
        )
        if isinstance(response, WebSocket):  # logged when it closes
            message += f" ws_in={response.messages_in} ws_out={response.messages_out} close={response.close_code}"
        writer = _WRITER
        if writer is None:  # not under nestor serve (tests, another runner): through logging
            self.logger.info("%s", message)
            return
        head, _, tail = self.prefix.partition("{time}")
        writer.put(f"{head}{self._clock(_now())}{tail}{message}\n")


class JsonAccessLogger(AccessLogger):
    """Access log record for machines: one JSON object, the fields JsonFormatter gives every record."""

    _clock = _Clock(iso=True)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float, closed: bool = False) -> None:
        if isinstance(response, WebSocket) and not closed:
            return  # it writes its own record when it closes
        rid = request.get(REQUEST_ID)
        handler_time = response.get(HANDLER_TIME)
        method, path, status = request.method, request.path_qs, response.status
        fields = {
            "remote": client_address(request),
            "method": method,
            "path": path,
            "status": status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 3),
            "handler_ms": round(handler_time * 1000, 3) if handler_time is not None else None,
            "app": _app_label(request) if rid is not None else None,
            "route": _route_name(request) if rid is not None else None,
            "user_agent": request.headers.get("User-Agent"),
            "request_id": rid,
        }
        if isinstance(response, WebSocket):  # logged when it closes: its whole life, what went through
            fields.update(response.summary())
        message = f'"{method} {path}" {status}'
        writer = _WRITER
        if writer is None:
            self.logger.info("%s", message, extra={"access": fields})
            return
        record = {"time": self._clock(_now()), "level": "INFO", "logger": "aiohttp.access", "process": _PID[0], "message": message}
        record.update(fields)
        writer.put(jsonenc.dumps(record) + "\n")


class JsonFormatter(logging.Formatter):
    """Format every log record as one JSON object a line; access records carry their fields."""

    _clock = _Clock(iso=True)

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self._clock(record.created),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,  # tells the workers of `nestor serve --workers N` apart
            "message": record.getMessage(),
        }
        data.update(getattr(record, "access", None) or {})
        if getattr(record, "request_id", None) is not None:
            data["request_id"] = record.request_id
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


ACCESS_LOGGERS: dict[str, type[AccessLogger]] = {"text": AccessLogger, "json": JsonAccessLogger}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PID = [os.getpid()]
_JSON = [False]  # whether configure_logging chose JSON lines
_ACCESS_CLASS: list[type[AccessLogger]] = [AccessLogger]  # the access log nestor serve writes
_now = time.time


def configure_logging(
    level: str, log_format: str, text_format: str = TEXT_FORMAT
) -> type[AbstractAccessLogger]:
    """Set up the root logger for `nestor serve` (one writer thread for every line); return the access
    logger class to serve with."""
    global _WRITER
    if log_format not in ACCESS_LOGGERS:
        raise ValueError(f"log format must be one of {', '.join(ACCESS_LOGGERS)}, not {log_format!r}")
    if _WRITER is not None:
        _WRITER.close()
    _WRITER = LogWriter(sys.stderr)
    atexit.register(_WRITER.close)
    _PID[0] = os.getpid()
    handler = WriterHandler(_WRITER)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    _JSON[0] = log_format == "json"
    _ACCESS_CLASS[0] = ACCESS_LOGGERS[log_format]
    if _JSON[0]:  # a crash at start-up is one JSON object too, not a bare traceback
        sys.excepthook = _log_uncaught
    AccessLogger.prefix = (
        text_format.replace("%(asctime)s", "{time}").replace("%(levelname)s", "INFO")
        .replace("%(name)s", "aiohttp.access").replace("%(process)d", str(_PID[0])).replace("%(message)s", "")
    )
    return ACCESS_LOGGERS[log_format]


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    logging.getLogger("nestor").critical("%s: %s", kind.__name__, error, exc_info=(kind, error, trace))
    if _WRITER is not None:
        _WRITER.close()


def say(message: str, *, level: int = logging.INFO) -> None:
    """Tell the operator something outside any logger (the banner, a fatal error): a JSON line in JSON
    mode, else plain text (stdout; stderr from WARNING up)."""
    if _JSON[0] and _WRITER is not None:
        logging.getLogger("nestor").log(level, "%s", message)
        return
    print(message, file=sys.stderr if level >= logging.WARNING else sys.stdout, flush=True)


def quiet_bad_request_logs() -> None:
    """Make aiohttp log a malformed request (or body) in one line, not with a traceback.

    aiohttp's parser logs each one at ERROR with its traceback, and so does its drain of a
    body whose encoding is broken; any client can send garbage, so it could flood the log.
    """
    server_logger = logging.getLogger("aiohttp.server")
    if one_line_for_bad_requests not in server_logger.filters:
        server_logger.addFilter(one_line_for_bad_requests)


def one_line_for_bad_requests(record: logging.LogRecord) -> bool:
    """Log filter of `aiohttp.server`: a client's malformed request becomes one WARNING line."""
    if record.exc_info:
        exc = record.exc_info[1]
        if isinstance(exc, web.RequestPayloadError):
            # aiohttp reads what is left of a body after the response and logs this as an
            # "Unhandled exception"; the response has gone out, the connection closes.
            text = f"the rest of a broken request body was dropped: {exc}"
        elif isinstance(exc, HttpProcessingError):
            text = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
        else:
            return True
        record.msg, record.args = " ".join(text.split()), ()
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


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
        access = _ACCESS_CLASS[0](logging.getLogger("aiohttp.access"), "")
        if access.enabled:
            access.log(request, self, time.perf_counter() - opened, closed=True)


def _route_name(request: web.BaseRequest) -> str | None:
    if not isinstance(request, web.Request) or request.match_info.http_exception is not None:
        return None
    name = request.match_info.route.name
    try:
        namespace = level_of(request.match_info.apps).namespace
    except RuntimeError:
        return name
    return f"{namespace}:{name}" if name and namespace else name


def _app_label(request: web.BaseRequest) -> str:
    if not isinstance(request, web.Request):
        return "-"
    try:
        return level_of(request.match_info.apps).label
    except RuntimeError:  # an app not built by create_app()
        return "-"
