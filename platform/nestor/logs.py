"""Logging for `nestor serve`: the access log (text, or JSON for machines) and the set-up.

The access line carries the request id, the serving sub-app and the handler time. aiohttp's
own complaints about malformed requests become one WARNING line (no traceback per request).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import HttpProcessingError

from .config import Setting, one_of
from .middleware import HANDLER_TIME, REQUEST_ID
from .tree import level_of

LOG_FORMAT = Setting(
    "log_format",
    str,
    "text",
    validate=one_of("text", "json"),
    root_only=True,
    help="Log lines of `nestor serve`: 'text' for people, 'json' (one object a line) for machines",
)


class AccessLogger(AbstractAccessLogger):
    """Access log line with the request id, the serving sub-app and the handler time."""

    @property
    def enabled(self) -> bool:
        """False when INFO is off: aiohttp then skips building the line at all."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid = request.get(REQUEST_ID)
        handler_time = response.get(HANDLER_TIME)
        self.logger.info(
            '%s "%s %s" %s %s %.1fms handler=%s app=%s rid=%s',
            request.remote,
            request.method,
            request.path_qs,
            response.status,
            response.body_length,
            time * 1000,
            f"{handler_time * 1000:.1f}ms" if handler_time is not None else "-",
            # No request id: aiohttp answered before routing, so no app served it.
            _app_label(request) if rid is not None else "-",
            rid or "-",
        )


class JsonAccessLogger(AccessLogger):
    """Access log record for machines: the fields go in `record.access` (JsonFormatter writes them)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        rid = request.get(REQUEST_ID)
        handler_time = response.get(HANDLER_TIME)
        fields = {
            "remote": request.remote,
            "method": request.method,
            "path": request.path_qs,
            "status": response.status,
            "bytes": response.body_length,
            "duration_ms": round(time * 1000, 3),
            "handler_ms": round(handler_time * 1000, 3) if handler_time is not None else None,
            "app": _app_label(request) if rid is not None else None,
            "request_id": rid,
        }
        self.logger.info(
            '"%s %s" %s', request.method, request.path_qs, response.status, extra={"access": fields}
        )


class JsonFormatter(logging.Formatter):
    """Format every log record as one JSON object a line; access records carry their fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,  # tells the workers of `nestor serve --workers N` apart
            "message": record.getMessage(),
        }
        data.update(getattr(record, "access", None) or {})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


ACCESS_LOGGERS: dict[str, type[AccessLogger]] = {"text": AccessLogger, "json": JsonAccessLogger}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(
    level: str, log_format: str, text_format: str = TEXT_FORMAT
) -> type[AbstractAccessLogger]:
    """Set up the root logger for `nestor serve`; return the access logger class to serve with."""
    if log_format not in ACCESS_LOGGERS:
        raise ValueError(f"log format must be one of {', '.join(ACCESS_LOGGERS)}, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(text_format))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return ACCESS_LOGGERS[log_format]


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


def _app_label(request: web.BaseRequest) -> str:
    if not isinstance(request, web.Request):
        return "-"
    try:
        return level_of(request.match_info.apps).label
    except RuntimeError:  # an app not built by create_app()
        return "-"
