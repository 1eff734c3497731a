"""Where the time goes: `python -m bench.profile [--duration 5] [--path /a/b/c/hello]`.

Serves the depth-3 tree with `nestor serve` (core 0), loads it with wrk (core 1) and samples
it with py-spy. Each sample is charged to the innermost frame that belongs to Nestor
(platform/nestor) or to the bench handler: what Nestor's functions do (including what they
call in aiohttp or the standard library) is Nestor's own cost; the rest is aiohttp's (HTTP
parsing, routing, the response) and the handler's. Prints microseconds per request.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import load
from .run import GREETER, Server, bare_server, cpu_ns, nestor_server, product_server

PLUMBING = ("aiohttp/web_middlewares.py", "aiohttp/web_app.py")  # how aiohttp reaches the next middleware
FRAME = re.compile(r"^(?P<func>.*) \((?P<path>.*?):(?P<line>\d+)\)$")


def owner(path: str) -> str:
    """Return who a frame's file belongs to: nestor, handler, aiohttp, event loop or other."""
    path = "/" + path  # py-spy shows paths from the package folder: aiohttp/web_app.py
    if "/nestor/" in path:
        return "nestor"
    if "/bench/" in path:
        return "handler"
    if any(f"/{name}/" in path for name in ("aiohttp", "multidict", "yarl", "propcache", "aiosignal")):
        return "aiohttp"
    if "/asyncio/" in path or "uvloop" in path or "/selectors.py" in path:
        return "event loop"
    return "other"


Counts = collections.Counter


def analyse(raw: str) -> tuple[int, Counts[str], Counts[str], Counts[str], Counts[str]]:
    """Return (samples, by owner of the leaf frame, by leaf function, Nestor's cost by function,
    Nestor's cost by function and the frame it called)."""
    total = 0
    leaf: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    nestor: collections.Counter[str] = collections.Counter()
    callees: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [m.groupdict() for m in map(FRAME.match, stack.split(";")) if m]
        if not frames:
            continue
        total += count
        leaf[owner(frames[-1]["path"])] += count
        functions[f"{frames[-1]['func']} ({frames[-1]['path']})"] += count
        # The serving frames (cli, serve.run) sit under every sample: they are not per-request work.
        innermost = next((f for f in reversed(frames) if owner(f["path"]) in ("nestor", "handler")
                          and Path(f["path"]).stem not in ("cli", "serve", "__main__")), None)
        if innermost is None or owner(innermost["path"]) != "nestor":
            continue
        below = frames[frames.index(innermost) + 1:]
        if below and below[0]["path"].endswith(PLUMBING):
            continue  # aiohttp's middleware chain on its way to the handler: aiohttp's cost
        name = f"{Path(innermost['path']).stem}.{innermost['func']}"
        nestor[name] += count
        callees[f"{name} -> {below[0]['func'] if below else '(own code)'}"] += count
    return total, leaf, functions, nestor, callees


def profile(server: Server, folder: Path, path: str, duration: float, connections: int) -> tuple[float, float, str]:
    """Load `server` while py-spy samples it; return (requests per second, CPU microseconds per
    request, py-spy's raw output)."""
    out = folder / f"{server.name}.spy"
    spy = subprocess.Popen(
        [*load.pin(1), "py-spy", "record", "--pid", str(server.process.pid), "--duration", str(int(duration)),
         "--rate", "500", "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    result: list[load.Result] = []
    loader = threading.Thread(target=lambda: result.append(
        load.measure(server.url + path, duration=duration, connections=connections)))
    before = cpu_ns([server.process.pid])
    loader.start()
    loader.join()
    per_request = (cpu_ns([server.process.pid]) - before) / 1000 / max(1, result[0].requests)
    _, err = spy.communicate(timeout=duration + 60)
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
    return result[0].rps, per_request, out.read_text()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--path", help="the URL loaded (default /a/b/c/hello; the greeter for --kind product)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "default"], default="asyncio",
                        help="default: the server's own choice (for --kind product, `nestor serve`'s: uvloop)")
    parser.add_argument("--raw", help="also save py-spy's samples (collapsed stacks) to this file")
    parser.add_argument("--kind", default="nestor",
                        help="nestor (default: the depth-3 tree, no access log), product (`nestor serve` on the "
                        "default nestor.toml plus README's greeter, access log on, as `make run` starts it; "
                        "--path defaults to the greeter), product-quiet (the same, access log off), or a bare app of bench.servers: bare3, floor3, naive3")
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        print("py-spy is not installed: pip install py-spy (the bench extra)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="nestor-profile-") as tmp:
        folder = Path(tmp)
        if args.path is None:
            args.path = GREETER if args.kind.startswith("product") else "/a/b/c/hello"
        if args.kind in ("product", "product-quiet"):
            server = product_server(args.kind, folder, None if args.loop == "default" else args.loop,
                                    log=args.kind == "product")
        elif args.kind == "nestor":
            server = nestor_server("nestor", folder, ["bench.trees:depth3"],
                                   f"sqlite+aiosqlite:///{folder / 'p.sqlite3'}", args.loop, args.path)
        else:
            server = bare_server(args.kind, args.kind, args.loop, args.path)
        server.start(folder)
        try:
            server.wait_ready(folder)
            load.measure(server.url + args.path, duration=1, connections=args.connections)  # warm-up
            rps, per_request, raw = profile(server, folder, args.path, args.duration, args.connections)
        finally:
            server.stop()
    if args.raw:
        Path(args.raw).write_text(raw)
    total, leaf, functions, nestor, callees = analyse(raw)
    print(f"{args.kind} {args.path}: {rps:,.0f} rps, {per_request:.1f} us of CPU per request, {total} samples\n")
    print("| where the leaf frame is | share | us/request |\n|---|---|---|")
    for name, count in leaf.most_common():
        print(f"| {name} | {count / total:.1%} | {count / total * per_request:.1f} |")
    print("\n| function (self time) | share | us/request |\n|---|---|---|")
    for name, count in functions.most_common(20):
        print(f"| `{name}` | {count / total:.1%} | {count / total * per_request:.2f} |")
    if not nestor:
        return 0
    print("\n| Nestor function (with what it calls) | share | us/request |\n|---|---|---|")
    for name, count in nestor.most_common():
        print(f"| `{name}` | {count / total:.1%} | {count / total * per_request:.2f} |")
    print(f"| **all of Nestor** | {sum(nestor.values()) / total:.1%} | {sum(nestor.values()) / total * per_request:.2f} |")
    print("\n| Nestor function -> next frame | share |\n|---|---|")
    for name, count in callees.most_common(15):
        print(f"| `{name}` | {count / total:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
