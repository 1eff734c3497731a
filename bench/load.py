"""Load generation: wrk when installed (apt-get install wrk), else a Python aiohttp client.

`measure()` runs the load in a separate process on 127.0.0.1, bounded in time, pinned to a
core with taskset when there is one, and returns requests per second and p50/p99 latency.
The Python client (`python -m bench.load URL ...`) is the fallback: it saturates a core at a
few thousand requests per second, so with it the client, not the server, is often the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


CHOICES = 4  # `{choices}` in a body: a random choice of the first seeded question's 4


@dataclass(frozen=True)
class Result:
    """One timed run of load against one URL."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int  # non-2xx/3xx answers and socket errors


def tool() -> str:
    """Return the load generator in use: `wrk` or `python`."""
    return "wrk" if shutil.which("wrk") else "python"


def pin(core: int | None) -> list[str]:
    """Return the command prefix pinning a process to `core` (nothing without taskset)."""
    if core is None or shutil.which("taskset") is None or (os.cpu_count() or 1) <= core:
        return []
    return ["taskset", "-c", str(core)]


def measure(
    url: str,
    *,
    duration: float,
    connections: int,
    method: str = "GET",
    body: str | None = None,
    core: int | None = 1,
    use: str | None = None,
) -> Result:
    """Load `url` for `duration` seconds with `connections` connections; return what was measured."""
    if (use or tool()) == "wrk":
        return _wrk(url, duration, connections, method, body, core)
    command = [*pin(core), sys.executable, "-m", "bench.load", url, "--duration", str(duration),
               "--connections", str(connections), "--method", method]
    if body is not None:
        command += ["--body", body]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True)
    return Result(**json.loads(done.stdout))


_LUA = """wrk.method = "{method}"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""
# A body with `{choices}` in it gets a random number from 1 to `choices` in each request.
_LUA_RANDOM = """wrk.method = "{method}"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = string.gsub({body}, "{{choices}}", tostring(math.random(1, {choices})))
  return wrk.format(nil, nil, nil, body)
end
"""


def _wrk(url: str, duration: float, connections: int, method: str, body: str | None, core: int | None) -> Result:
    # --timeout 10s: a slow answer (SQLite writers queueing) is a latency, not an error.
    command = [*pin(core), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
               "--latency"]
    with tempfile.TemporaryDirectory() as folder:
        if method != "GET" or body is not None:
            script = Path(folder) / "request.lua"
            template = _LUA_RANDOM if body and "{choices}" in body else _LUA
            quoted = json.dumps(body) if body is not None else "nil"
            script.write_text(template.format(method=method, body=quoted, choices=CHOICES))
            command += ["-s", str(script)]
        out = subprocess.run([*command, url], capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> Result:
    """Return the figures of wrk's `--latency` report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    requests = int(re.search(r"(\d+) requests in", out)[1])
    latency = {p: _ms(v, unit) for p, v, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return Result(rps=rps, p50_ms=latency["50"], p99_ms=latency["99"], requests=requests, failed=failed)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# -- the Python client ------------------------------------------------------------------------


async def _load(url: str, duration: float, connections: int, method: str, body: str | None) -> Result:
    import aiohttp

    latencies: list[float] = []
    failed = 0
    body = body.replace("{choices}", "1") if body is not None else None
    data = body.encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    deadline = time.perf_counter() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        while (start := time.perf_counter()) < deadline:
            try:
                async with session.request(method, url, data=data, headers=headers) as resp:
                    await resp.read()
                    if resp.status >= 400:
                        failed += 1
            except aiohttp.ClientError:
                failed += 1
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0  # noqa: E731
    return Result(rps=len(latencies) / elapsed, p50_ms=pick(0.5), p99_ms=pick(0.99), requests=len(latencies), failed=failed)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description="A bounded HTTP load client.")
    parser.add_argument("url")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit("bench.load only loads servers on this machine (127.0.0.1)")
    result = asyncio.run(_load(args.url, args.duration, args.connections, args.method, args.body))
    print(json.dumps(result.__dict__))


if __name__ == "__main__":
    main()
