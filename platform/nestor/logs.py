"""Logging for `nestor serve`: the set-up, text or JSON lines, all written by one thread.

Every line goes through `nestor.logwriter`'s LogWriter; the access log is `nestor.accesslog`.
aiohttp's own complaints about malformed requests become one WARNING line (no traceback per
request).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import HttpProcessingError

from . import accesslog
from .accesslog import ACCESS_LOGGERS, AccessLogger, JsonAccessLogger, Serving, WebSocket
from .config import Setting, one_of
from .logwriter import Clock, LogWriter

__all__ = ["ACCESS_LOGGERS", "LOG_FORMAT", "TEXT_FORMAT", "AccessLogger", "JsonAccessLogger", "JsonFormatter",
           "LogWriter", "WebSocket", "configure_logging", "quiet_bad_request_logs", "say"]

LOG_FORMAT = Setting(
    "log_format",
    str,
    "text",
    validate=one_of("text", "json"),
    root_only=True,
    help="Log lines of `nestor serve`: 'text' for people, 'json' (one object a line) for machines",
)


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


class JsonFormatter(logging.Formatter):
    """Format every log record as one JSON object a line; access records carry their fields."""

    _clock = Clock(iso=True)

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


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JSON = [False]  # whether configure_logging chose JSON lines


def configure_logging(
    level: str, log_format: str, text_format: str = TEXT_FORMAT
) -> type[AbstractAccessLogger]:
    """Set up the root logger for `nestor serve` (one writer thread for every line); return the access
    logger class to serve with."""
    if log_format not in ACCESS_LOGGERS:
        raise ValueError(f"log format must be one of {', '.join(ACCESS_LOGGERS)}, not {log_format!r}")
    if Serving.writer is not None:
        Serving.writer.close()
    writer = Serving.writer = LogWriter(sys.stderr)
    atexit.register(writer.close)
    Serving.pid = os.getpid()
    handler = WriterHandler(writer)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    _JSON[0] = log_format == "json"
    accesslog.ACCESS_CLASS[0] = ACCESS_LOGGERS[log_format]
    if _JSON[0]:  # a crash at start-up is one JSON object too, not a bare traceback
        sys.excepthook = _log_uncaught
    # The access line has the layout of every other line: what the format puts around the time.
    prefix = (
        text_format.replace("%(levelname)s", "INFO").replace("%(name)s", "aiohttp.access")
        .replace("%(process)d", str(Serving.pid)).replace("%(message)s", "")
    )
    Serving.head, _, Serving.tail = prefix.partition("%(asctime)s")
    return ACCESS_LOGGERS[log_format]


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: Any) -> None:
    logging.getLogger("nestor").critical("%s: %s", kind.__name__, error, exc_info=(kind, error, trace))
    if Serving.writer is not None:
        Serving.writer.close()


def say(message: str, *, level: int = logging.INFO) -> None:
    """Tell the operator something outside any logger (the banner, a fatal error): a JSON line in JSON
    mode, else plain text (stdout; stderr from WARNING up)."""
    if _JSON[0] and Serving.writer is not None:
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
