"""One error path: the serving level's `error_format` picks an HTML page or problem+json.

HTML pages come from `templates/errors/<status>.html` (falling back to `errors/error.html`);
JSON follows RFC 9457 (`application/problem+json`). Unexpected exceptions are logged once
with their traceback and request id and become a generic 500: never a traceback on the wire.
A body the client sent broken (bad JSON, charset, encoding, multipart) is a 400 wherever it
is read; a database that is down is a 503.
"""

from __future__ import annotations

import html
import logging
from http import HTTPStatus
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp.http import HttpProcessingError

from . import jsonenc
from .config import Setting, one_of
from .db import DRIFT, unavailable
from .tree import level_of

logger = logging.getLogger("nestor.errors")

ERROR_FORMAT = Setting(
    "error_format",
    str,
    "html",
    validate=one_of("html", "json"),
    help="How errors are rendered at this level: 'html' pages or 'json' (application/problem+json)",
)
PROBLEM_JSON = "application/problem+json"
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


def render(request: web.Request, exc: web.HTTPException, rid: str) -> web.Response:
    """Return the error response for an HTTP exception, in the serving level's format."""
    detail = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else None
    headers = {k: exc.headers[k] for k in _KEPT_HEADERS if k in exc.headers}
    response = respond(request, exc.status, detail or default_detail(request, exc), headers, rid)
    if isinstance(exc.__cause__, web.RequestPayloadError):
        response.force_close()  # a broken body leaves the connection unusable: close it after
    return response


def render_unexpected(request: web.Request, exc: BaseException, rid: str) -> web.Response:
    """Log an unexpected exception with its request id; return a generic 500.

    A body the client sent broken (see `unreadable_body`) is its mistake, not ours: a 400.
    A database that is down or restarting is nobody's bug: a 503 with Retry-After.
    """
    problem = unreadable_body(exc)
    if problem is not None:
        response = respond(request, 400, problem, {}, rid)
        if isinstance(exc, web.RequestPayloadError):
            response.force_close()  # a broken body leaves the connection unusable: close it after
        return response
    reason = unavailable(exc)
    if reason is not None:
        return database_unavailable(request, reason, rid)
    drifted = [lvl.label for lvl in level_of(request.match_info.apps).chain() if lvl.label in request.config_dict.get(DRIFT, {})]
    if drifted:  # a missing column, say: every request fails the same way until the migration is applied
        logger.warning(
            "%s %s failed (%s) in sub-app %s, whose tables do not match its code: apply its migrations "
            "(nestor db status) (request id %s)", request.method, request.path, type(exc).__name__, drifted[0], rid,
        )
        detail = "This part of the site is being upgraded. Try again later."
        return respond(request, 503, detail, {"Retry-After": str(RETRY_AFTER)}, rid)
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], Setting):
        logger.error(  # a bare KeyError(<Setting>) says nothing to whoever reads the log
            "%s %s read setting %r, which the serving sub-app does not declare: add it to its "
            "SubApp(settings=[...]); `nestor check` lists every such read (request id %s)",
            request.method, request.path, exc.args[0].name, rid, exc_info=exc, extra={"request_id": rid},
        )
    else:
        logger.error(
            "Unhandled %s in %s %s (request id %s)", type(exc).__name__, request.method, request.path, rid,
            exc_info=exc, extra={"request_id": rid},
        )
    detail = "Something went wrong on our side. Quote the request id when you report it."
    return respond(request, 500, detail, {}, rid)


RETRY_AFTER = 5  # seconds: a database restart usually takes a few


def database_unavailable(request: web.Request, reason: str, rid: str) -> web.Response:
    """Log one warning line (an outage is not a bug: no traceback) and return a 503 with Retry-After."""
    logger.warning(
        "Database unavailable in %s %s (request id %s): %s", request.method, request.path, rid, reason,
        extra={"request_id": rid},
    )
    detail = f"The database is unavailable right now. Try again in {RETRY_AFTER} seconds."
    return respond(request, 503, detail, {"Retry-After": str(RETRY_AFTER)}, rid)


# Only an error raised inside these frames comes from decoding the client's body; a
# ValueError raised elsewhere (a corrupt row, an upstream reply) is still our 500.
_BODY_READERS = frozenset(
    f.__code__ for f in (web.BaseRequest.read, web.BaseRequest.text, web.BaseRequest.json, web.BaseRequest.post)
)
_REQUEST_JSON = web.BaseRequest.json.__code__
# Bad JSON or UTF-8, an unknown charset, JSON nested past the recursion limit, a broken
# multipart part header.
UNDECODABLE = (ValueError, LookupError, RecursionError, HttpProcessingError)


def unreadable_body(exc: BaseException) -> str | None:
    """Say what is wrong when `exc` means the client's body could not be read or decoded (a 400,
    not a 500); None for any other error."""
    if isinstance(exc, web.RequestPayloadError):  # a broken transfer or content encoding
        return f"The request body could not be read: {describe(exc)}"
    if not isinstance(exc, UNDECODABLE):
        return None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code is _REQUEST_JSON and isinstance(exc, (ValueError, RecursionError)):
            return f"The request body is not valid JSON: {describe(exc)}"
        if code in _BODY_READERS:
            return f"The request body could not be read: {describe(exc)}"
        tb = tb.tb_next
    return None


def describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    return " ".join(str(exc).split()) or type(exc).__name__  # aiohttp's messages span lines


def default_detail(request: web.Request, exc: web.HTTPException) -> str:
    """Return a helpful sentence for errors raised without text of their own."""
    if exc.status == 404:
        return f"Nothing is found at {request.path}."
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed at {request.path}; allowed: {allowed}."
    try:
        return HTTPStatus(exc.status).description
    except ValueError:
        return exc.reason


def wants_json(request: web.Request) -> bool:
    """True when the client asks for JSON and not HTML (an API client on an HTML level)."""
    accept = request.headers.get("Accept", "").lower()
    return "json" in accept and "html" not in accept


def respond(
    request: web.Request, status: int, detail: str, headers: dict[str, str], rid: str
) -> web.Response:
    """Return an error response: problem+json or an HTML page, as the serving level says."""
    heading = title(status)
    fmt = level_of(request.match_info.apps).error_format
    if fmt == "json" or wants_json(request):
        # `instance` is a URI reference: the path as sent, percent-encoded (never the decoded one).
        body = problem(status, heading, detail, request.rel_url.raw_path, rid)
        return jsonenc.json_response(body, status=status, content_type=PROBLEM_JSON, headers=headers)
    return web.Response(
        status=status,
        text=_page(request, status, heading, detail, rid),
        content_type="text/html",
        headers=headers,
    )


def problem(status: int, title: str, detail: str, instance: str, rid: str, **extra: Any) -> dict[str, Any]:
    """Return an RFC 9457 problem document."""
    return {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": rid,
        **extra,
    }


def title(status: int) -> str:
    """Return the reason phrase of a status: `Unprocessable Entity`."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _page(request: web.Request, status: int, title: str, detail: str, rid: str) -> str:
    context = {"status": status, "title": title, "detail": detail, "request_id": rid}
    try:
        env = request.config_dict[aiohttp_jinja2.APP_KEY]
        template = env.select_template([f"errors/{status}.html", "errors/error.html"])
        return template.render(context)
    except Exception:
        logger.exception("error page for %s could not be rendered (request id %s)", status, rid)
        return (
            f"<!doctype html><title>{status} {html.escape(title)}</title>"
            f"<h1>{status} {html.escape(title)}</h1><p>{html.escape(detail)}</p>"
            f'<p>Request id: <code id="request-id">{html.escape(rid)}</code></p>'
        )
