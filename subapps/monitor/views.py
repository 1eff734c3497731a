"""The monitor pages: the dashboard, a target's details, and the live websocket."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from nestor import BUS, DB, WebSocket, forward, json_dumps

from . import chart, db
from .monitor import CHANGES_TOPIC, CHECKS_TOPIC, MONITOR, check_message
from .targets import UnknownTarget

RECENT_CHANGES = 20
LIVE_QUEUE = 100  # messages a slow websocket may fall behind before it loses the oldest


@aiohttp_jinja2.template("monitor/index.html")
async def index(request: web.Request) -> dict[str, Any]:
    monitor, engine = request.app[MONITOR], request.config_dict[DB]
    statuses = await monitor.statuses()
    charts = {
        s.target.name: chart.latency_chart(await db.recent_checks(engine, s.target.name, chart.POINTS))
        for s in statuses
    }
    changes = await db.recent_changes(engine, list(monitor.targets), RECENT_CHANGES)
    return {"statuses": statuses, "charts": charts, "changes": changes}


@aiohttp_jinja2.template("monitor/detail.html")
async def detail(request: web.Request) -> dict[str, Any]:
    monitor, engine = request.app[MONITOR], request.config_dict[DB]
    name = request.match_info["target"]
    try:
        [status] = await monitor.statuses([name])
    except UnknownTarget as e:
        raise web.HTTPNotFound(text=str(e)) from e
    recent = await db.recent_checks(engine, name, chart.POINTS)
    return {
        "status": status,
        "chart": chart.latency_chart(recent),
        "checks": recent,
        "changes": await db.recent_changes(engine, [name], RECENT_CHANGES),
    }


async def live(request: web.Request) -> web.WebSocketResponse:
    """A websocket sending each target's status and the recent changes now, then every check and change."""
    monitor, bus, engine = request.app[MONITOR], request.config_dict[BUS], request.config_dict[DB]
    # Subscribe before reading the statuses and changes, so none falls between the two: a page
    # drops what it has already shown (by check id and change id).
    async with (
        bus.subscribe(CHECKS_TOPIC, maxsize=LIVE_QUEUE) as checks,
        bus.subscribe(CHANGES_TOPIC, maxsize=LIVE_QUEUE) as changes,
    ):
        statuses = await monitor.statuses()
        recent = await db.recent_changes(engine, list(monitor.targets), RECENT_CHANGES)
        ws = WebSocket(heartbeat=30)
        await ws.prepare(request)
        first = [check_message(s.target.name, s.last, s.uptime) for s in statuses if s.last is not None]
        first += [{"type": "change", **c.as_dict()} for c in reversed(recent)]  # oldest first
        try:
            for message in first:
                await ws.send_json(message, dumps=json_dumps)
        except ConnectionError:
            return ws  # the watcher left at once
        await forward(ws, checks, changes)
    return ws

