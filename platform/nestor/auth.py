"""Tokens: `require_token` (a bearer token, or a login form remembered in the session).

The kernel's two token settings live here: `api_token` (JSON APIs that ask for it) and
`admin_token` (the admin sub-app and the details of `/routes` in production). Tokens are
compared in constant time; a login keeps a digest of the token in the session, never the
token, so changing the token ends every login, and the id of a server-side login record
(`nestor.logins`), so logging out ends it for every copy of the cookie. Failed checks are
counted per client (`nestor.limits`): past a few, the client gets 429 for a while.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from . import errors, limits, logins, sessions
from .config import Setting
from .db import DB
from .tree import Level, level_of

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
LOGIN_MAX_AGE = logins.LOGIN_MAX_AGE
CHALLENGE = 'Bearer realm="nestor"'  # the WWW-Authenticate header of every 401


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
            if not await check_token(request, setting, given, str(expected)):
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
    return guards(setting, hidden_when_unset=when_unset == "hidden")(middleware)


@dataclass(frozen=True)
class Guard:
    """What a middleware declared with `guards` demands: one of `settings`' values (all routes, or
    the routes of `handlers`); `hidden_when_unset`: with none set, its routes are 404, not open."""

    settings: tuple[Setting[str], ...]
    handlers: frozenset[Any] | None
    hidden_when_unset: bool


_M = TypeVar("_M", bound=Middleware)


def guards(
    *settings: Setting[str], handlers: Iterable[Any] | None = None, hidden_when_unset: bool = False
) -> Callable[[_M], _M]:
    """Declare what a middleware of your own guards: it demands the value of one of `settings` (for
    the routes of `handlers` only, when given), so those routes are open to anyone while every one
    of them is empty. `require_token` declares itself; `nestor check --deploy` reports the write
    routes (POST, PUT, PATCH, DELETE) whose guards are all empty, and `/routes/explain` shows them.
    """
    if not settings:
        raise ValueError("guards() needs at least one setting")
    guard = Guard(settings, None if handlers is None else frozenset(handlers), hidden_when_unset)

    def declare(middleware: _M) -> _M:
        middleware.nestor_guard = guard  # type: ignore[attr-defined]
        return middleware

    return declare


def guards_of(level: Level, handler: Any) -> tuple[list[Setting[str]], str]:
    """The settings guarding a route of `level` served by `handler` (from every middleware that runs
    for it, root first), and what a client with no token meets there: "public" (nothing guards
    it), "guarded" (one of the settings has a value), "open" (every one is empty) or "hidden"
    (every one is empty and a guard answers 404 then)."""
    settings: list[Setting[str]] = []
    hidden = False
    for lvl in level.chain():
        for middleware in lvl.app.middlewares:
            guard: Guard | None = getattr(middleware, "nestor_guard", None)
            if guard is None or (guard.handlers is not None and handler not in guard.handlers):
                continue
            settings += [s for s in guard.settings if s not in settings]
            hidden = hidden or guard.hidden_when_unset
    if not settings:
        return settings, "public"
    config = level.config()
    if any(config.get(s) for s in settings):
        return settings, "guarded"
    return settings, "hidden" if hidden else "open"


async def check_token(request: web.Request, setting: Setting[str], given: str, expected: str) -> bool:
    """Compare a token a client sent with the configured one, in constant time, counting failures.

    A client (by address) past `limits.MAX_FAILURES` failures gets 429 with Retry-After, even
    with the right token: otherwise the answers would still tell right from wrong.
    """
    failures = request.config_dict[limits.FAILURES]
    failures.refuse_if_blocked(request)
    if hmac.compare_digest(given.encode(), expected.encode()):
        return True
    await failures.failed(request, setting.name)
    return False


async def bearer_matches(request: web.Request, setting: Setting[str]) -> bool:
    """True when the request sends `Authorization: Bearer <the setting's value>` (a set value)."""
    given, expected = _bearer(request), request.config_dict.get(setting)
    return bool(given and expected) and await check_token(request, setting, given, str(expected))


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
    if not isinstance(entry, list) or len(entry) != 3:
        return False
    proof, at, login_id = entry
    if not isinstance(proof, str) or not isinstance(at, int) or time.time() - at > LOGIN_MAX_AGE:
        return False
    if not hmac.compare_digest(proof.encode(), _proof(str(expected)).encode()):
        return False
    return isinstance(login_id, str) and await logins.alive(request.config_dict[DB], login_id, setting.name)


async def remember_token(request: web.Request, setting: Setting[str], given: str) -> bool:
    """If `given` is the configured token, start a login and keep it in the session; say whether it was.

    A wrong token counts as a failure of this client (429 past a few).
    """
    expected = request.config_dict.get(setting)
    if not expected or not isinstance(given, str) or not given:
        return False
    if not await check_token(request, setting, given, str(expected)):
        return False
    login_id = await logins.start(request.config_dict[DB], setting.name)
    session = await sessions.get_session(request)
    session[_session_key(setting)] = [_proof(str(expected)), int(time.time()), login_id]
    session.pop(sessions.CSRF_FIELD, None)  # a new form token after logging in
    return True


async def forget_token(request: web.Request, setting: Setting[str]) -> None:
    """End the session's login for `setting` (logout), for every copy of its cookie."""
    session = await sessions.get_session(request)
    entry = session.pop(_session_key(setting), None)
    if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str):
        await logins.end(request.config_dict[DB], entry[2])
