"""The monitor JSON API at /monitor/api. Errors are application/problem+json (RFC 9457).

When `api_token` is set at any level, every request needs `Authorization: Bearer <api_token>`.
A check asked for (`POST .../check`) makes the server send a request, so it is guarded more:
the admin token is accepted for it too, and with either token set it needs one of them; and
each target may be checked this way once per `manual_check_interval`, counted on the bus for
the whole site (429 with Retry-After sooner).
"""

from __future__ import annotations

import hmac
import math

from aiohttp import web
from aiohttp.typedefs import Handler

from nestor import ADMIN_TOKEN, API_TOKEN, BUS, DB, PAGE_SIZE, guards, json_response, operation, require_token, shield

from . import db, schemas
from .monitor import MONITOR, MonitorClosed, Status
from .settings import MANUAL_CHECK_INTERVAL
from .targets import UnknownTarget

RECENT_CHANGES = 20
COUNTER = "monitor.manual-check:"  # + the target's name: the bus counter of its manual checks
ADMIN_ONLY = require_token(ADMIN_TOKEN)  # for checks asked with the admin token


def create_api_app() -> web.Application:
    # trigger_tokens comes first: it lets the admin token past require_token(api_token) for checks.
    app = web.Application(middlewares=[trigger_tokens, require_token(API_TOKEN)])
    app.add_routes(
        [
            web.get("/targets", list_targets, name="targets"),
            web.get("/targets/{target}", get_target, name="target"),
            web.get("/targets/{target}/checks", list_checks, name="checks"),
            web.post("/targets/{target}/check", check_now, name="check"),
        ]
    )
    return app


@operation(responses={200: schemas.TargetList})
async def list_targets(request: web.Request) -> web.Response:
    """Every target with its state, last check and uptime."""
    statuses = await request.config_dict[MONITOR].statuses()
    return json_response({"items": [target_json(request, s) for s in statuses]})


@operation(responses={200: schemas.TargetWithChanges}, errors=(404,))
async def get_target(request: web.Request) -> web.Response:
    """One target, with its recent changes."""
    status = await status_or_404(request)
    changes = await db.recent_changes(request.config_dict[DB], [status.target.name], RECENT_CHANGES)
    return json_response({**target_json(request, status), "changes": [c.as_dict() for c in changes]})


@operation(query=schemas.ChecksQuery, responses={200: schemas.CheckList}, errors=(404,))
async def list_checks(request: web.Request, query: schemas.ChecksQuery) -> web.Response:
    """A target's recent checks, newest first."""
    status = await status_or_404(request)
    limit = min(query.limit or request.config_dict[PAGE_SIZE], schemas.MAX_LIMIT)
    checks = await db.recent_checks(request.config_dict[DB], status.target.name, limit)
    return json_response(
        {"target": status.target.name, "limit": limit, "items": [c.as_dict() for c in checks]}
    )


@operation(responses={202: schemas.CheckDone}, errors=(404, 429))
async def check_now(request: web.Request) -> web.Response:
    """Check a target now: 202 with the recorded check; it completes even if the client leaves.

    Once per `manual_check_interval` per target for the whole site: sooner is 429 with Retry-After.
    """
    monitor = request.config_dict[MONITOR]
    name = request.match_info["target"]
    try:
        monitor.target(name)
    except UnknownTarget as e:
        raise web.HTTPNotFound(text=str(e)) from e
    await refuse_if_too_soon(request, name)
    try:
        check = await shield(request, monitor.check_now(name))
    except MonitorClosed as e:
        raise web.HTTPServiceUnavailable(text="The monitor is shutting down; try again later.") from e
    location = request.app.router["checks"].url_for(target=name)
    return json_response(
        {"target": name, "state": check.state, "check": check.as_dict()},
        status=202,
        headers={"Location": str(location)},
    )


async def refuse_if_too_soon(request: web.Request, name: str) -> None:
    """Count a manual check of `name` on the bus; raise 429 when one was made less than the interval ago."""
    interval = request.config_dict[MANUAL_CHECK_INTERVAL]
    if not interval:
        return
    count, left = await request.config_dict[BUS].count(COUNTER + name, interval)
    if count > 1:
        wait = max(1, math.ceil(left))
        raise web.HTTPTooManyRequests(
            text=f"The target {name!r} was checked on request less than {interval:g} s ago; try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )


@guards(ADMIN_TOKEN, API_TOKEN, handlers=[check_now])  # for nestor check --deploy and /routes/explain
@web.middleware
async def trigger_tokens(request: web.Request, handler: Handler) -> web.StreamResponse:
    """For `check_now`: with an admin or api token set, demand one of them; other routes pass.

    Both are checked by the kernel's `require_token` (constant time, failures counted per client).
    """
    if request.match_info.handler is not check_now:
        return await handler(request)
    admin, api = request.config_dict.get(ADMIN_TOKEN), request.config_dict.get(API_TOKEN)
    if not admin:
        return await handler(request)  # require_token(api_token) next: open only when it is unset too
    if not api:
        return await ADMIN_ONLY(request, handler)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(errors="replace"), str(admin).encode()):
        # The admin token, which require_token(api_token) would refuse: the kernel checks it again
        # (so a client blocked for wrong tokens is still refused) and the check runs.
        return await ADMIN_ONLY(request, request.match_info.handler)
    return await handler(request)


async def status_or_404(request: web.Request) -> Status:
    """Return the status of the target named by the URL, or raise 404."""
    try:
        [status] = await request.config_dict[MONITOR].statuses([request.match_info["target"]])
    except UnknownTarget as e:
        raise web.HTTPNotFound(text=str(e)) from e
    return status


def target_json(request: web.Request, status: Status) -> dict[str, object]:
    """Return a target's status as the API shows it, with links to its checks and its page."""
    name = status.target.name
    return {
        **status.as_dict(),
        "links": {
            "checks": str(request.app.router["checks"].url_for(target=name)),
            "check": str(request.app.router["check"].url_for(target=name)),
        },
    }

