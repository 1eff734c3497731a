"""Start-up time and memory: `python -m bench.startup nestor|bare N` prints one JSON line.

Each run is a fresh process: import, build the app with N sub-apps of 5 routes each, start
it (cleanup contexts, database connection, a listening socket), then read the resident
memory. `bare` mounts the same sub-apps by hand in plain aiohttp and imports nothing of Nestor.
"""

from __future__ import annotations

import time

began = time.perf_counter()  # before any import below

import asyncio  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def rss_mb() -> float:
    """Resident memory of this process in MiB (peak, where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(kind: str, count: int, folder: Path) -> tuple[Any, float]:
    """Import what `kind` needs, build its app; return (app, seconds spent importing)."""
    start = time.perf_counter()
    if kind == "bare":
        from aiohttp import web

        imported = time.perf_counter()

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        root = web.Application()
        for i in range(count):
            sub = web.Application()
            sub.add_routes([web.get(f"/r{r}", hello, name=f"r{r}") for r in range(5)])
            root.add_subapp(f"/s{i}", sub)
        return root, imported - start
    from nestor import create_app
    from nestor.config import from_mapping

    import bench.trees  # noqa: F401 (the sub-apps' module)

    imported = time.perf_counter()
    tables = {
        "nestor": {
            "subapps": [f"bench.trees:s{i}" for i in range(count)],
            "database_url": f"sqlite+aiosqlite:///{folder / 'startup.sqlite3'}",
        }
    }
    return create_app(from_mapping(tables, base_dir=folder)), imported - start


async def start(app: Any) -> Any:
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def main() -> None:
    kind, count = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        app, import_s = build(kind, count, Path(folder))
        t1 = time.perf_counter()
        loop = asyncio.new_event_loop()
        runner = loop.run_until_complete(start(app))
        t2 = time.perf_counter()
        memory = rss_mb()
        loop.run_until_complete(runner.cleanup())
        loop.close()
    print(json.dumps({
        "import_s": (t0 - began) + import_s,
        "build_s": t1 - t0 - import_s,
        "start_s": t2 - t1,
        "rss_mb": memory,
    }))


if __name__ == "__main__":
    main()
