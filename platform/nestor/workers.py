"""A supervisor and N worker processes sharing one port (`nestor serve --workers N`).

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
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web

from .app import WORKER, as_config, create_app
from .config import ConfigError, add_command_line
from .hostmetrics import SIBLINGS
from .logs import configure_logging, say
from .serve import Options, loop_factory, server_options

logger = logging.getLogger("nestor.serve")

STOP_GRACE = 10.0  # seconds a worker may take past shutdown_timeout for its cleanup contexts
POLL = 0.5  # how often the supervisor checks its deadline while it waits


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
        app[SIBLINGS] = {"folder": options.siblings_folder, "token": options.siblings_token}
        app.cleanup_ctx.append(_orphan_guard(supervisor))
        private = os.path.join(options.siblings_folder, f"worker-{index}.sock")  # siblings ask it for metrics
        with suppress(FileNotFoundError):
            os.unlink(private)  # left by a worker of this index that died
        web.run_app(
            app, loop=loop, handle_signals=False, print=announce, path=private, **server_options(options)
        )
        logger.info("stopped: requests drained, every cleanup context has run")
    except ConfigError as e:
        say(f"nestor: error: {e}", level=logging.ERROR)
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
        say(
            f"======== Running on http://{host}:{self.options.port} with "
            f"{self.options.workers} workers (pids {pids}; loop {loops}) ========\n"
            "(Press CTRL+C to quit)"
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
    with tempfile.TemporaryDirectory(prefix="nestor-workers-") as folder:
        shared = replace(options, siblings_folder=folder, siblings_token=secrets.token_urlsafe(24))
        return Supervisor(shared).run()
