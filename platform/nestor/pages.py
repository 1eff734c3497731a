"""The root's own pages: home, the route tree (`/routes`, `/routes.json`, explain), `/health`.

In production mode (`[nestor] mode = "production"`) the route pages show method, path and
name only, unless the request carries `Authorization: Bearer <admin_token>`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from . import introspect, jsonenc, openapi
from .bus import BUS
from .checks import is_production
from .db import BASE_DIR, DB, DRIFT, ping, unavailable
from .errors import wants_json
from .auth import ADMIN_TOKEN, bearer_matches
from .tree import LEVEL, TREE

logger = logging.getLogger("nestor.pages")
STATIC_DIR = Path(__file__).resolve().parent / "static"
READY_TIMEOUT = 2.0
Probe = Callable[[], Awaitable[Any]]  # a readiness check, called once per /health
Results = dict[str, dict[str, Any]]  # {name: {"ready": bool, "error": ...}}
_METHOD = re.compile(r"[A-Za-z]{1,16}")
PUBLIC_FIELDS = ("method", "path", "name")  # what production shows without the admin token


def setup(root: web.Application) -> None:
    """Add the root pages and the kernel's static files to the root app."""
    root.add_routes(
        [
            web.get("/", home, name="home"),
            web.get("/routes", routes_page, name="routes"),
            web.get("/routes.json", routes_json, name="routes_json"),
            web.get("/routes/explain", explain_page, name="explain"),
            web.get("/health", health, name="health"),
            web.get("/health/live", live, name="live"),
            web.get("/health/ready", ready, name="ready"),
            web.get("/openapi.json", openapi_json, name="openapi"),
            web.get("/docs", docs_page, name="docs"),
            web.get("/favicon.ico", favicon, name="favicon"),
            static("/static", STATIC_DIR, name="static"),
        ]
    )


def static(prefix: str, directory: Path, *, name: str) -> web.RouteDef:
    """Return a GET route serving the files under `directory` at `prefix/<filename>`.

    Use it instead of `web.static`: aiohttp's static handler answers a missing file with an
    empty 404 after the middlewares have run, so no error page; this one raises the 404
    first, and it reaches the level's error format. `url(name, filename=...)` works the same.
    """
    root = directory.resolve()

    async def serve_file(request: web.Request) -> web.FileResponse:
        try:
            path = (root / request.match_info["filename"]).resolve()
            found = path.is_relative_to(root) and path.is_file()  # not `..`, absolute, a folder
        except (OSError, ValueError):  # a name too long, a NUL byte
            found = False
        if not found:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    serve_file.__qualname__ = f"static({prefix!r})"
    serve_file.directory = root  # type: ignore[attr-defined]  # for tools that list the files
    return web.get(prefix + "/{filename:.+}", serve_file, name=name)


@aiohttp_jinja2.template("platform/home.html")
async def home(request: web.Request) -> dict[str, Any]:
    """List the mounted sub-apps, with their nested levels."""
    tree = request.app[TREE]
    docs = {
        level.label: level.app.router["docs"].url_for()
        for level in tree.levels[1:]
        if "docs" in level.app.router.named_resources()
    }
    return {"levels": tree.levels[1:], "warnings": tree.warnings, "docs": docs}


def _records(request: web.Request) -> list[introspect.Route]:
    include_head = request.query.get("all") in ("1", "true", "on")
    return introspect.routes(request.app[TREE], include_head=include_head, base=request.app[BASE_DIR])


async def shows_internals(request: web.Request) -> bool:
    """True unless production mode hides handlers, sources and middlewares from this request."""
    return not is_production(request.config_dict) or await bearer_matches(request, ADMIN_TOKEN)


def _as_json(records: list[introspect.Route], internals: bool) -> list[dict[str, Any]]:
    if internals:
        return [r.as_dict() for r in records]
    return [{field: getattr(r, field) for field in PUBLIC_FIELDS} for r in records]


async def routes_page(request: web.Request) -> web.StreamResponse:
    """The route tree: an HTML page grouped by app (JSON with `Accept: application/json`)."""
    records = _records(request)
    internals = await shows_internals(request)
    if wants_json(request):
        return jsonenc.json_response(_as_json(records, internals))
    haystack = _haystack if internals else _public_haystack
    query = request.query.get("q", "").strip()
    if query:
        needle = query.lower()
        records = [r for r in records if needle in haystack(r)]
    if internals:
        ordered = sorted(records, key=lambda r: (r.level.path, r.path))
        groups = [(label, list(rows)) for label, rows in groupby(ordered, key=lambda r: r.subapp)]
    else:  # one table: grouping by app would show the tree's inner structure
        groups = [("routes", records)] if records else []
    context = {
        "groups": groups,
        "q": query,
        "count": len(records),
        "haystack": haystack,
        "internals": internals,
    }
    return aiohttp_jinja2.render_template("platform/routes.html", request, context)


def _haystack(route: introspect.Route) -> str:
    return " ".join([route.method, route.path, route.name or "", route.handler, route.subapp]).lower()


def _public_haystack(route: introspect.Route) -> str:
    return " ".join([route.method, route.path, route.name or ""]).lower()


async def routes_json(request: web.Request) -> web.Response:
    """Every route as JSON, sorted by path and method (the same as `nestor routes --json`)."""
    return jsonenc.json_response(_as_json(_records(request), await shows_internals(request)))


async def explain_page(request: web.Request) -> web.StreamResponse:
    """Explain `?method=GET&path=/polls/1`: the matched app chain, handler, middlewares, config."""
    method = request.query.get("method", "GET").strip() or "GET"
    path = request.query.get("path", "").strip()
    if not _METHOD.fullmatch(method):
        raise web.HTTPBadRequest(text=f"method {method[:40]!r} is not an HTTP method (e.g. GET, POST)")
    if not path.startswith("/") or len(path) > 2000:
        raise web.HTTPBadRequest(
            text="path must start with '/' (for example /polls/1) and be under 2000 characters"
        )
    tree = request.app[TREE]
    explanation = introspect.explain(tree, method, path, base=request.app[BASE_DIR])
    internals = await shows_internals(request)
    if wants_json(request):
        return jsonenc.json_response(explanation.as_dict() if internals else _public_explanation(explanation))
    context = {
        "e": explanation,
        "middlewares": introspect.middleware_chain(explanation.level) if internals else [],
        "internals": internals,
    }
    return aiohttp_jinja2.render_template("platform/explain.html", request, context)


def _public_explanation(e: introspect.Explanation) -> dict[str, Any]:
    route = {field: getattr(e.route, field) for field in PUBLIC_FIELDS} if e.route else None
    return {
        "method": e.method,
        "path": e.path,
        "status": e.status,
        "route": route,
        "params": e.params,
        "allowed": e.allowed,
    }


async def _document(request: web.Request) -> dict[str, Any]:
    """The OpenAPI document of the serving level: full, or reduced in production without the admin token
    (unless its sub-app marks its API public). Built once per level and kind."""
    tree = request.config_dict[TREE]
    level = request.match_info.apps[-1][LEVEL]
    full = (level.spec is not None and level.spec.public_api) or await shows_internals(request)
    key = f"openapi {level.label} full={full}"
    if key not in tree.cache:
        tree.cache[key] = openapi.document(tree, level if level.parent is not None else None, full=full)
    return tree.cache[key]


async def openapi_json(request: web.Request) -> web.Response:
    """This level's OpenAPI 3.1 document (the whole tree's at the root): stable, sorted JSON."""
    text = json.dumps(await _document(request), indent=2, sort_keys=True)
    return web.Response(text=text, content_type="application/json")


async def docs_page(request: web.Request) -> web.StreamResponse:
    """The API documentation, rendered from the OpenAPI document: operations by sub-app, schemas, curl."""
    doc = await _document(request)
    context = {
        "title": doc["info"]["title"],
        "groups": openapi.operations(doc, _origin(request)),
        "document": request.app.router["openapi"].url_for(),
        "full": "components" in doc,
    }
    return aiohttp_jinja2.render_template("platform/docs.html", request, context)


_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def _origin(request: web.Request) -> str:
    """The origin the curl lines name: the request's, when its Host header is a host at all."""
    try:
        host = request.host
    except (UnicodeError, ValueError):  # bytes no Host can have
        host = ""
    return f"{request.scheme}://{host if _HOST.fullmatch(host) else 'localhost'}"


async def favicon(request: web.Request) -> web.Response:
    """No icon: answer browsers' automatic request without an error (pages declare none)."""
    return web.Response(status=204, headers={"Cache-Control": "public, max-age=86400"})


async def health(request: web.Request) -> web.Response:
    """Liveness plus the readiness of the database, the bus and each sub-app; 503 when one is not ready."""
    checks, ready = await readiness(request.app)
    not_ready = [name for name, result in [*checks.items(), *ready.items()] if not result["ready"]]
    body = {
        "status": "unavailable" if not_ready else "ok",
        "checks": checks,
        "subapps": ready,
        "not_ready": not_ready,
    }
    return jsonenc.json_response(body, status=503 if not_ready else 200)


async def live(request: web.Request) -> web.Response:
    """Liveness, for an orchestrator: 200 while this process serves requests (it checks nothing else)."""
    return jsonenc.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Readiness, for a load balancer: 503 when the database or a sub-app's own check fails, naming it.

    The bus is not a reason to take an instance out: without Redis each process still serves its
    pages and delivers messages locally. It is listed under `degraded` instead.
    """
    checks, subapps = await readiness(request.app)
    not_ready = ["database"] if not checks["database"]["ready"] else []
    not_ready += [name for name, result in subapps.items() if not result["ready"]]
    degraded = [name for name, result in checks.items() if name != "database" and not result["ready"]]
    body = {"status": "unavailable" if not_ready else "ok", "not_ready": not_ready, "degraded": degraded}
    return jsonenc.json_response(body, status=503 if not_ready else 200)


async def readiness(root: web.Application) -> tuple[Results, Results]:
    """Return the kernel's checks (database, bus) and each sub-app's readiness, run concurrently."""
    kernel: dict[str, Probe] = {"database": partial(ping, root[DB]), "bus": root[BUS].ready}
    subapps: dict[str, Probe] = {
        level.label: partial(level.spec.ready, level.app)
        for level in root[TREE].levels[1:]
        if level.spec is not None and level.spec.ready is not None
    }
    checks, ready = await asyncio.gather(_check_all(kernel), _check_all(subapps))
    for label in root.get(DRIFT, {}):  # the details are in the log and `nestor db status`, not on a public page
        ready[label] = {"ready": False, "error": "its tables do not match its code: see nestor db status"}
    return checks, ready


async def _check_all(probes: dict[str, Probe]) -> Results:
    results = await asyncio.gather(*(_check(name, probe) for name, probe in probes.items()))
    return dict(zip(probes, results))


async def _check(name: str, probe: Probe) -> dict[str, Any]:
    # /health is public: the exception's text (a URL, a password) goes to the log, not the body.
    try:
        result = await asyncio.wait_for(probe(), READY_TIMEOUT)
    except TimeoutError:
        return {"ready": False, "error": f"no answer within {READY_TIMEOUT:g}s"}
    except Exception as e:
        reason = unavailable(e)
        if reason is not None:  # an outage, polled every few seconds: one line, not a traceback
            logger.warning("readiness check of %s failed: %s", name, reason)
        else:
            logger.warning("readiness check of %s failed", name, exc_info=e)
        return {"ready": False, "error": type(e).__name__}
    return {"ready": result is not False}
