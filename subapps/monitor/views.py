"""The monitor pages: the dashboard, a target's details, and the live websocket."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from nestor import BUS, DB, jsonenc
from nestor.bus import Subscription

from . import chart, db
from .monitor import CHANGES_TOPIC, CHECKS_TOPIC, MONITOR
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
    """A websocket sending each target's last check now, then every check and state change."""
    monitor, bus = request.app[MONITOR], request.config_dict[BUS]
    # Subscribe before sending the snapshot, so no check falls between the two.
    async with (
        bus.subscribe(CHECKS_TOPIC, LIVE_QUEUE) as checks,
        bus.subscribe(CHANGES_TOPIC, LIVE_QUEUE) as changes,
    ):
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        for message in monitor.snapshot():
            await ws.send_json(message, dumps=jsonenc.dumps)
        forwards = [asyncio.create_task(_forward(sub, ws)) for sub in (checks, changes)]
        try:
            async for _message in ws:
                pass  # watchers send nothing; reading is how the close is noticed
        finally:
            for task in forwards:
                task.cancel()
            await asyncio.wait(forwards)
    return ws


async def _forward(subscription: Subscription, ws: web.WebSocketResponse) -> None:
    async for message in subscription:
        if ws.closed:
            return
        try:
            await ws.send_json(message, dumps=jsonenc.dumps)
        except ConnectionError:
            return  # the watcher left while we were sending
