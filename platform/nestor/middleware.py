"""The kernel's request path: one root middleware, one response-prepare signal, token checks.

Per PERF.md the kernel adds one middleware at the root (not one per concern or per level)
and one `on_response_prepare` handler; everything they need per level is computed when the
tree is built.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import re
import time

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler, Middleware

from . import errors
from .config import Setting
from .tree import level_of

API_TOKEN = Setting(
    "api_token",
    str,
    "",
    secret=True,
    help="Bearer token JSON APIs guarded by require_token(API_TOKEN) demand when set (any level)",
)
REQUEST_ID = web.RequestKey("nestor.request_id", str)
RESPONSE_STARTED = web.RequestKey("nestor.response_started", bool)
HANDLER_TIME = web.ResponseKey("nestor.handler_time", float)

_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'"
    ),
}


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
    start = time.perf_counter()
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


def _app_label(request: web.BaseRequest) -> str:
    if not isinstance(request, web.Request):
        return "-"
    try:
        return level_of(request.match_info.apps).label
    except RuntimeError:  # an app not built by create_app()
        return "-"
