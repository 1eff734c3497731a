"""One site on two hosts behind nginx, measured: `python -m bench.site [--seconds 6]` (about a minute).

The parts are tests/site's (tests/site/parts.py): `nestor serve` supervisors on 127.0.0.2 and
127.0.0.3 in production mode, nginx from tests/site/nginx.conf.template, one PostgreSQL (with
its durable defaults, from bench/postgres.py) and one Redis. It prints:

- monitor probes per target per interval for the whole site, with 1 process (one host,
  --workers 1), 2 processes (two hosts, --workers 1 each) and 4 (two hosts, --workers 2 each):
  one schedule for the site means 1.0 whatever the number of processes;
- failed requests while each host in turn is stopped with SIGTERM and started again, under 8
  client loops through nginx: idempotent requests only, and with votes (POST) among them;
- wrong tokens tolerated from one client address before 429, sent round-robin over both hosts.

Needs nginx, redis-server and the PostgreSQL binaries (apt-get install nginx redis-server postgresql).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.fixtures.redis import RedisServer
from tests.fixtures.tls import self_signed
from tests.site.parts import (
    ADMIN_TOKEN,
    API,
    INTERVAL,
    TARGETS,
    Site,
    find_nginx,
    restart_each,
    running_site,
    steady_load,
)

from . import postgres

LAYOUTS = {"1 process (one host, 1 worker)": (1, 0), "2 processes (2 hosts x 1)": (1, 1),
           "4 processes (2 hosts x 2)": (2, 2)}  # fmt: skip
LOOPS = 8


def probes_per_interval(site: Site, seconds: float) -> dict[str, float]:
    """Wait for a first probe of each target, then count the probes in `seconds`: per target, per interval."""
    deadline = time.monotonic() + 30
    while not all(site.targets.probes(name) for name in TARGETS):
        if time.monotonic() > deadline:
            raise RuntimeError("the monitor never probed its targets")
        time.sleep(0.1)
    start = time.monotonic()
    time.sleep(seconds)
    return {name: len(site.targets.probes(name, start, start + seconds)) / (seconds / INTERVAL) for name in TARGETS}


async def rolling_restart(site: Site, votes: bool) -> dict[str, Any]:
    """Restart each host under steady load; return what was answered and what failed."""
    async with site.session(headers=API) as client:
        base = site.nginx.https_url
        async with client.post(f"{base}/polls/api/questions", json={"text": "Bench?", "choices": ["a", "b"]}) as resp:
            question = await resp.json()
        votes_path = f"/polls/api/questions/{question['id']}/votes"
        requests: list[tuple[str, str, Any]] = [
            ("GET", "/polls/api/questions", None), ("GET", "/health/ready", None), ("GET", "/chat/api/rooms", None),
            ("GET", "/polls/", None), ("GET", "/monitor/api/targets", None),
        ]  # fmt: skip
        if votes:
            requests += [("POST", votes_path, {"choice": question["choices"][0]["id"]})] * 2
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(client, base, requests, stop, loops=LOOPS))
        await asyncio.sleep(1)
        codes = await restart_each(site)
        stop.set()
        answered, failures = await load
        async with client.get(f"{base}/polls/api/questions/{question['id']}/results") as resp:
            total = (await resp.json())["total"]
    failed = Counter(f.split(" ", 1)[0] for f in failures)
    return {"answered": answered, "failed": failed, "examples": failures[:3], "codes": codes, "votes": total}


async def tolerated_wrong_tokens(site: Site) -> int:
    """Send wrong admin tokens from one address through nginx until a 429; return how many were answered 403."""
    wrong = {"Authorization": "Bearer " + "w" * len(ADMIN_TOKEN), "Accept": "application/json"}
    async with site.session("127.0.0.5") as client:
        for tried in range(50):
            async with client.get(f"{site.nginx.https_url}/admin/config", headers=wrong) as resp:
                if resp.status == 429:
                    return tried
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="how long to count probes, per layout")
    args = parser.parse_args()
    nginx, redis_binary = find_nginx(), shutil.which("redis-server")
    if nginx is None or redis_binary is None:
        raise SystemExit("bench.site needs nginx and redis-server (apt-get install nginx redis-server)")
    databases = [f"site_{n}" for n in range(len(LAYOUTS) + 1)]
    with tempfile.TemporaryDirectory(prefix="nestor-bench-site-") as tmp, postgres.server(databases) as urls:
        if urls is None:
            raise SystemExit("bench.site needs the PostgreSQL binaries (apt-get install postgresql)")
        folder = Path(tmp)
        _, certificate = self_signed(folder)
        redis = RedisServer(redis_binary, folder)
        redis.start()
        try:
            print(f"monitor probes per target per interval ({INTERVAL} s) for the whole site, over {args.seconds:g} s:")
            for n, (name, layout) in enumerate(LAYOUTS.items()):
                with running_site(folder / f"layout-{n}", urls[databases[n]], redis.url(), certificate,
                                  folder / "key.pem", workers=layout, nginx_binary=nginx) as site:  # fmt: skip
                    per_target = probes_per_interval(site, args.seconds)
                print(f"  {name:34} " + ", ".join(f"{t} {v:.2f}" for t, v in per_target.items()))
            with running_site(folder / "restart", urls[databases[-1]], redis.url(), certificate,
                              folder / "key.pem", nginx_binary=nginx) as site:  # fmt: skip
                for votes in (False, True):
                    found = asyncio.run(rolling_restart(site, votes))
                    kind = "GETs and votes" if votes else "GETs only"
                    print(f"rolling restart of both hosts under {LOOPS} client loops ({kind}): "
                          f"{sum(found['answered'].values())} answered, failed: GET {found['failed']['GET']}, "
                          f"POST {found['failed']['POST']}; exit codes {found['codes']}"
                          + (f"; votes counted {found['votes']} of {found['answered']['POST']} answered"
                             if votes else ""))  # fmt: skip
                    for example in found["examples"]:
                        print(f"    {example}")
                print(f"wrong tokens tolerated from one address before 429, over both hosts: "
                      f"{asyncio.run(tolerated_wrong_tokens(site))}")  # fmt: skip
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
