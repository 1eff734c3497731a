"""Start-up and teardown order across the whole tree of apps.

aiohttp tears an app's own cleanup contexts down before its sub-apps' (so a sub-app's
cleanup would find the database closed), and when start-up fails it tears down only the
root's own contexts (so sub-apps that had started leak). `mount()` and `tree_guard` make
teardown the exact reverse of start-up, of only what started, through public signal lists.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

logger = logging.getLogger("nestor")

Handler = Callable[[web.Application], Awaitable[None]]
CHILD_CLEANUPS = web.AppKey("nestor.child_cleanups", list)


def mount(parent: web.Application, prefix: str, child: web.Application) -> None:
    """`add_subapp`, with teardown made the exact reverse of start-up.

    aiohttp tears an app's own cleanup contexts down before its sub-apps, and when start-up
    fails it tears down only the root's own contexts. Here a sub-app is torn down before
    its parent's contexts, latest mounted first, and only if its start-up began.
    """
    _own_contexts_exit_last(child)
    starts, cleanups = len(parent.on_startup), len(parent.on_cleanup)
    parent.add_subapp(prefix, child)
    # add_subapp appends one handler per signal that forwards it to the child; take them
    # from the end of the public signal lists and put them where teardown needs them.
    if len(parent.on_startup) != starts + 1 or len(parent.on_cleanup) != cleanups + 1:
        logger.warning("cannot order the teardown of the sub-app at %s: add_subapp changed", prefix)
        return
    start_child, cleanup_child = _started_only(parent.on_startup[-1], parent.on_cleanup[-1])
    parent.on_startup[-1] = start_child
    del parent.on_cleanup[-1]
    parent.on_cleanup.insert(0, cleanup_child)
    parent.setdefault(CHILD_CLEANUPS, []).append(cleanup_child)


def _own_contexts_exit_last(app: web.Application) -> None:
    # on_startup enters the app's cleanup contexts first, so teardown exits them last: after
    # the sub-apps its factory mounted with add_subapp, which aiohttp would tear down later.
    exits = [h for h in app.on_cleanup if getattr(h, "__self__", None) is app.cleanup_ctx]
    if len(exits) != 1:
        logger.warning("cannot find the cleanup contexts of %r in its on_cleanup signal", app)
        return
    app.on_cleanup.remove(exits[0])
    app.on_cleanup.append(exits[0])


def _started_only(start: Handler, cleanup: Handler) -> tuple[Handler, Handler]:
    """Wrap a sub-app's forwarding handlers: it is torn down once, and only if it started."""
    started = False

    async def start_child(app: web.Application) -> None:
        nonlocal started
        started = True  # before awaiting: a start-up that fails half-way still needs teardown
        await start(app)

    async def cleanup_child(app: web.Application) -> None:
        nonlocal started
        if started:
            started = False
            await cleanup(app)

    return start_child, cleanup_child


async def tree_guard(app: web.Application) -> AsyncIterator[None]:
    """Root cleanup context, registered last: if start-up failed, tear down the sub-apps that started.

    aiohttp then runs only the root's own contexts, so the sub-apps' would leak.
    """
    yield
    if not app.on_cleanup.frozen:  # aiohttp freezes the root only once start-up succeeded
        for cleanup_child in reversed(app.get(CHILD_CLEANUPS, [])):
            await cleanup_child(app)


