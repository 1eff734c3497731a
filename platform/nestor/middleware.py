"""The kernel's request path: one root middleware, one response-prepare signal, token checks.

Per PERF.md the kernel adds one middleware at the root (not one per concern or per level)
and one `on_response_prepare` handler (`prepare_headers` here, then the metrics: see
`nestor.app`); everything they need per level is computed when the tree is built. Also
here: `require_token` (bearer token, or a login form remembered in the session), the access
loggers (text, or JSON for machines) and the logging set-up.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from . import errors, sessions
from .config import Setting, one_of, positive
from .tree import level_of

API_TOKEN = Setting(
    "api_token",
    str,
    "",
    secret=True,
    help="Bearer token JSON APIs guarded by require_token(API_TOKEN) demand when set (any level)",
)
ADMIN_TOKEN = Setting(
    "admin_token",
    str,
    "",
    secret=True,
    root_only=True,
    help="Token for /admin (bearer or login form) and for the details of /routes in production; "
    "empty: admin is disabled (404). Set it from the environment: NESTOR_ADMIN_TOKEN",
)
LOG_FORMAT = Setting(
    "log_format",
    str,
    "text",
    validate=one_of("text", "json"),
    root_only=True,
    help="Log lines of `nestor serve`: 'text' for people, 'json' (one object a line) for machines",
)
BODY_TIMEOUT = Setting(
    "body_timeout",
    float,
    60.0,
    validate=positive,
    root_only=True,
    help="Seconds a client may take to send a request body once its head is in; past it the "
    "connection is closed (raise it for large uploads over slow links)",
)
REQUEST_ID = web.RequestKey("nestor.request_id", str)
logger = logging.getLogger("nestor.requests")
REQUEST_START = web.RequestKey("nestor.request_start", float)  # time.perf_counter() on arrival
RESPONSE_STARTED = web.RequestKey("nestor.response_started", bool)
HANDLER_TIME = web.ResponseKey("nestor.handler_time", float)
LOGIN_MAX_AGE = 12 * 3600  # seconds a login through the form lasts
CHALLENGE = 'Bearer realm="nestor"'  # the WWW-Authenticate header of every 401

_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# On every response: a browser never guesses a type the server did not send.
NOSNIFF = ("X-Content-Type-Options", "nosniff")
# Only on documents a browser renders (and could frame or run scripts in); on JSON, CSS or a
# websocket handshake they protect nothing and cost ~1 µs each per response.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'"
    ),
}
DOCUMENT_TYPES = ("text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml")


def _seed_request_ids() -> None:
    # A per-process random prefix and a counter: unique, and far cheaper than uuid4 per request.
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = os.urandom(6).hex(), itertools.count(1)


_seed_request_ids()
# A worker forked after import (gunicorn --preload, multiprocessing) must not repeat its parent's ids.
os.register_at_fork(after_in_child=_seed_request_ids)


def new_request_id() -> str:
    """Return a request id unique across this process and (by its random prefix) others."""
    return f"{_id_prefix}-{next(_id_counter):x}"


@web.middleware
async def kernel_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Set the request id, time the handler, and render every error in the level's format."""
    incoming = request.headers.get("X-Request-ID")
    rid = incoming if incoming and _VALID_ID.fullmatch(incoming) else new_request_id()
    request[REQUEST_ID] = rid
    request[REQUEST_START] = start = time.perf_counter()
    deadline = _body_deadline(request) if request.body_exists and not request.content.is_eof() else None
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or request.get(RESPONSE_STARTED):
            raise
        response = errors.render(request, exc, rid)
    except Exception as exc:
        if request.get(RESPONSE_STARTED):
            raise  # headers are already sent: aiohttp logs it and closes the connection
        response = errors.render_unexpected(request, exc, rid)
    finally:
        if deadline is not None:
            deadline.cancel()
    response[HANDLER_TIME] = time.perf_counter() - start
    return response


def _body_deadline(request: web.Request) -> asyncio.TimerHandle:
    """Close the connection if the body is not all in within body_timeout (aiohttp has no limit)."""
    seconds = request.config_dict[BODY_TIMEOUT]

    def expire() -> None:
        if not request.content.is_eof() and request.transport is not None:
            logger.warning(
                "%s %s: the request body did not arrive within body_timeout (%g s): connection closed "
                "(rid=%s)", request.method, request.path, seconds, request[REQUEST_ID],
            )
            request.transport.close()  # the handler waiting for the body is cancelled

    return asyncio.get_running_loop().call_later(seconds, expire)


def prepare_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add the request id and nosniff to every response, streamed and websocket too, and the
    framing, referrer and content-security policies to documents (HTML, XHTML, SVG, XML).

    Over https every cookie is marked Secure, so it is never sent back over plain http.
    Called from the kernel's one `on_response_prepare` handler (see `nestor.app`).
    """
    request[RESPONSE_STARTED] = True
    headers = response.headers
    try:
        headers["X-Request-ID"] = request[REQUEST_ID]
    except KeyError:  # answered before the kernel middleware ran (an Expect failure)
        pass
    headers.setdefault(*NOSNIFF)
    # aiohttp has set Content-Type (and turned cookies into Set-Cookie) before this runs.
    if headers.get("Content-Type", "").startswith(DOCUMENT_TYPES):
        for name, value in SECURITY_HEADERS.items():
            headers.setdefault(name, value)
    if "Set-Cookie" in headers and request.secure:
        _secure_cookies(headers)


def _secure_cookies(headers: Any) -> None:
    for cookie in headers.popall("Set-Cookie"):
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        headers.add("Set-Cookie", cookie if "secure" in attributes else f"{cookie}; Secure")


LoginHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def require_token(
    setting: Setting[str], *, when_unset: str = "open", login: LoginHandler | None = None
) -> Middleware:
    """Return a middleware demanding `Authorization: Bearer <value of setting>`.

    The nearest level's value is used, compared in constant time. With no value configured
    the app is open (`when_unset="open"`) or hidden as 404 (`when_unset="hidden"`), never
    open by accident. With `login`, the app's login handler (GET: a form; POST: it calls
    `remember_token`), the token may also come from the session: requests for the handler
    itself pass, and a browser's GET of any other page gets its form with status 401.
    `nestor.sessions.setup(app)` must come before this middleware (it reads the session).
    """
    if when_unset not in ("open", "hidden"):
        raise ValueError("when_unset must be 'open' or 'hidden'")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        expected = request.config_dict.get(setting)
        if not expected:
            if when_unset == "open":
                return await handler(request)
            raise web.HTTPNotFound()
        if "Authorization" in request.headers:
            given = _bearer(request)
            if given is None:
                raise _unauthorized()
            if not hmac.compare_digest(given.encode(), str(expected).encode()):
                raise web.HTTPForbidden(text="The bearer token is not valid for this resource.")
            return await handler(request)
        if login is not None:
            if request.match_info.handler is login or await _remembered(request, setting, expected):
                return await handler(request)
            if request.method in ("GET", "HEAD") and not _wants_problem(request):
                response = await login(request)
                response.set_status(401)
                response.headers["WWW-Authenticate"] = CHALLENGE
                return response
        raise _unauthorized()

    middleware.__qualname__ = f"require_token({setting.name})"
    return middleware


def bearer_matches(request: web.Request, expected: str) -> bool:
    """True when the request sends `Authorization: Bearer <expected>` (constant-time compare)."""
    given = _bearer(request)
    return bool(given and expected) and hmac.compare_digest(given.encode(), str(expected).encode())


def _bearer(request: web.Request) -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return (given.strip() or None) if scheme.lower() == "bearer" else None


def _unauthorized() -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text="This resource needs a token: send 'Authorization: Bearer <token>'.",
        headers={"WWW-Authenticate": CHALLENGE},
    )


def _wants_problem(request: web.Request) -> bool:
    return errors.wants_json(request) or level_of(request.match_info.apps).error_format == "json"


def _session_key(setting: Setting[str]) -> str:
    return f"nestor.token.{setting.name}"


def _proof(token: str) -> str:
    # The session keeps a digest, not the token: changing the token ends every login.
    return hashlib.sha256(b"nestor.token\0" + token.encode()).hexdigest()


async def _remembered(request: web.Request, setting: Setting[str], expected: str) -> bool:
    entry = (await sessions.get_session(request)).get(_session_key(setting))
    if not isinstance(entry, list) or len(entry) != 2:
        return False
    proof, at = entry
    if not isinstance(proof, str) or not isinstance(at, int) or time.time() - at > LOGIN_MAX_AGE:
        return False
    return hmac.compare_digest(proof.encode(), _proof(str(expected)).encode())


async def remember_token(request: web.Request, setting: Setting[str], given: str) -> bool:
    """If `given` is the configured token, remember the login in the session; say whether it was."""
    expected = request.config_dict.get(setting)
    if not expected or not isinstance(given, str) or not given:
        return False
    if not hmac.compare_digest(given.encode(), str(expected).encode()):
        return False
    session = await sessions.get_session(request)
    session[_session_key(setting)] = [_proof(str(expected)), int(time.time())]
    session.pop(sessions.CSRF_FIELD, None)  # a new form token after logging in
    return True


async def forget_token(request: web.Request, setting: Setting[str]) -> None:
    """End the session's login for `setting` (logout)."""
    session = await sessions.get_session(request)
    session.pop(_session_key(setting), None)


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
