"""The monitor JSON API at /monitor/api. Errors are application/problem+json (RFC 9457).

When `api_token` is set at any level, every request needs `Authorization: Bearer <api_token>`.
"""

from __future__ import annotations

from aiohttp import web

from nestor import API_TOKEN, DB, PAGE_SIZE, json_response, operation, require_token, shield

from . import db, schemas
from .monitor import MONITOR, MonitorClosed, Status
from .targets import UnknownTarget

RECENT_CHANGES = 20


def create_api_app() -> web.Application:
    app = web.Application(middlewares=[require_token(API_TOKEN)])
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


@operation(responses={202: schemas.CheckDone}, errors=(404,))
async def check_now(request: web.Request) -> web.Response:
    """Check a target now: 202 with the recorded check; it completes even if the client leaves."""
    monitor = request.config_dict[MONITOR]
    name = request.match_info["target"]
    try:
        monitor.target(name)
    except UnknownTarget as e:
        raise web.HTTPNotFound(text=str(e)) from e
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

