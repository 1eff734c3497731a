"""The chat pages at /chat: the URL map and start-up (tables, the hub and its background task)."""

from pathlib import Path

from aiohttp import web

from nestor import DB, config_of, static

from . import db, hub, views, ws

STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes(
        [
            web.get("/", views.index, name="index"),
            web.get("/ws/{room}", ws.chat_socket, name="socket"),
            static("/static", STATIC_DIR, name="static"),
            # Unconstrained, so that a bad room name gets a page saying what is wrong.
            web.get("/{room}", views.room, name="room"),
        ]
    )
    app.cleanup_ctx.append(hub.hub_ctx)
    app.on_shutdown.append(hub.close_sockets)  # before graceful shutdown waits for handlers
    return app


async def ready(app: web.Application) -> bool:
    """Readiness for /health: the chat table answers a query."""
    await db.answers(config_of(app)[DB])
    return True
