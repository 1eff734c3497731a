"""The polls pages at /polls: the URL map, start-up (sample questions) and sessions."""

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from nestor import DB, config_of, setup_sessions, static

from . import db, views

STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes(
        [
            web.get("/", views.index, name="index"),
            web.get("/new", views.new, name="new"),
            web.post("/new", views.create, name="new"),
            web.get(r"/{question_id:\d+}", views.detail, name="detail"),
            web.post(r"/{question_id:\d+}/vote", views.vote, name="vote"),
            web.get(r"/{question_id:\d+}/results", views.results, name="results"),
            web.get(r"/{question_id:\d+}/live", views.live, name="live"),
            static("/static", STATIC_DIR, name="static"),
        ]
    )
    app.cleanup_ctx.append(seed_samples)  # the kernel has migrated the tables by then
    setup_sessions(app)  # forms carry CSRF tokens; the /api child is left out
    return app


async def seed_samples(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: on the first run against an empty database, add two sample questions."""
    await db.seed(config_of(app)[DB])
    yield


async def ready(app: web.Application) -> bool:
    """Readiness for /health: the polls tables answer a query."""
    await db.count_questions(config_of(app)[DB], limit=1)
    return True
