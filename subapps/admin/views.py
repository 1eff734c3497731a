"""The admin pages: HTML for people, JSON for `Accept: application/json` (the same data)."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from nestor import (
    ADMIN_TOKEN,
    csrf_token,
    forget_token,
    get_site,
    json_response,
    operation,
    read_form,
    remember_token,
    wants_json,
)

from . import schemas


async def respond(request: web.Request, template: str, context: dict[str, Any], data: Any) -> web.Response:
    """Return `data` as JSON when the client asks for JSON, else the page (with the logout form's token)."""
    if wants_json(request):
        return json_response(data)
    context = {**context, "csrf_token": await csrf_token(request)}
    return aiohttp_jinja2.render_template(template, request, context)


# -- overview ----------------------------------------------------------------------------------


@operation(responses={200: schemas.Overview}, errors=(401, 403, 404))
async def index(request: web.Request) -> web.Response:
    """The mounted sub-apps: prefix, nesting, readiness and how many requests each has served."""
    site = get_site(request)
    checks, ready = await site.readiness()
    counts = site.requests_by_subapp()
    levels = [_level_row(level, ready, counts) for level in site.levels]
    data = {"mode": site.mode, "checks": checks, "levels": levels, "warnings": site.warnings}
    return await respond(request, "admin/index.html", {**data, "metrics": counts is not None}, data)


def _level_row(level: Any, ready: dict[str, dict[str, Any]], counts: dict[str, int] | None) -> dict[str, Any]:
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


@operation(responses={200: list[schemas.LevelConfig]}, errors=(401, 403, 404))
async def config(request: web.Request) -> web.Response:
    """Each level's effective settings and where each came from; secrets as ***."""
    levels = [
        {"level": level.label, "prefix": level.prefix or "/", "values": level.described()}  # secrets redacted
        for level in get_site(request).levels
    ]
    return await respond(request, "admin/config.html", {"levels": levels}, levels)


# -- routes ------------------------------------------------------------------------------------


@operation(responses={200: list[schemas.Route]}, errors=(401, 403, 404))
async def routes(request: web.Request) -> web.Response:
    """Every route with its handler, source file:line and the middlewares that run for it."""
    site = get_site(request)
    records = site.routes()
    groups = [
        {"level": level, "middlewares": site.middlewares(level), "routes": [r for r in records if r.level is level]}
        for level in site.levels
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
