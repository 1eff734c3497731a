"""The kernel's request path: one root middleware and one response-prepare signal.

Per PERF.md the kernel adds one middleware at the root (not one per concern or per level)
and one `on_response_prepare` handler (`prepare_headers` here, then the metrics: see
`nestor.app`); everything they need per level is computed when the tree is built. Tokens
are in `nestor.auth`, the access log in `nestor.logs`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import re
import time
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from . import errors, proxies
from .config import Setting, positive
from .proxies import NETWORKS, behind_proxy, is_secure

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
HSTS = "max-age=31536000"  # a year, as Django's and Rails' guides suggest once https works
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
    if proxies.IN_USE:  # some app of this process trusts a proxy: is it this one?
        networks = request.app[NETWORKS]  # request.app is the root while its middleware runs
        if networks:
            request = behind_proxy(request, networks)  # type: ignore[assignment]
    deadline = _body_deadline(request) if request.body_exists and not request.content.is_eof() else None
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or request.get(RESPONSE_STARTED):
            raise
        if exc.status == 404 and request.match_info.http_exception is not None:
            response = await _with_slash(request) or errors.render(request, exc, rid)
        else:
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


def guard_expect(root: web.Application) -> None:
    """Give every route of the tree the kernel's `Expect` handling.

    aiohttp answers an `Expect` header with the route's expect handler before any middleware
    runs; its default one turns an expectation it does not know into a plain-text 417, and
    into a 500 with a traceback when the header is not valid UTF-8. aiohttp takes an expect
    handler only when a route is added (`add_route(..., expect_handler=...)`), and sub-apps
    add theirs as plain aiohttp does, so once the tree is built each route's public
    `handle_expect_header` is wrapped: 100-continue (and any expectation a route's own
    handler meets) goes on as before; anything else is a 417 in the level's format, with the
    request id and the kernel's headers, like every other error.
    """
    seen = set()
    for route in root.router.routes():  # a sub-app's routes too, through its prefix resource
        if id(route) not in seen:
            seen.add(id(route))
            route.handle_expect_header = functools.partial(_expect, route.handle_expect_header)  # type: ignore[method-assign]


async def _expect(original: Any, request: web.Request) -> web.StreamResponse | None:
    incoming = request.headers.get("X-Request-ID")
    rid = request[REQUEST_ID] = incoming if incoming and _VALID_ID.fullmatch(incoming) else new_request_id()
    expect = request.headers.get(hdrs.EXPECT, "")
    if not expect.isascii() or not expect.isprintable():
        shown = expect.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")[:EXPECT_SHOWN]
        detail = f"The Expect header ({shown!r}) is not text this server reads; it meets only 100-continue."
        return errors.respond(request, 417, detail, {}, rid)
    try:
        return await original(request)  # type: ignore[no-any-return]
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return errors.render(request, exc, rid)


EXPECT_SHOWN = 80  # characters of an unreadable Expect header quoted back


async def _with_slash(request: web.Request) -> web.Response | None:
    """Redirect `/notes` to `/notes/` when only the slash form is routed (301; 308 keeps a POST a POST).

    Runs on the router's 404 path only, so routed requests never pay for it.
    """
    path = request.path
    if path.endswith("/") or path.startswith("//"):  # //host/ would be an off-site redirect
        return None
    match = await request.app.router.resolve(request.clone(rel_url=request.rel_url.with_path(path + "/")))
    if match.http_exception is not None:
        return None
    query = request.rel_url.raw_query_string
    location = request.rel_url.raw_path + "/" + (f"?{query}" if query else "")
    status = 301 if request.method in ("GET", "HEAD") else 308
    return web.Response(status=status, headers={"Location": location})


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


def prepare_headers(request: web.Request, response: web.StreamResponse, production: bool = False) -> None:
    """Add the request id and nosniff to every response, streamed and websocket too, and the
    framing, referrer and content-security policies to documents (HTML, XHTML, SVG, XML).

    Over https (to Nestor, or to a trusted proxy in front of it) every cookie is marked Secure,
    so it is never sent back over plain http; in production, Strict-Transport-Security tells
    browsers to use https only. Called from the kernel's one `on_response_prepare` handler.
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
    if ("Set-Cookie" in headers or production) and is_secure(request):
        if "Set-Cookie" in headers:
            _secure_cookies(headers)
        if production:
            headers.setdefault("Strict-Transport-Security", HSTS)


def _secure_cookies(headers: Any) -> None:
    for cookie in headers.popall("Set-Cookie"):
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        headers.add("Set-Cookie", cookie if "secure" in attributes else f"{cookie}; Secure")
