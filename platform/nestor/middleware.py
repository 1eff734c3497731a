"""The kernel's request path: one root middleware, one response-prepare signal, token checks.

Per PERF.md the kernel adds one middleware at the root (not one per concern or per level)
and one `on_response_prepare` handler; everything they need per level is computed when the
tree is built.
"""

from __future__ import annotations

import hmac
import itertools
import os
import re
import time
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler, Middleware

from . import errors
from .config import Setting
from .subapp import level_of

REQUEST_ID = web.RequestKey("nestor.request_id", str)
RESPONSE_STARTED = web.RequestKey("nestor.response_started", bool)
HANDLER_TIME = web.ResponseKey("nestor.handler_time", float)

_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# A per-process random prefix and a counter: unique, and far cheaper than uuid4 per request.
_ID_PREFIX = os.urandom(6).hex()
_counter = itertools.count(1)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'"
    ),
}


def new_request_id() -> str:
    """Return a request id unique across this process and (by its random prefix) others."""
    return f"{_ID_PREFIX}-{next(_counter):x}"


def request_id(request: web.BaseRequest) -> str:
    """Return the request's id (set by the kernel middleware), or '-' before it ran."""
    return request.get(REQUEST_ID, "-")


@web.middleware
async def kernel_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Set the request id, time the handler, and render every error in the level's format."""
    incoming = request.headers.get("X-Request-ID")
    request[REQUEST_ID] = incoming if incoming and _VALID_ID.fullmatch(incoming) else new_request_id()
    start = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or request.get(RESPONSE_STARTED):
            raise
        response = errors.render(request, exc, request[REQUEST_ID])
    except Exception as exc:
        if request.get(RESPONSE_STARTED):
            raise  # headers are already sent: aiohttp logs it and closes the connection
        response = errors.render_unexpected(request, exc, request[REQUEST_ID])
    response[HANDLER_TIME] = time.perf_counter() - start
    return response


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Send the request id and the security headers on every response, streamed and websocket too."""
    request[RESPONSE_STARTED] = True
    headers = response.headers
    rid = request.get(REQUEST_ID)
    if rid is not None:
        headers["X-Request-ID"] = rid
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)


def require_token(setting: Setting[str], *, when_unset: str = "open") -> Middleware:
    """Return a middleware demanding `Authorization: Bearer <value of setting>`.

    The nearest level's value is used. With no value configured the app is open
    (`when_unset="open"`) or hidden as 404 (`when_unset="hidden"`), never open by accident.
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
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise web.HTTPUnauthorized(
                text="This resource needs a token: send 'Authorization: Bearer <token>'.",
                headers={"WWW-Authenticate": 'Bearer realm="nestor"'},
            )
        if not hmac.compare_digest(given.strip().encode(), str(expected).encode()):
            raise web.HTTPForbidden(text="The bearer token is not valid for this resource.")
        return await handler(request)

    middleware.__qualname__ = f"require_token({setting.name})"
    return middleware


class AccessLogger(AbstractAccessLogger):
    """Access log line with the request id, the serving sub-app and the handler time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
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
            _app_label(request),
            request_id(request),
        )


def _app_label(request: Any) -> str:
    match_info = getattr(request, "match_info", None)
    if match_info is None:
        return "-"
    try:
        return level_of(match_info.apps).label
    except RuntimeError:
        return "-"
