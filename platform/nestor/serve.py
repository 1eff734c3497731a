"""Serving one process: the options every process serves with, the event loop, and the
checks that refuse a configuration that cannot work with several worker processes.

`nestor.workers` runs N worker processes on one port under a supervisor, which reloads them
on SIGHUP; a single process logs a SIGHUP and keeps serving (it cannot reload in place).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.engine import URL, make_url

from .accesslog import ACCESS_LOGGERS
from .app import PORT
from .bus import BUS_URL
from .checks import is_production
from .config import ConfigError
from .db import DATABASE_URL
from .logs import say

logger = logging.getLogger("nestor.serve")

LOOPS = ("auto", "asyncio", "uvloop")


@dataclass(frozen=True)
class Options:
    """How to serve: where, how many processes, which event loop (picklable for the workers)."""

    config: str | None
    host: str
    port: int
    shutdown_timeout: float
    keepalive_timeout: float = 15.0
    workers: int = 1
    loop: str = "auto"
    log_level: str = "INFO"
    log_format: str = "text"
    # Root settings given on the command line (host, port): every worker's app sees them too.
    command_line: tuple[tuple[str, Any], ...] = ()
    # With several workers: the folder of their private sockets and the token that lets a
    # sibling read a worker's metrics (nestor.hostmetrics).
    siblings_folder: str = ""
    siblings_token: str = ""


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Return a factory of new event loops: uvloop for `uvloop` (and for `auto` when installed), else asyncio."""
    if name not in LOOPS:
        raise ConfigError(f"--loop {name!r}: choose one of {', '.join(LOOPS)}")
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigError(
                "--loop uvloop: uvloop is not installed; install it with "
                "pip install 'nestor[uvloop]', or use --loop asyncio"
            ) from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def worker_problems(
    root: web.Application,
    workers: int,
    *,
    port: int | None = None,
    allow_memory_bus: bool = False,
    where: str | None = None,
) -> tuple[list[str], list[str]]:
    """Return (errors, warnings) about running `workers` processes with this app's port, database and bus.

    `where` names the option that asked for them (`--workers N` by default; `gunicorn -w N`).
    """
    errors: list[str] = []
    warnings: list[str] = []
    if workers <= 1:
        return errors, warnings
    if where is None:  # nestor serve: each worker binds the port itself (gunicorn shares one socket)
        where = f"--workers {workers}"
        if (root[PORT] if port is None else port) == 0:
            errors.append(f"{where}: port 0 would give each worker a port of its own; choose a port")
        if not hasattr(socket, "SO_REUSEPORT"):
            errors.append(
                f"{where}: this system has no SO_REUSEPORT; run one worker per port behind a load balancer, "
                "or gunicorn 'nestor.app:create_app()' --worker-class aiohttp.GunicornWebWorker"
            )
    production = is_production(root)
    if root[BUS_URL].startswith("memory://"):
        text = (
            f"{where}: bus_url is {root[BUS_URL]!r}, which is private to each process: live results "
            "and chat would reach only the clients of the worker that published them"
        )
        if allow_memory_bus and not production:
            warnings.append(text + " (allowed by --allow-memory-bus)")
        else:
            instead = "run one worker (-w 1)" if where.startswith("gunicorn") else (
                "pass --allow-memory-bus if no sub-app needs messages across workers"
            )
            errors.append(f"{text}. Set bus_url to a redis:// URL, or {instead}")
    _database_problems(where, make_url(root[DATABASE_URL]), errors, errors if production else warnings)
    return errors, warnings


def _database_problems(where: str, url: URL, errors: list[str], warnings: list[str]) -> None:
    # In production SQLite shared by several workers is an error (`warnings` is `errors` then).
    if url.get_backend_name() != "sqlite":
        return
    if (url.database or ":memory:") == ":memory:":
        errors.append(
            f"{where}: database_url is an in-memory SQLite database, a different one in each worker; "
            "use a file or PostgreSQL"
        )
    else:
        warnings.append(
            f"{where}: database_url is SQLite, which lets one writer in at a time: the workers' "
            "writes wait for each other. Use PostgreSQL for several workers"
        )


def server_options(options: Options) -> dict[str, Any]:
    """Return the `web.run_app` arguments every process serves with, one process or many."""
    return {
        "host": options.host,
        "port": options.port,
        "handler_cancellation": True,  # the cancellation policy: see nestor.jobs
        "shutdown_timeout": options.shutdown_timeout,
        # aiohttp closes a connection that has not sent a whole request head this many
        # seconds after connecting, or that idles that long between requests.
        "keepalive_timeout": options.keepalive_timeout,
        "access_log_class": ACCESS_LOGGERS[options.log_format],
        # Workers share the port; one process too, so that a deploy can start the new version
        # beside it (--overlap). An address lock keeps a second nestor serve from doing so by mistake.
        "reuse_port": hasattr(socket, "SO_REUSEPORT"),
    }


MALLOC_ARENAS = 2  # glibc's default is 8 per core


def limit_malloc_arenas() -> None:
    """Cap glibc's per-thread memory pools (M_ARENA_MAX), before the server starts its threads.

    The database and log threads each get a pool of their own, which keeps what a burst of work
    (a thousand websockets joining at once) left in it: about 1.7 KiB more per idle websocket,
    measured. `MALLOC_ARENA_MAX` in the environment wins; elsewhere than glibc this does nothing.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(-8, MALLOC_ARENAS)  # -8 is M_ARENA_MAX in glibc's malloc.h


def run(app: web.Application, options: Options) -> None:
    """Serve `app` in this process until SIGINT/SIGTERM, then drain gracefully; SIGHUP is logged and ignored."""
    loop = loop_factory(options.loop)()
    if hasattr(signal, "SIGHUP"):  # not on Windows
        loop.add_signal_handler(signal.SIGHUP, _hangup_ignored)
    web.run_app(app, loop=loop, print=say, **server_options(options))
    # run_app raises when a cleanup context fails: reaching here means every one has run.
    logger.info("stopped: requests drained, every cleanup context has run")


def _hangup_ignored() -> None:
    # Left alone, SIGHUP would end the process without a word or a drain.
    logger.warning(
        "SIGHUP ignored: a single process cannot reload in place and keeps serving the code and "
        "configuration it started with. Restart it, or serve with --workers N (N >= 1), whose "
        "supervisor reloads on SIGHUP without dropping a request"
    )
