"""Writes that survive a client disconnect: an aiojobs scheduler per root app.

The server runs with `handler_cancellation=True`, so a handler is cancelled when its client
goes away. A write wrapped in `shield(request, coro)` runs as a scheduler job: it completes
even then, and graceful shutdown waits for it before the database closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

import aiojobs.aiohttp
from aiohttp import web

from .middleware import REQUEST_ID

T = TypeVar("T")
logger = logging.getLogger("nestor.jobs")

atomic = aiojobs.aiohttp.atomic  # decorator: the whole handler runs as a job
spawn = aiojobs.aiohttp.spawn  # fire and forget, still awaited at shutdown


def setup(app: web.Application) -> None:
    """Add the scheduler's cleanup context to the root; sub-apps find it through config_dict."""
    aiojobs.aiohttp.setup(app, limit=1000, pending_limit=10000)


async def shield(request: web.Request, write: Awaitable[T]) -> T:
    """Run `write` to completion even if the client disconnects; return its result."""
    try:
        return await aiojobs.aiohttp.shield(request, write)
    except asyncio.CancelledError:
        # aiohttp writes no access-log line for a cancelled handler: without this one a
        # write whose client left would be on no record at all.
        logger.info(
            "%s %s: the client left; its write completes (rid=%s)",
            request.method,
            request.path,
            request.get(REQUEST_ID, "-"),
        )
        raise
