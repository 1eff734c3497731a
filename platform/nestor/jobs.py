"""Writes that survive a client disconnect: an aiojobs scheduler per root app.

The server runs with `handler_cancellation=True`, so a handler is cancelled when its client
goes away. A write wrapped in `shield(request, coro)` runs as a scheduler job: it completes
even then, and graceful shutdown waits for it before the database closes.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import aiojobs.aiohttp
from aiohttp import web

T = TypeVar("T")

atomic = aiojobs.aiohttp.atomic  # decorator: the whole handler runs as a job
spawn = aiojobs.aiohttp.spawn  # fire and forget, still awaited at shutdown


def setup(app: web.Application) -> None:
    """Add the scheduler's cleanup context to the root; sub-apps find it through config_dict."""
    aiojobs.aiohttp.setup(app, limit=1000, pending_limit=10000)


async def shield(request: web.Request, write: Awaitable[T]) -> T:
    """Run `write` to completion even if the client disconnects; return its result."""
    return await aiojobs.aiohttp.shield(request, write)
