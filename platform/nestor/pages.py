"""The root's own pages: home, the route tree (`/routes`, `/routes.json`, explain), `/health`."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from . import introspect
from .bus import BUS
from .db import BASE_DIR, DB, ping
from .errors import wants_json
from .tree import TREE

logger = logging.getLogger("nestor.pages")
STATIC_DIR = Path(__file__).resolve().parent / "static"
READY_TIMEOUT = 2.0
Probe = Callable[[], Awaitable[Any]]  # a readiness check, called once per /health
_METHOD = re.compile(r"[A-Za-z]{1,16}")


def setup(root: web.Application) -> None:
    """Add the root pages and the kernel's static files to the root app."""
    root.add_routes(
        [
            web.get("/", home, name="home"),
            web.get("/routes", routes_page, name="routes"),
            web.get("/routes.json", routes_json, name="routes_json"),
            web.get("/routes/explain", explain_page, name="explain"),
            web.get("/health", health, name="health"),
            web.get("/favicon.ico", favicon, name="favicon"),
            web.static("/static", STATIC_DIR, name="static"),
        ]
    )


@aiohttp_jinja2.template("platform/home.html")
async def home(request: web.Request) -> dict[str, Any]:
    """List the mounted sub-apps, with their nested levels."""
    tree = request.app[TREE]
    return {"levels": tree.levels[1:], "warnings": tree.warnings}


def _records(request: web.Request) -> list[introspect.Route]:
    include_head = request.query.get("all") in ("1", "true", "on")
    return introspect.routes(request.app[TREE], include_head=include_head, base=request.app[BASE_DIR])


async def routes_page(request: web.Request) -> web.StreamResponse:
    """The route tree: an HTML page grouped by app (JSON with `Accept: application/json`)."""
    records = _records(request)
    if wants_json(request):
        return web.json_response([r.as_dict() for r in records])
    query = request.query.get("q", "").strip()
    if query:
        needle = query.lower()
        records = [r for r in records if needle in _haystack(r)]
    ordered = sorted(records, key=lambda r: (r.level.path, r.path))
    groups = [(label, list(rows)) for label, rows in groupby(ordered, key=lambda r: r.subapp)]
    context = {"groups": groups, "q": query, "count": len(records), "haystack": _haystack}
    return aiohttp_jinja2.render_template("platform/routes.html", request, context)


def _haystack(route: introspect.Route) -> str:
    return " ".join([route.method, route.path, route.name or "", route.handler, route.subapp]).lower()


async def routes_json(request: web.Request) -> web.Response:
    """Every route as JSON, sorted by path and method (the same as `nestor routes --json`)."""
    return web.json_response([r.as_dict() for r in _records(request)])


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
    if wants_json(request):
        return web.json_response(explanation.as_dict())
    context = {"e": explanation, "middlewares": introspect.middleware_chain(explanation.level)}
    return aiohttp_jinja2.render_template("platform/explain.html", request, context)


async def favicon(request: web.Request) -> web.Response:
    """No icon: answer browsers' automatic request without an error (pages declare none)."""
    return web.Response(status=204, headers={"Cache-Control": "public, max-age=86400"})


async def health(request: web.Request) -> web.Response:
    """Liveness plus the readiness of the database, the bus and each sub-app; 503 when one is not ready."""
    kernel: dict[str, Probe] = {
        "database": partial(ping, request.app[DB]),
        "bus": request.app[BUS].ready,
    }
    subapps: dict[str, Probe] = {
        level.label: partial(level.spec.ready, level.app)
        for level in request.app[TREE].levels[1:]
        if level.spec is not None and level.spec.ready is not None
    }
    checks, ready = await asyncio.gather(_check_all(kernel), _check_all(subapps))
    not_ready = [name for name, result in [*checks.items(), *ready.items()] if not result["ready"]]
    body = {
        "status": "unavailable" if not_ready else "ok",
        "checks": checks,
        "subapps": ready,
        "not_ready": not_ready,
    }
    return web.json_response(body, status=503 if not_ready else 200)


async def _check_all(probes: dict[str, Probe]) -> dict[str, dict[str, Any]]:
    results = await asyncio.gather(*(_check(name, probe) for name, probe in probes.items()))
    return dict(zip(probes, results))


async def _check(name: str, probe: Probe) -> dict[str, Any]:
    # /health is public: the exception's text (a URL, a password) goes to the log, not the body.
    try:
        result = await asyncio.wait_for(probe(), READY_TIMEOUT)
    except TimeoutError:
        return {"ready": False, "error": f"no answer within {READY_TIMEOUT:g}s"}
    except Exception as e:
        logger.warning("readiness check of %s failed", name, exc_info=e)
        return {"ready": False, "error": type(e).__name__}
    return {"ready": result is not False}
