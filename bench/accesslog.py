"""What the access log costs a request: `python -m bench.accesslog [--format text|json] [--rounds 5]`.

Serves the product (the default nestor.toml plus README's greeter, as `bench.run`'s `product`
section does) in this process with the access log `nestor serve` writes, set up by the same
`configure_logging`, its stream a file; loads `/greeter/api/hello` with wrk from another process
(core 1; run this one with `taskset -c 0`). Rounds of 2 s, log() swapped between them:
- as served, and returning at once: the difference of the process's CPU a request is the whole
  cost, what the log's work does to the rest too (caches), within a noise of a microsecond or two;
- timed, and timed returning at once: the time spent in log() in the event loop (the entry
  copied and queued) less what timing it costs; with the writer thread's CPU clock (the lines
  built and written) over the same rounds, the log's own work a request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from . import load
from .run import GREETER, product_project


async def serve_and_load(
    config: Path, log_format: str, duration: float, connections: int, rounds: int
) -> dict[str, float]:
    from nestor import logs
    from nestor.accesslog import Serving
    from nestor.app import create_app

    access_class = logs.configure_logging("INFO", log_format)
    spent = [0, 0]  # nanoseconds in log(), calls
    floor = [0, 0]  # the same for a log() that does nothing: what timing it costs
    real_log = access_class.log

    def off(self: Any, request: web.BaseRequest, response: web.StreamResponse, time_: float, closed: bool = False) -> None:
        pass

    def timed(self: Any, request: web.BaseRequest, response: web.StreamResponse, time_: float, closed: bool = False) -> None:
        start = time.perf_counter_ns()
        real_log(self, request, response, time_, closed)
        spent[0] += time.perf_counter_ns() - start
        spent[1] += 1

    def timed_nothing(self: Any, request: web.BaseRequest, response: web.StreamResponse, time_: float,
                      closed: bool = False) -> None:
        start = time.perf_counter_ns()
        off(self, request, response, time_, closed)
        floor[0] += time.perf_counter_ns() - start
        floor[1] += 1

    class Switched(access_class):  # type: ignore[valid-type, misc]
        """The access log, its log() swapped between rounds: as served, timed, or returning at once."""

    app = create_app(str(config))
    runner = web.AppRunner(app, access_log_class=Switched, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}{GREETER}"
    writer = Serving.writer
    assert writer is not None and writer.thread.ident is not None
    thread_clock = time.pthread_getcpuclockid(writer.thread.ident)
    loop = asyncio.get_running_loop()
    process: dict[str, list[float]] = {"on": [], "off": [], "timed": [], "floor": []}
    writer_ns = requests = 0
    try:
        await loop.run_in_executor(None, lambda: load.measure(url, duration=1, connections=connections))
        for _ in range(rounds):
            # As served, then returning at once (paired rounds: their difference is the log's whole
            # cost), then timed (how much of it is spent in log() and how much in the writer thread).
            for state, method in (("on", real_log), ("off", off), ("timed", timed), ("floor", timed_nothing)):
                Switched.log = method  # type: ignore[method-assign]
                writer_before = time.clock_gettime_ns(thread_clock)
                process_before = time.process_time_ns()
                result = await loop.run_in_executor(
                    None, lambda: load.measure(url, duration=duration, connections=connections))
                await asyncio.sleep(writer.FLUSH_EVERY * 3)  # the writer's last lines of the round
                process[state].append((time.process_time_ns() - process_before) / max(1, result.requests) / 1000)
                if state == "timed":
                    writer_ns += time.clock_gettime_ns(thread_clock) - writer_before
                    requests += result.requests
    finally:
        await runner.cleanup()
    return {
        "logged": spent[1],
        "log_us": spent[0] / max(1, spent[1]) / 1000 - floor[0] / max(1, floor[1]) / 1000,
        "floor_us": floor[0] / max(1, floor[1]) / 1000,
        "writer_us": writer_ns / max(1, requests) / 1000,
        "on_us": statistics.median(process["on"]),
        "off_us": statistics.median(process["off"]),
        "difference_us": statistics.median(a - b for a, b in zip(process["on"], process["off"])),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accesslog", description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nestor-accesslog-") as tmp:
        config = product_project(Path(tmp), "product")
        os.chdir(config.parent)
        sys.path.insert(0, str(config.parent))
        log_file = open(Path(tmp) / "access.log", "w")  # noqa: SIM115 (the log's stream until exit)
        sys.stderr = log_file
        if args.loop == "uvloop":
            import uvloop

            runner: Any = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        else:
            runner = asyncio.Runner()
        with runner:
            figures = runner.run(serve_and_load(config, args.format, args.duration, args.connections, args.rounds))
        sys.stderr = sys.__stderr__
        with open(Path(tmp) / "access.log") as written:
            lines = sum(1 for line in written if "aiohttp.access" in line)
    print(
        f"access log ({args.format}, {args.loop}): {figures['log_us'] + figures['writer_us']:.2f} us a request: "
        f"in log(), the event loop, {figures['log_us']:.2f} us (timing it costs {figures['floor_us']:.2f} us more, "
        f"taken off), in the writer thread {figures['writer_us']:.2f} us; the process's CPU a request with the log on "
        f"{figures['on_us']:.1f} us, off {figures['off_us']:.1f} us, difference {figures['difference_us']:.1f} us "
        f"(median of {args.rounds} paired rounds); {figures['logged']:,} logged, {lines:,} lines written"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
