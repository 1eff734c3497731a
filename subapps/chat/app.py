"""The chat pages at /chat: the URL map and start-up (the hub and its background task, the pruning of old messages)."""

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web

from nestor import DB, config_of, leader, static

from . import db, hub, views, ws
from .settings import KEEP_DAYS

STATIC_DIR = Path(__file__).resolve().parent / "static"
PRUNE_EVERY = 3600.0  # seconds between two prunings of the messages older than keep_days
logger = logging.getLogger("nestor_subapps.chat")


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
    app.cleanup_ctx.append(prune_ctx)
    app.on_shutdown.append(hub.close_sockets)  # before graceful shutdown waits for handlers
    return app


async def ready(app: web.Application) -> bool:
    """Readiness for /health: the chat table answers a query."""
    await db.answers(config_of(app)[DB])
    return True


async def prune_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: with keep_days above 0, one process of the whole site deletes the
    messages older than that at start-up, then every PRUNE_EVERY seconds."""
    config = config_of(app)
    keep_days, engine = config[KEEP_DAYS], config[DB]
    if not keep_days:
        yield
        return

    async def prune_forever() -> None:
        while True:
            try:
                cutoff = datetime.now(UTC) - timedelta(days=keep_days)
            except OverflowError:  # a cutoff before the year 1: no message is that old
                cutoff = None
            if cutoff is not None:
                try:
                    await db.prune(engine, cutoff)
                except Exception:  # the database is down, say: try again next time, not every second
                    logger.exception("chat: could not prune the messages older than %s days", keep_days)
            await asyncio.sleep(PRUNE_EVERY)

    async with leader(app, "chat.prune", prune_forever):
        yield
