"""Sessions in an encrypted cookie (aiohttp-session) and CSRF tokens for HTML forms.

`setup(app)` gives the routes of `app` itself (not its child apps: an API is not
cookie-authenticated) a session kept in an `EncryptedCookieStorage` cookie (HttpOnly,
SameSite=Lax) and refuses unsafe requests (POST, PUT, PATCH, DELETE) whose CSRF token is
missing or wrong with a 403 in the level's error format. Forms carry the token from
`await csrf_token(request)` in a hidden `csrf_token` field; scripts may send the
`X-CSRF-Token` header instead.

The cookie key is derived from the `secret_key` setting with HKDF-SHA256. With no
`secret_key`, each process uses a random key: sessions end at restart and are not shared
between workers, so set one in production.

aiohttp-session's own middleware keeps its state under string request keys, which aiohttp
warns about; this module uses its storage and `Session` under typed keys instead.
"""

from __future__ import annotations

import base64
import copy
import functools
import logging
import secrets
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp_session import AbstractStorage, Session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .config import Setting
from .inputs import read_form
from .tree import config_of

logger = logging.getLogger("nestor.sessions")

SECRET_KEY = Setting(
    "secret_key",
    str,
    "",
    secret=True,
    root_only=True,
    help="Key material for session cookies (any long random text); "
    "empty: a random key per process, so sessions end at restart",
)
COOKIE_NAME = "nestor_session"
CSRF_FIELD = "csrf_token"  # the hidden form field, and the session key holding the token
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

STORAGE = web.AppKey("nestor.session_storage", AbstractStorage)
_REQUEST_STORAGE = web.RequestKey("nestor.session_storage", AbstractStorage)
SESSION = web.RequestKey("nestor.session", Session)
_LOADED = web.RequestKey("nestor.session_loaded", dict)  # the session as read, to see changes


def setup(app: web.Application) -> None:
    """Give `app`'s own routes a cookie session and CSRF checks on unsafe methods."""
    app.cleanup_ctx.append(_storage_ctx)
    app.middlewares.append(_middleware(app))


def fernet_key(secret: str) -> bytes:
    """Return the cookie encryption key derived from `secret` (HKDF-SHA256, 32 bytes, base64)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"nestor.sessions", info=b"session cookie")
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode("utf-8")))


@functools.cache
def _process_key() -> bytes:
    logger.warning(
        "secret_key is not set: session cookies use a random key for this process only, so "
        "sessions and form tokens end at restart and differ between workers. "
        "Set [nestor] secret_key (or NESTOR_SECRET_KEY) to a long random value."
    )
    return Fernet.generate_key()


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    secret = config_of(app).get(SECRET_KEY, SECRET_KEY.default)
    key = fernet_key(secret) if secret else _process_key()
    app[STORAGE] = EncryptedCookieStorage(
        Fernet(key), cookie_name=COOKIE_NAME, httponly=True, samesite="Lax", path="/"
    )
    yield


async def get_session(request: web.Request) -> Session:
    """Return the request's session, read from its cookie on first use."""
    session = request.get(SESSION)
    if session is None:
        storage = request.get(_REQUEST_STORAGE)
        if storage is None:
            raise RuntimeError(
                "no session here: call nestor.sessions.setup(app) in the factory of the app "
                "serving this route"
            )
        try:
            session = await storage.load_session(request)
        except UnicodeError:  # a cookie that is not even text: not ours, like any forged one
            logger.warning("unreadable session cookie: a new session is started")
            session = Session(None, data=None, new=True, max_age=storage.max_age)
        request[SESSION] = session
        request[_LOADED] = copy.deepcopy(dict(session))
    return session


async def csrf_token(request: web.Request) -> str:
    """Return the session's CSRF token (created on first use) for a form's hidden field."""
    session = await get_session(request)
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


async def check_csrf(request: web.Request) -> None:
    """Raise 403 unless the request carries the session's CSRF token (form field or header)."""
    expected = (await get_session(request)).get(CSRF_FIELD)
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in FORM_TYPES:
        given = (await read_form(request)).get(CSRF_FIELD)
    if not isinstance(expected, str) or not isinstance(given, str) or not given.isascii():
        raise web.HTTPForbidden(
            text="This form has no valid CSRF token (or your session expired). "
            "Reload the page and submit the form again."
        )
    if not secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise web.HTTPForbidden(
            text="This form's CSRF token does not match your session. "
            "Reload the page and submit the form again."
        )


def _middleware(app: web.Application) -> Middleware:
    @web.middleware
    async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.apps[-1] is not app:
            return await handler(request)  # a child app (an API) keeps its own rules
        request[_REQUEST_STORAGE] = app[STORAGE]
        if request.method not in SAFE_METHODS and request.match_info.http_exception is None:
            await check_csrf(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            await _save(request, exc)
            raise
        await _save(request, response)
        return response

    sessions.__qualname__ = "sessions"  # listed as nestor.sessions.sessions
    return sessions


async def _save(request: web.Request, response: web.StreamResponse) -> None:
    session = request.get(SESSION)
    if session is None or response.prepared or not isinstance(response, web.Response):
        return  # websockets and streams have sent their headers: no cookie can follow
    if dict(session) != request[_LOADED]:
        await request[_REQUEST_STORAGE].save_session(request, response, session)
