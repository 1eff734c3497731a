"""The admin pages: HTML for people, JSON for `Accept: application/json` (the same data)."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from nestor import introspect, jsonenc
from nestor.checks import MODE
from nestor.db import BASE_DIR
from nestor.errors import wants_json
from nestor.inputs import read_form
from nestor.metrics import METRICS
from nestor.auth import ADMIN_TOKEN, forget_token, remember_token
from nestor.pages import readiness
from nestor.sessions import csrf_token
from nestor.tree import TREE, Level, Tree


async def respond(request: web.Request, template: str, context: dict[str, Any], data: Any) -> web.Response:
    """Return `data` as JSON when the client asks for JSON, else the page (with the logout form's token)."""
    if wants_json(request):
        return jsonenc.json_response(data)
    context = {**context, "csrf_token": await csrf_token(request)}
    return aiohttp_jinja2.render_template(template, request, context)


# -- overview ----------------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    """The mounted sub-apps: prefix, nesting, readiness and how many requests each has served."""
    tree = request.config_dict[TREE]
    root = tree.root.app
    checks, ready = await readiness(root)
    metrics = root.get(METRICS)
    counts = metrics.requests_by_subapp() if metrics is not None else None
    levels = [_level_row(level, ready, counts) for level in tree.levels]
    data = {
        "mode": root.get(MODE, MODE.default),
        "checks": checks,
        "levels": levels,
        "warnings": tree.warnings,
    }
    return await respond(request, "admin/index.html", {**data, "metrics": metrics is not None}, data)


def _level_row(
    level: Level, ready: dict[str, dict[str, Any]], counts: dict[str, int] | None
) -> dict[str, Any]:
    return {
        "level": level.label,
        "title": level.title,
        "prefix": level.prefix or "/",
        "parent": level.parent.label if level.parent is not None else None,
        "depth": len(level.path),
        "ready": ready.get(level.label),  # None: the sub-app declares no readiness check
        "requests": counts.get(level.label, 0) if counts is not None else None,
    }


# -- configuration -----------------------------------------------------------------------------


async def config(request: web.Request) -> web.Response:
    """Each level's effective settings and where each came from; secrets as ***."""
    tree: Tree = request.config_dict[TREE]
    levels = [
        {
            "level": level.label,
            "prefix": level.prefix or "/",
            "values": level.described(),  # secrets redacted
        }
        for level in tree.levels
    ]
    return await respond(request, "admin/config.html", {"levels": levels}, levels)


# -- routes ------------------------------------------------------------------------------------


async def routes(request: web.Request) -> web.Response:
    """Every route with its handler, source file:line and the middlewares that run for it."""
    tree: Tree = request.config_dict[TREE]
    records = introspect.routes(tree, base=tree.root.app[BASE_DIR])
    groups = [
        {
            "level": level,
            "middlewares": introspect.middleware_chain(level),
            "routes": [r for r in records if r.level is level],
        }
        for level in tree.levels
    ]
    context = {"groups": groups, "count": len(records)}
    return await respond(request, "admin/routes.html", context, [r.as_dict() for r in records])


# -- login -------------------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    """GET: the login form; POST: check the token, remember it in the session and go back.

    The token check serves this form (with status 401) in place of any admin page a browser
    asks for without the token; `next` then brings it back to that page.
    """
    here = request.match_info.handler is login
    home = str(request.app.router["index"].url_for())
    target = safe_next(request.query.get("next", "") if here else request.path_qs, home)
    if not here or request.method != "POST":
        return await render_login(request, target)
    form = await read_form(request)  # the sessions middleware has checked its CSRF token
    target = safe_next(form.get("next", ""), home)
    token = form.get("token")
    if isinstance(token, str) and await remember_token(request, ADMIN_TOKEN, token):
        raise web.HTTPSeeOther(target)
    return await render_login(request, target, error="That token is not valid.", status=403)


async def render_login(
    request: web.Request, target: str, *, error: str = "", status: int = 200
) -> web.Response:
    """Return the login page, carrying the page to go back to and the form's CSRF token."""
    context = {"next": target, "error": error, "csrf_token": await csrf_token(request)}
    return aiohttp_jinja2.render_template("admin/login.html", request, context, status=status)


def safe_next(value: object, default: str) -> str:
    """Return `value` if it is a path on this site, else `default` (no open redirects)."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(c) < 32 for c in value):
        return default  # browsers read /\evil.example as //evil.example
    return value


async def logout(request: web.Request) -> web.Response:
    """End the form login and go to the login page."""
    await forget_token(request, ADMIN_TOKEN)
    raise web.HTTPSeeOther(str(request.app.router["login"].url_for()))
