"""Serving: one process, or a supervisor and N worker processes sharing one port.

Several workers bind the same port with SO_REUSEPORT and the operating system spreads new
connections across them. We chose this over gunicorn's aiohttp worker because that worker
builds its own `AppRunner` without `handler_cancellation` and with gunicorn's access log
format, so the kernel's cancellation policy and `AccessLogger` would be lost; here every
worker runs the same `web.run_app` call as a single process does, and no dependency is
added. Each worker builds its own app, database pool, bus connection and event loop.

The first worker starts alone and the others once it serves. The supervisor reports a worker
that dies (with its exit code or signal) and starts a new one; a worker that fails during
start-up stops the whole server. SIGTERM or SIGINT is forwarded to every worker, which drains
its requests gracefully; a second one stops them at once.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web
from sqlalchemy.engine import URL, make_url

from .app import PORT, WORKER, as_config, create_app
from .bus import BUS_URL
from .config import ConfigError, add_command_line
from .db import DATABASE_URL
from .middleware import ACCESS_LOGGERS, configure_logging

logger = logging.getLogger("nestor.serve")

LOOPS = ("auto", "asyncio", "uvloop")
STOP_GRACE = 10.0  # seconds a worker may take past shutdown_timeout for its cleanup contexts
POLL = 0.5  # how often the supervisor checks its deadline while it waits


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
    root: web.Application, workers: int, *, port: int | None = None, allow_memory_bus: bool = False
) -> tuple[list[str], list[str]]:
    """Return (errors, warnings) about running `workers` processes with this app's port, database and bus."""
    errors: list[str] = []
    warnings: list[str] = []
    if workers <= 1:
        return errors, warnings
    where = f"--workers {workers}"
    if (root[PORT] if port is None else port) == 0:
        errors.append(f"{where}: port 0 would give each worker a port of its own; choose a port")
    if not hasattr(socket, "SO_REUSEPORT"):
        errors.append(
            f"{where}: this system has no SO_REUSEPORT; run one worker per port behind a load balancer, "
            "or gunicorn 'nestor.app:create_app()' --worker-class aiohttp.GunicornWebWorker"
        )
    if root[BUS_URL].startswith("memory://"):
        text = (
            f"{where}: bus_url is {root[BUS_URL]!r}, which is private to each process: live results "
            "and chat would reach only the clients of the worker that published them"
        )
        if allow_memory_bus:
            warnings.append(text + " (allowed by --allow-memory-bus)")
        else:
            errors.append(
                text + ". Set bus_url to a redis:// URL, or pass --allow-memory-bus if no sub-app "
                "needs messages across workers"
            )
    _database_problems(where, make_url(root[DATABASE_URL]), errors, warnings)
    return errors, warnings


def _database_problems(where: str, url: URL, errors: list[str], warnings: list[str]) -> None:
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
    }


def run(app: web.Application, options: Options) -> None:
    """Serve `app` in this process until SIGINT/SIGTERM, then drain gracefully."""
    web.run_app(app, loop=loop_factory(options.loop)(), **server_options(options))
    # run_app raises when a cleanup context fails: reaching here means every one has run.
    logger.info("stopped: requests drained, every cleanup context has run")


# -- the workers ---------------------------------------------------------------------------


def _worker(options: Options, index: int, ready: Connection, supervisor: int) -> None:
    """Entry point of a worker process: build the app and serve on the shared port."""
    configure_logging(
        options.log_level,
        options.log_format,
        f"%(asctime)s %(levelname)s [worker {index} %(process)d] %(name)s: %(message)s",
    )
    loop = loop_factory(options.loop)()
    stopping = False

    def stop() -> None:
        # The terminal's Ctrl-C reaches the workers and the supervisor forwards it too:
        # a second signal must not cut the graceful drain short.
        nonlocal stopping
        if not stopping:
            stopping = True
            raise web.GracefulExit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)

    def announce(*_: Any) -> None:  # run_app calls it once the port is open
        ready.send((os.getpid(), type(loop).__module__.partition(".")[0]))

    nestor_logger = logging.getLogger("nestor")
    level = nestor_logger.level
    nestor_logger.setLevel(logging.ERROR)  # the supervisor logged the tree's warnings once
    try:
        config = as_config(options.config)
        add_command_line(config, dict(options.command_line))
        app = create_app(config)
        nestor_logger.setLevel(level)
        app[WORKER] = index
        app.cleanup_ctx.append(_orphan_guard(supervisor))
        web.run_app(
            app, reuse_port=True, loop=loop, handle_signals=False, print=announce, **server_options(options)
        )
        logger.info("stopped: requests drained, every cleanup context has run")
    except ConfigError as e:
        print(f"nestor: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


def _orphan_guard(supervisor: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """Cleanup context: shut this worker down if its supervisor is gone (killed with SIGKILL)."""

    async def guard(app: web.Application) -> AsyncIterator[None]:
        async def watch() -> None:
            while os.getppid() == supervisor:
                await asyncio.sleep(1)
            logger.error("the supervisor (pid %d) is gone: shutting down", supervisor)
            os.kill(os.getpid(), signal.SIGTERM)

        task = asyncio.create_task(watch())
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    return guard


# -- the supervisor ------------------------------------------------------------------------


@dataclass(eq=False)
class Worker:
    """A worker process as the supervisor sees it."""

    index: int
    process: BaseProcess
    conn: Connection | None  # None once it said it is ready, or closed its end
    ready: bool = False
    loop: str = ""


def describe_exit(code: int | None) -> str:
    """Return how a process ended: `exited with code 1`, `was killed by SIGKILL`."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Start N workers on one port, report and replace those that die, forward stop signals."""

    def __init__(self, options: Options) -> None:
        self.options = options
        # spawn, not fork: each worker starts clean (no inherited loop, pool or socket).
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, Worker] = {}
        self.started = False
        self.failed = False
        self.deadline: float | None = None

    def run(self) -> int:
        """Serve until stopped; return 0 after a clean shutdown, 1 if start-up or shutdown failed."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            # The first worker starts alone, so one-time start-up work (creating tables,
            # seeding) runs before the others start: concurrent CREATE TABLEs would collide.
            self._start(0)
            while self.workers:
                self._wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if self.failed else 0

    def _start(self, index: int) -> None:
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker, args=(self.options, index, sender, os.getpid()), name=f"nestor-worker-{index}"
        )
        process.start()
        sender.close()  # the worker holds the other end: its exit shows as end-of-file here
        self.workers[index] = Worker(index, process, receiver)

    def _wait(self) -> None:
        waiting: dict[Any, Worker] = {}
        for worker in self.workers.values():
            waiting[worker.process.sentinel] = worker
            if worker.conn is not None:
                waiting[worker.conn] = worker
        # Messages before exits: a worker may say it is ready and die in the same instant.
        for item in sorted(wait(list(waiting), timeout=POLL), key=lambda i: i is not waiting[i].conn):
            worker = waiting[item]
            if item is worker.conn:
                self._heard(worker)
            else:
                worker.process.join()
                self._ended(worker)
        if self.deadline is not None and time.monotonic() > self.deadline:
            for worker in self.workers.values():
                logger.error("worker %d (pid %d) did not stop in time: killing it", worker.index, worker.process.pid)
                worker.process.kill()
            self.failed = True
            self.deadline = None

    def _heard(self, worker: Worker) -> None:
        if worker.conn is None:
            return
        try:
            _pid, worker.loop = worker.conn.recv()
        except EOFError:  # it died before it was ready: its exit is handled by _ended
            worker.conn.close()
            worker.conn = None
            return
        worker.conn.close()
        worker.conn, worker.ready = None, True
        if self.deadline is not None:  # it started while we were stopping: stop it too
            os.kill(worker.process.pid, signal.SIGTERM)
        elif self.started:
            logger.warning("worker %d (pid %d) is serving", worker.index, worker.process.pid)
        elif len(self.workers) == 1 and self.deadline is None:
            for index in range(1, self.options.workers):
                self._start(index)
        if not self.started and len(self.workers) == self.options.workers:
            if all(w.ready for w in self.workers.values()):
                self.started = True
                self._announce()

    def _announce(self) -> None:
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        pids = ", ".join(str(w.process.pid) for w in self.workers.values())
        loops = ", ".join(sorted({w.loop for w in self.workers.values()}))
        print(
            f"======== Running on http://{host}:{self.options.port} with "
            f"{self.options.workers} workers (pids {pids}; loop {loops}) ========\n"
            "(Press CTRL+C to quit)",
            flush=True,
        )

    def _ended(self, worker: Worker) -> None:
        del self.workers[worker.index]
        how = describe_exit(worker.process.exitcode)
        if self.deadline is not None:  # stopping: exits are expected, failures are not
            # A worker still starting has no signal handler yet: SIGTERM simply ends it.
            unready = not worker.ready and worker.process.exitcode == -signal.SIGTERM
            if worker.process.exitcode != 0 and not unready:
                logger.error("worker %d (pid %d) %s while stopping", worker.index, worker.process.pid, how)
                self.failed = True
            return
        if not worker.ready:
            logger.error("worker %d (pid %d) %s during start-up", worker.index, worker.process.pid, how)
            if not self.started:
                self.failed = True
                self.stop()
            elif not self.workers:
                self.failed = True
            return
        logger.error("worker %d (pid %d) %s: starting a new one", worker.index, worker.process.pid, how)
        self._start(worker.index)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.deadline is None:
            logger.warning("%s: stopping %d workers gracefully", signal.Signals(signum).name, len(self.workers))
            self.stop()
        else:
            logger.warning("%s again: stopping the workers now", signal.Signals(signum).name)
            for worker in self.workers.values():
                worker.process.kill()

    def stop(self) -> None:
        """Ask every worker to drain and stop; kill those still running after the shutdown timeout."""
        self.deadline = time.monotonic() + self.options.shutdown_timeout + STOP_GRACE
        for worker in self.workers.values():
            if worker.process.pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)


def supervise(options: Options) -> int:
    """Run `options.workers` worker processes on one port until stopped; return the exit status."""
    loop_factory(options.loop)  # fail here, once, if uvloop is asked for and missing
    return Supervisor(options).run()
