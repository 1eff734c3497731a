"""One worker process of `nestor serve --workers N`, and how its supervisor (`nestor.workers`)
binds its sockets, sees it and asks whether it serves.

A worker builds its own app, serves on the sockets its supervisor bound for its slot and on a
private unix socket, and on SIGTERM stops accepting, answers its open connections for
LAME_DUCK seconds (each response saying `Connection: close`), then drains as a single
process does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import hdrs, web

from .app import HOST, KEEPALIVE_TIMEOUT, PORT, SHUTDOWN_TIMEOUT, WORKER, as_config, create_app
from .config import ConfigError, add_command_line
from .hostmetrics import SIBLINGS
from .logs import configure_logging, say
from .serve import Options, limit_malloc_arenas, loop_factory, server_options

logger = logging.getLogger("nestor.serve")

LAME_DUCK = 1.0  # seconds a stopping worker keeps answering on its open connections
PROBE_TIMEOUT = 2.0  # seconds a new worker may take to answer /health/live


@dataclass(frozen=True)
class Assignment:
    """What the supervisor gives one worker process (picklable: the sockets travel as descriptors)."""

    index: int  # its slot: the metrics' `worker` label and the name of its private socket
    listeners: tuple[socket.socket, ...]  # the slot's sockets, bound to the shared address
    private: str  # the unix socket it listens on; the supervisor renames it once it serves
    supervisor: int
    quiet: bool  # the tree's warnings were logged already (by `nestor serve`, or a sibling)


def run_worker(options: Options, job: Assignment, ready: Connection) -> None:
    """Entry point of a worker process: build the app and serve on its slot's sockets."""
    limit_malloc_arenas()
    configure_logging(
        options.log_level,
        options.log_format,
        f"%(asctime)s %(levelname)s [worker {job.index} %(process)d] %(name)s: %(message)s",
    )
    # A reload is the supervisor's: a SIGHUP sent to the whole process group (a closed terminal)
    # must not end a worker without its drain.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stopping = asyncio.Event()
    with asyncio.Runner(loop_factory=loop_factory(options.loop)) as runner:
        loop = runner.get_loop()
        # The terminal's Ctrl-C reaches the workers and the supervisor forwards it too: the
        # event is set once, so a second signal does not cut the graceful drain short.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)

        def tell(*message: Any) -> None:
            with suppress(OSError):  # the supervisor may be gone: the orphan guard handles that
                ready.send(message)

        def announce(served: Options) -> None:
            tell("ready", type(loop).__module__.partition(".")[0], served.shutdown_timeout)

        try:
            app, served = _build(options, job)
            runner.run(_serve(app, served, job, stopping, announce))
        except ConfigError as e:
            tell("failed", str(e))  # the supervisor's line about this exit says why
            say(f"nestor: error: {e}", level=logging.ERROR)
            sys.exit(1)
        except Exception as e:
            tell("failed", f"{type(e).__name__}: {e}")
            raise
    # Closing the loop restored the default handlers: a late signal (a second Ctrl-C to the
    # process group) would now kill a worker that has finished its drain.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    logger.info("stopped: requests drained, every cleanup context has run")


def _build(options: Options, job: Assignment) -> tuple[web.Application, Options]:
    """Return this worker's app and the options it serves with (timeouts from its own config)."""
    nestor_logger = logging.getLogger("nestor")
    level = nestor_logger.level
    if job.quiet:
        nestor_logger.setLevel(logging.ERROR)
    try:
        config = as_config(options.config)
        add_command_line(config, dict(options.command_line))
        app = create_app(config)
    finally:
        nestor_logger.setLevel(level)
    app[WORKER] = job.index
    app[SIBLINGS] = {"folder": options.siblings_folder, "token": options.siblings_token}
    app.cleanup_ctx.append(_orphan_guard(job.supervisor))
    if (app[HOST], app[PORT]) != (options.host, options.port) and not job.quiet:
        logger.warning(
            "the configuration says %s:%d, but the workers keep serving on %s:%d: "
            "restart nestor serve to move", app[HOST], app[PORT], options.host, options.port,
        )
    return app, replace(options, shutdown_timeout=app[SHUTDOWN_TIMEOUT], keepalive_timeout=app[KEEPALIVE_TIMEOUT])


async def _serve(
    app: web.Application,
    options: Options,
    job: Assignment,
    stopping: asyncio.Event,
    announce: Callable[[Options], None],
) -> None:
    """Serve until `stopping` is set; then stop accepting, answer the open connections a last time, drain."""
    draining = False

    async def end_connections(request: web.Request, response: web.StreamResponse) -> None:
        # A keep-alive connection closed while idle races the client's next request on it;
        # a response that says `Connection: close` tells the client to open a new one instead.
        if draining and hdrs.CONNECTION not in response.headers:  # not a websocket's upgrade
            response.force_close()
            response.headers[hdrs.CONNECTION] = "close"

    app.on_response_prepare.append(end_connections)
    kwargs = {k: v for k, v in server_options(options).items() if k not in ("host", "port", "reuse_port")}
    runner = web.AppRunner(app, handle_signals=False, **kwargs)
    await runner.setup()
    try:
        if stopping.is_set():  # stopped during start-up: clean up without serving
            return
        sites: list[web.BaseSite] = [web.SockSite(runner, sock) for sock in job.listeners]
        sites.append(web.UnixSite(runner, job.private))
        for site in sites:
            await site.start()
        announce(options)
        await stopping.wait()
        for site in sites:  # the slot's sockets stay open in the supervisor, for a successor
            await site.stop()
        draining = True
        await _drain(runner)
    finally:
        await runner.cleanup()


async def _drain(runner: web.AppRunner) -> None:
    """Wait until the open connections have closed (each response now closes its own), at most LAME_DUCK seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LAME_DUCK
    while runner.server is not None and runner.server.connections and loop.time() < deadline:
        await asyncio.sleep(0.05)


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


# -- seen from the supervisor ---------------------------------------------------------------


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Return sockets bound to every address of host:port with SO_REUSEPORT, not listening yet.

    The kernel sends a socket connections only once it listens: its worker does, when it serves.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as asyncio's create_server: IPv4 has its own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def answers_live(path: str) -> bool:
    """True if the worker listening on the unix socket `path` answers `GET /health/live` with 200."""
    head = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(PROBE_TIMEOUT)
            sock.connect(path)
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
            while b"\r\n" not in head and len(head) < 4096:
                if not (chunk := sock.recv(4096)):
                    break
                head += chunk
    except OSError:
        return False
    return head.split(b" ", 2)[1:2] == [b"200"]


@dataclass(eq=False)
class Worker:
    """A worker process as the supervisor sees it."""

    index: int
    process: BaseProcess
    conn: Connection | None  # None once it said it is ready, or closed its end
    socket: str  # its private socket file; "" once the file is its successor's
    ready: bool = False  # it said it serves
    live: bool = False  # it answered /health/live (checked for a reload's new workers)
    loop: str = ""
    shutdown_timeout: float = 0.0
    stop_by: float | None = None  # killed if still running then (set when it is retired)
    reason: str = ""  # why it failed to start, in its own words

    def describe(self) -> str:
        return f"worker {self.index} (pid {self.process.pid})"

    def send_signal(self, sig: signal.Signals) -> None:
        if self.process.pid is not None:
            with suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    def because(self) -> str:
        """Why it failed to start, in its own words (`: <the ConfigError>`), or nothing."""
        return f": {self.reason}" if self.reason else ""


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
