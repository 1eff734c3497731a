"""A supervisor and N worker processes sharing one port (`nestor serve --workers N`).

Several workers listen on the same port with SO_REUSEPORT and the operating system spreads new
connections across them. We chose this over gunicorn's aiohttp worker because that worker
builds its own `AppRunner` without `handler_cancellation` and with gunicorn's access log
format, so the kernel's cancellation policy and `AccessLogger` would be lost; here every
worker runs an `AppRunner` with the same arguments as `web.run_app` in a single process
(`serve.server_options`), and no dependency is added. Each worker builds its own app,
database pool, bus connection and event loop.

The first worker starts alone and the others once it serves. The supervisor reports a worker
that dies (with its exit code or signal) and starts a new one; a worker that fails during
start-up stops the whole server. SIGTERM or SIGINT is forwarded to every worker, which drains
its requests gracefully; a second one stops them at once.

SIGHUP reloads without dropping a request, as gunicorn and nginx do on HUP: the supervisor
starts a new generation of N workers, each reading the config file and importing the code
afresh; once every one of them answers `GET /health/live` on its private socket, the old
workers get SIGTERM and drain. A new worker that exits before then (a config that does not
load, a sub-app that does not import, a tree that does not build) abandons the reload: one
ERROR line names it and its exit, the new workers are stopped, the old ones keep serving, and
a later SIGHUP tries again. A SIGHUP during a reload (or during start-up) is queued: one
reload follows the other, never two generations at once. SIGTERM during a reload stops both.
The address, the number of workers and the command-line options stay those `nestor serve`
started with; a changed `host` or `port` is reported and needs a restart.

Worker i of every generation is in slot i: the slot's listening sockets are bound by the
supervisor and handed to each of its workers, so the queue of connections the kernel has
accepted for an old worker stays open for its successor instead of being reset when the old
worker stops listening. The slot is also the `worker` label of the metrics and the name of
the private socket, `worker-<i>.sock`, that siblings ask for metrics (nestor.hostmetrics): a
worker listens on a socket of its own name and the supervisor renames it to `worker-<i>.sock`
once it serves, replacing its predecessor's. A stopping worker first stops accepting, then
answers its open connections for up to LAME_DUCK seconds, each response saying
`Connection: close` (clients reconnect, to a successor), then drains as a single process does:
in-flight requests finish, websockets are closed with 1001, cleanup contexts run. Only a client
idle on a keep-alive connection for longer than that can still see it closed as it sends, the
race every HTTP server has with idle connections (clients resend an idempotent request then).
This module is the supervisor; a worker process is `nestor.worker`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import secrets
import signal
import socket
import tempfile
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import replace
from multiprocessing.connection import wait
from typing import Any

from .config import ConfigError
from .logs import say
from .serve import Options, loop_factory
from .worker import LAME_DUCK, Assignment, Worker, answers_live, bind_listeners, describe_exit, run_worker

logger = logging.getLogger("nestor.serve")

STOP_GRACE = 10.0  # seconds a worker may take past shutdown_timeout for its cleanup contexts
POLL = 0.5  # how often the supervisor checks its deadlines while it waits
RELOAD_TIMEOUT = 120.0  # seconds a new generation may take to serve (migrations run at start-up)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _pids(workers: Iterable[Worker]) -> str:
    return ", ".join(str(w.process.pid) for w in workers)


class Supervisor:
    """Start N workers on one port, replace those that die, reload on SIGHUP, forward stop signals."""

    def __init__(self, options: Options) -> None:
        self.options = options
        # spawn, not fork: each worker starts clean (no inherited loop or pool; of the
        # supervisor's sockets only its slot's, passed on purpose).
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, Worker] = {}  # the generation that serves, by slot
        self.incoming: dict[int, Worker] = {}  # a reload's new generation, until it serves
        self.retiring: list[Worker] = []  # old workers draining after a reload
        self.listeners: dict[int, list[socket.socket]] = {}  # each slot's sockets
        self.started = False
        self.failed = False
        self.deadline: float | None = None  # set once stopping
        self.spawned = 0
        self.hangups = 0  # SIGHUPs not yet looked at
        self.reload_asked = False
        self.reload_deadline = 0.0
        self.abandoned = False  # the reload under way failed; its workers are stopping

    def run(self) -> int:
        """Serve until stopped; return 0 after a clean shutdown, 1 if start-up or shutdown failed."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            # The first worker starts alone, so one-time start-up work (creating tables,
            # seeding) runs before the others start: concurrent CREATE TABLEs would collide.
            self._start(0, self.workers)
            while self._processes():
                self._wait()
                self._reload_step()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for index in list(self.listeners):
                self._release(index)
        return 1 if self.failed else 0

    def _processes(self) -> list[Worker]:
        return [*self.workers.values(), *self.incoming.values(), *self.retiring]

    def _start(self, index: int, into: dict[int, Worker], *, quiet: bool = True) -> None:
        if index not in self.listeners:
            try:
                self.listeners[index] = bind_listeners(self.options.host, self.options.port)
            except OSError as e:
                if not self.started:
                    raise ConfigError(f"cannot listen on {self.options.host}:{self.options.port}: {e}") from None
                logger.error("worker %d cannot start: %s:%d: %s", index, self.options.host, self.options.port, e)
                return
        private = os.path.join(self.options.siblings_folder, f"new-{self.spawned}.sock")
        self.spawned += 1
        job = Assignment(index, tuple(self.listeners[index]), private, os.getpid(), quiet)
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(target=run_worker, args=(self.options, job, sender), name=f"nestor-worker-{index}")
        process.start()
        sender.close()  # the worker holds the other end: its exit shows as end-of-file here
        into[index] = Worker(index, process, receiver, private, shutdown_timeout=self.options.shutdown_timeout)

    def _release(self, index: int) -> None:
        """Close the supervisor's copies of a slot's sockets: none of its workers will accept on them again."""
        for sock in self.listeners.pop(index, []):
            sock.close()

    def _published(self, index: int) -> str:
        return os.path.join(self.options.siblings_folder, f"worker-{index}.sock")

    def _publish(self, worker: Worker) -> None:
        """Give a serving worker the slot's socket name, where its siblings look (atomically)."""
        published = self._published(worker.index)
        with suppress(FileNotFoundError):
            os.replace(worker.socket, published)
            worker.socket = published

    def _wait(self) -> None:
        waiting: dict[Any, Worker] = {}
        for worker in self._processes():
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
        if self.deadline is not None:  # stopping: nothing will accept on the slots' sockets again
            for index in list(self.listeners):
                self._release(index)
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            for worker in self._processes():
                logger.error("%s did not stop in time: killing it", worker.describe())
                worker.process.kill()
            self.failed = True
            self.deadline = math.inf  # still stopping (their exits are no reason to start others), killed once
        for worker in self._processes():
            if worker.stop_by is not None and now > worker.stop_by:
                logger.error("%s did not stop in time: killing it", worker.describe())
                worker.process.kill()
                worker.stop_by = None

    def _heard(self, worker: Worker) -> None:
        if worker.conn is None:
            return
        try:
            message = worker.conn.recv()
        except EOFError:  # it died before it was ready: its exit is handled by _ended
            message = ("failed", "")
        worker.conn.close()
        worker.conn = None
        if message[0] == "failed":  # its exit follows
            worker.reason = message[1]
            return
        _, worker.loop, worker.shutdown_timeout = message
        worker.ready = True
        if self.deadline is not None or worker.stop_by is not None:  # it started while being stopped
            worker.send_signal(signal.SIGTERM)
            return
        if self.incoming.get(worker.index) is worker:
            return  # _reload_step checks it answers; the whole generation is published at once
        self._publish(worker)
        if self.started:
            logger.warning("%s is serving", worker.describe())
        elif len(self.workers) == 1:
            for index in range(1, self.options.workers):
                self._start(index, self.workers)
        if not self.started and len(self.workers) == self.options.workers and all(
            w.ready for w in self.workers.values()
        ):
            self.started = True
            self._announce()

    def _announce(self) -> None:
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        loops = ", ".join(sorted({w.loop for w in self.workers.values()}))
        say(
            f"======== Running on http://{host}:{self.options.port} with "
            f"{_count(self.options.workers, 'worker')} (pids {_pids(self.workers.values())}; loop {loops}) ========\n"
            "(Press CTRL+C to quit)"
        )

    def _forget(self, worker: Worker) -> str:
        """Remove an ended worker (and its socket file); return what it was: current, incoming or retiring."""
        if worker.socket:
            with suppress(FileNotFoundError):
                os.unlink(worker.socket)
        if worker in self.retiring:
            self.retiring.remove(worker)
            return "retiring"
        role = "incoming" if self.incoming.get(worker.index) is worker else "current"
        del (self.incoming if role == "incoming" else self.workers)[worker.index]
        if worker.index not in self.workers and worker.index not in self.incoming:
            self._release(worker.index)
        return role

    def _ended(self, worker: Worker) -> None:
        role = self._forget(worker)
        how = describe_exit(worker.process.exitcode)
        if self.deadline is not None:  # stopping: exits are expected, failures are not
            # A worker still starting has no signal handler yet: SIGTERM simply ends it.
            unready = not worker.ready and worker.process.exitcode == -signal.SIGTERM
            if worker.process.exitcode != 0 and not unready:
                logger.error("%s %s while stopping%s", worker.describe(), how, worker.because())
                self.failed = True
            return
        if role == "retiring":
            # One still starting when its generation was replaced has no handler yet: SIGTERM ends it.
            if worker.process.exitcode == 0 or (not worker.ready and worker.process.exitcode == -signal.SIGTERM):
                logger.info("old %s has stopped", worker.describe())
            else:
                logger.error("old %s %s while stopping", worker.describe(), how)
            return
        if role == "incoming":
            if self.abandoned:  # the reload failed already and said why, once
                logger.info("new %s %s%s", worker.describe(), how, worker.because())
                return
            stage = "before the others served" if worker.ready else "during start-up"
            logger.error(
                "reload failed, the old workers (pids %s) keep serving: new %s %s %s%s",
                _pids(self.workers.values()), worker.describe(), how, stage, worker.because(),
            )
            self._abandon()
            return
        if not worker.ready:
            logger.error("%s %s during start-up%s", worker.describe(), how, worker.because())
            if not self.started:
                self.failed = True
                self.stop()
            elif not self._processes():
                self.failed = True
            return
        logger.error("%s %s: starting a new one", worker.describe(), how)
        self._start(worker.index, self.workers)

    # -- reloading -----------------------------------------------------------------------

    def _reload_step(self) -> None:
        """Start a reload that was asked for; swap generations once the new one serves; give up at the deadline."""
        if self.hangups:
            self.hangups = 0
            self._hangup_noticed()
        if self.incoming:
            if not self.abandoned and self.deadline is None:
                self._check_incoming()
        elif self.reload_asked and self.started and self.deadline is None:
            self.reload_asked, self.abandoned = False, False
            self._reload()

    def _hangup_noticed(self) -> None:
        if self.deadline is not None:
            logger.warning("SIGHUP while stopping: ignored")
            return
        self.reload_asked = True  # several SIGHUPs before it starts make one reload
        if self.incoming:
            logger.warning("SIGHUP during a reload: another reload follows once this one is done")
        elif not self.started:
            logger.warning("SIGHUP during start-up: the reload follows once every worker serves")

    def _reload(self) -> None:
        where = self.options.config or "the configuration"
        logger.warning(
            "SIGHUP: reloading: starting %s from %s beside the old ones (pids %s)",
            _count(self.options.workers, "new worker"), where, _pids(self.workers.values()),
        )
        self.reload_deadline = time.monotonic() + RELOAD_TIMEOUT
        for index in range(self.options.workers):  # together: migrations run under a lock
            self._start(index, self.incoming, quiet=index != 0)

    def _check_incoming(self) -> None:
        for worker in self.incoming.values():
            if worker.ready and not worker.live:
                worker.live = answers_live(worker.socket)
        if len(self.incoming) == self.options.workers and all(w.live for w in self.incoming.values()):
            self._swap()
        elif time.monotonic() > self.reload_deadline:
            waiting = [w.describe() for w in self.incoming.values() if not w.live]
            logger.error(
                "reload failed, the old workers (pids %s) keep serving: %s did not answer /health/live in %d s",
                _pids(self.workers.values()), ", ".join(waiting), RELOAD_TIMEOUT,
            )
            self._abandon()

    def _swap(self) -> None:
        """Publish the new generation's sockets, then retire the old workers (SIGTERM: they drain)."""
        old = list(self.workers.values())
        for worker in old:
            if worker.socket == self._published(worker.index):
                worker.socket = ""  # the file becomes its successor's
        for worker in self.incoming.values():
            self._publish(worker)
        self.workers, self.incoming = self.incoming, {}
        logger.warning(
            "reloaded: the new workers (pids %s) serve; the old ones (pids %s) drain and stop",
            _pids(self.workers.values()), _pids(old),
        )
        for worker in old:
            self._retire(worker)
            self.retiring.append(worker)

    def _abandon(self) -> None:
        """Stop the new generation; the old one keeps serving."""
        self.abandoned = True
        for worker in self.incoming.values():
            self._retire(worker)

    def _retire(self, worker: Worker) -> None:
        worker.stop_by = time.monotonic() + worker.shutdown_timeout + LAME_DUCK + STOP_GRACE
        worker.send_signal(signal.SIGTERM)

    # -- signals -------------------------------------------------------------------------

    def _on_hangup(self, _signum: int, _frame: object) -> None:
        self.hangups += 1  # the main loop acts on it: starting processes here could race it

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.deadline is None:
            logger.warning("%s: stopping %s gracefully", signal.Signals(signum).name, _count(len(self._processes()), "worker"))
            self.stop()
        else:
            logger.warning("%s again: stopping the workers now", signal.Signals(signum).name)
            for worker in self._processes():
                worker.process.kill()

    def stop(self) -> None:
        """Ask every worker (old, new) to drain and stop; kill those still running after the shutdown timeout."""
        longest = max([self.options.shutdown_timeout, *(w.shutdown_timeout for w in self._processes())])
        self.deadline = time.monotonic() + longest + LAME_DUCK + STOP_GRACE
        self.reload_asked = False
        # Close our copies of the listening sockets first: each then stops listening the moment
        # its worker stops accepting, so a new connection is refused (a proxy retries it on
        # another host, whatever its method) instead of queued where nobody accepts it and reset.
        for index in list(self.listeners):
            self._release(index)
        for worker in self._processes():
            if worker.stop_by is None:  # a retired worker has its SIGTERM and is draining already
                worker.send_signal(signal.SIGTERM)


def supervise(options: Options) -> int:
    """Run `options.workers` worker processes on one port until stopped; return the exit status."""
    loop_factory(options.loop)  # fail here, once, if uvloop is asked for and missing
    with tempfile.TemporaryDirectory(prefix="nestor-workers-") as folder:
        shared = replace(options, siblings_folder=folder, siblings_token=secrets.token_urlsafe(24))
        return Supervisor(shared).run()
