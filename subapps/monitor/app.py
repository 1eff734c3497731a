"""The monitor pages at /monitor: the URL map, and start-up (tables, then the monitor)."""

from pathlib import Path

from aiohttp import web

from nestor import DB, config_of, static

from . import db, views
from .monitor import MONITOR, monitor_ctx

STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes(
        [
            web.get("/", views.index, name="index"),
            web.get("/ws", views.live, name="ws"),
            static("/static", STATIC_DIR, name="static"),
            # Target names never take the paths above (or /api): the settings refuse them.
            web.get("/{target}", views.detail, name="detail"),
        ]
    )
    app.cleanup_ctx.append(monitor_ctx)  # reads the last states, so it comes after the tables
    return app


async def ready(app: web.Application) -> bool:
    """Readiness for /health: the checks run and the monitor's tables answer a query."""
    await db.ping(config_of(app)[DB])
    return app[MONITOR].running
