"""Run the benchmark set and print markdown tables: `python -m bench.run [--rounds 3 --duration 5]`.

Every server runs in its own process pinned to core 0 (taskset), the load generator on core 1,
all on 127.0.0.1. Cases are interleaved over rounds and the median of the rounds is shown,
each figure also as a ratio to bare aiohttp measured in the same run. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform as stdlib_platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import load, postgres

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("overhead", "json", "routing", "peers", "polls", "schemas", "product", "startup", "rows")
ROWS = 1_000_000  # polls questions in the `rows` section
ROUTING_SIZES = (1, 10, 100, 1000)
STARTUP_SIZES = (1, 100, 1000)
VOTE = '{"choice": {choices}}'  # a random one of the first seeded question's choices (bench.load)
QUESTION = '{"text": "Which one?", "choices": ["this", "that", "the other"]}'  # create-question


@dataclass
class Server:
    """A server process: how to start it and where it listens."""

    name: str
    command: list[str]
    ready_path: str
    port: int = field(default_factory=postgres.free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, folder: Path) -> None:
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO)])}
        env = {k: v for k, v in env.items() if not k.startswith("NESTOR_")}
        log = open(folder / f"{self.name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen([*load.pin(0), *command], cwd=folder, env=env, stdout=log, stderr=log)

    def wait_ready(self, folder: Path, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.1)
        log = (folder / f"{self.name}.log").read_text(errors="replace")
        raise RuntimeError(f"server {self.name} did not start:\n{log[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Case:
    """One URL under load; `same_work` names the bare case doing the same work, if any."""

    section: str
    label: str
    server: str
    path: str
    method: str = "GET"
    body: str | None = None
    connections: int = 64
    same_work: str | None = None
    same_body: bool = False  # checked before loading: the same status and body as `same_work`'s
    cpu_bound: bool = True  # the server's CPU is the limit (not a database)
    refused: bool = False  # every answer is meant to be a 4xx: those are not failures
    results: list[load.Result] = field(default_factory=list)
    disturbance: list[float] = field(default_factory=list)  # share of the CPU others used, per result
    cpu_us: list[float] = field(default_factory=list)  # the server's CPU time per request, per result

    def kept(self) -> list[int]:
        """Indexes of the rounds to report: the undisturbed ones, else the least disturbed one."""
        quiet = [i for i, d in enumerate(self.disturbance) if d <= DISTURBED]
        if quiet or not self.disturbance:
            return quiet or list(range(len(self.results)))
        return [min(range(len(self.disturbance)), key=self.disturbance.__getitem__)]

    @property
    def disturbed(self) -> bool:
        return bool(self.disturbance) and min(self.disturbance) > DISTURBED

    def median(self, attr: str) -> float:
        """The figure shown for a Result field, or `cpu_us`: the median over the kept rounds, or
        with `--stat best` the best of them (noise only slows a server down)."""
        values = self.cpu_us if attr == "cpu_us" else [getattr(r, attr) for r in self.results]
        kept = [values[i] for i in self.kept()]
        if STAT == "best":
            return max(kept) if attr == "rps" else min(kept)
        return statistics.median(kept)


def nestor_server(name: str, folder: Path, subapps: list[str], database_url: str, loop: str, ready: str) -> Server:
    config = folder / f"{name}.toml"
    config.write_text(
        "[nestor]\n"
        f"subapps = {json.dumps(subapps)}\n"
        f'database_url = "{database_url}"\n'
    )
    command = [sys.executable, "-m", "nestor.cli", "serve", "--config", str(config), "--port", "{port}",
               "--log-level", "WARNING", "--loop", loop]
    return Server(name, command, ready)


def bare_server(name: str, kind: str, loop: str, ready: str, database_url: str | None = None,
                access_log: bool = False) -> Server:
    command = [sys.executable, "-m", "bench.servers", kind, "--port", "{port}", "--loop", loop]
    if database_url:
        command += ["--database-url", database_url]
    if access_log:
        command.append("--access-log")
    return Server(name, command, ready)


def uvicorn_server(name: str, app: str, loop: str) -> Server:
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "{port}", "--loop", loop,
               "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    return Server(name, command, "/a/b/c/hello")


def product_project(folder: Path, name: str) -> Path:
    """Write a project as README's "Writing a sub-app" starts one: the repository's nestor.toml
    (every first-party sub-app, SQLite under the project's var/) plus the greeter package next to
    it (the config file's folder is importable); return the config file."""
    project = folder / name
    (project / "greeter").mkdir(parents=True)
    block = re.search(r"```python\n(# greeter/__init__\.py\n.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    if block is None:
        raise RuntimeError("README.md has no `# greeter/__init__.py` block: update bench.run.product_project")
    (project / "greeter" / "__init__.py").write_text(block[1])
    text = (REPO / "nestor.toml").read_text()
    root = tomllib.loads(text)["nestor"]
    if not re.fullmatch(r"sqlite\+aiosqlite:///[^/].*", root.get("database_url", "")):
        raise RuntimeError("nestor.toml's database_url is not a relative SQLite file: the bench would share it")
    text, found = re.subn(r"^subapps = .*$", f"subapps = {json.dumps([*root['subapps'], 'greeter'])}", text,
                          flags=re.MULTILINE)
    if found != 1:
        raise RuntimeError("nestor.toml has no one-line `subapps = [...]`: update bench.run.product_project")
    (project / "nestor.toml").write_text(text)
    return project / "nestor.toml"


def product_server(name: str, folder: Path, loop: str | None, log: bool) -> Server:
    """`nestor serve` on a product project, as `make run` starts it (INFO: access log on, text),
    or with `--log-level WARNING` (no access log); `--loop` only when given."""
    command = [sys.executable, "-m", "nestor.cli", "serve", "--config", str(product_project(folder, name)),
               "--port", "{port}"]
    command += ["--loop", loop] if loop else []
    command += [] if log else ["--log-level", "WARNING"]
    return Server(name, command, GREETER)


def uvicorn_defaults(name: str, app: str, log: bool) -> Server:
    """`uvicorn app` as its README starts it (uvloop and httptools when installed, access log on)."""
    command = [sys.executable, "-m", "uvicorn", app, "--port", "{port}"] + ([] if log else ["--no-access-log"])
    return Server(name, command, GREETER)


GREETER = "/greeter/api/hello"
# The first-party reads measured against bare aiohttp doing the same work: (what, path, connections).
PRODUCT_READS = (("polls API list", "/polls/api/questions", 8), ("polls page", "/polls/", 8), ("home page", "/", 64))
# Per section: (what, the case, the case it is compared with, the least ratio of requests per
# second, or None for a ratio shown for information).
TARGETS: dict[str, list[tuple[str, str, str, float | None]]] = {
    "product": [
        ("greeter, both access logs on: Nestor / bare aiohttp", "**Nestor**, log on: greeter",
         "bare aiohttp, log on: greeter", 0.75),
        ("greeter: Nestor with its log on / bare aiohttp with its log off", "**Nestor**, log on: greeter",
         "bare aiohttp, log off: greeter", 0.65),
        *[(f"{what}: Nestor / bare aiohttp, both logs on", f"**Nestor**, log on: {what}",
           f"bare aiohttp, log on: {what}", 0.85) for what, _, _ in PRODUCT_READS],
        ("greeter, each on its defaults: `nestor serve` / uvicorn + Starlette",
         "**`nestor serve`**, its defaults: greeter", "uvicorn + Starlette, their defaults: greeter", 1.5),
        ("what Nestor's access log costs: log on / log off (asyncio)", "**Nestor**, log on: greeter",
         "Nestor, log off: greeter", None),
        ("what Nestor's access log costs: log on / log off (`nestor serve`'s defaults, uvloop)",
         "**`nestor serve`**, its defaults: greeter", "`nestor serve`, access log off: greeter", None),
        ("what aiohttp's access log costs: log on / log off", "bare aiohttp, log on: greeter",
         "bare aiohttp, log off: greeter", None),
        ("what uvicorn's access log costs: log on / log off", "uvicorn + Starlette, their defaults: greeter",
         "uvicorn + Starlette, access logs off: greeter", None),
    ],
}


def product_plan(folder: Path, loop: str, sqlite: Callable[[str], str]) -> tuple[list[Server], list[Case]]:
    """The `product` section: `nestor serve` on the default nestor.toml plus README's greeter
    against bare aiohttp doing the same work (on `loop`, access logs on and off), and each server
    as its README starts it (`nestor serve`, `uvicorn app`: their defaults)."""
    servers = [product_server("product-nestor", folder, loop, log=True),
               product_server("product-nestor-quiet", folder, loop, log=False),
               bare_server("product-bare", "product", loop, GREETER, sqlite("product-bare"), access_log=True),
               bare_server("product-bare-quiet", "product", loop, GREETER, sqlite("product-bare-quiet")),
               product_server("product-defaults", folder, None, log=True),
               product_server("product-defaults-quiet", folder, None, log=False),
               uvicorn_defaults("product-starlette", "bench.peers:greeter_app", log=True),
               uvicorn_defaults("product-starlette-quiet", "bench.peers:greeter_app", log=False)]
    cases = []
    for log, quiet in (("log on", ""), ("log off", "-quiet")):
        bare = f"bare aiohttp, {log}: greeter"
        cases += [Case("product", bare, f"product-bare{quiet}", GREETER),
                  Case("product", f"{'**Nestor**' if not quiet else 'Nestor'}, {log}: greeter", f"product-nestor{quiet}",
                       GREETER, same_work=bare, same_body=True)]
    for what, path, connections in PRODUCT_READS:
        database = path != "/"  # SQLite reads: the database thread, not the event loop, sets the pace
        bare = f"bare aiohttp, log on: {what}"
        cases += [Case("product", bare, "product-bare", path, connections=connections, cpu_bound=not database),
                  Case("product", f"**Nestor**, log on: {what}", "product-nestor", path, connections=connections,
                       same_work=bare, same_body=True, cpu_bound=not database)]
    for log, quiet, ours in (("their defaults", "", "**`nestor serve`**, its defaults"),
                             ("access logs off", "-quiet", "`nestor serve`, access log off")):
        peer = f"uvicorn + Starlette, {log}: greeter"
        cases += [Case("product", peer, f"product-starlette{quiet}", GREETER),
                  Case("product", f"{ours}: greeter", f"product-defaults{quiet}", GREETER, same_work=peer,
                       same_body=True)]
    return servers, cases


def plan(sections: list[str], folder: Path, loop: str, pg: dict[str, str] | None) -> tuple[list[Server], list[Case]]:
    """Return the servers to start and the cases to load, for the chosen sections."""
    sqlite = lambda name: f"sqlite+aiosqlite:///{folder / name}.sqlite3"  # noqa: E731
    servers = [bare_server("bare", "bare", loop, "/hello")]
    cases = [Case("overhead", "bare aiohttp, flat: `/hello`", "bare", "/hello")]
    if "overhead" in sections or "json" in sections:
        servers.append(nestor_server("nestor", folder, ["bench.trees:depth3"], sqlite("nestor"), loop, "/a/b/c/hello"))
    if "overhead" in sections:
        servers += [bare_server(kind, kind, loop, "/a/b/c/hello") for kind in ("bare3", "floor3", "naive3")]
        cases += [
            Case("overhead", "bare aiohttp, 3 nested sub-apps", "bare3", "/a/b/c/hello"),
            Case("overhead", "the same + 1 pass-through middleware + 1 empty signal", "floor3", "/a/b/c/hello"),
            Case("overhead", "hand-built depth 3, naive behaviours", "naive3", "/a/b/c/hello"),
            Case("overhead", "**Nestor** depth 3, kernel on", "nestor", "/a/b/c/hello"),
        ]
    if "json" in sections:
        cases += [
            Case("json", "bare aiohttp: JSON (json.dumps)", "bare", "/json"),
            Case("json", "**Nestor**: JSON (json.dumps)", "nestor", "/a/b/c/json", same_work="bare aiohttp: JSON (json.dumps)"),
            Case("json", "bare aiohttp: JSON (nestor.jsonenc)", "bare", "/json-fast"),
            Case("json", "**Nestor**: JSON (nestor.jsonenc)", "nestor", "/a/b/c/json-fast",
                 same_work="bare aiohttp: JSON (nestor.jsonenc)"),
            Case("json", "bare aiohttp + aiohttp-jinja2: page", "bare", "/page"),
            Case("json", "**Nestor**: page", "nestor", "/a/b/c/page", same_work="bare aiohttp + aiohttp-jinja2: page"),
        ]
    if "routing" in sections:
        for n in ROUTING_SIZES:
            subapps = [f"bench.trees:s{i}" for i in range(n)]
            servers.append(nestor_server(f"routing{n}", folder, subapps, sqlite(f"routing{n}"), loop, f"/s{n - 1}/r4"))
            cases.append(Case("routing", f"Nestor, {n} sub-apps: `/s{n - 1}/r4`", f"routing{n}", f"/s{n - 1}/r4",
                              same_work=f"Nestor, 1 sub-apps: `/s0/r4`"))
    if "peers" in sections:
        servers += [uvicorn_server("starlette", "bench.peers:starlette_app", loop),
                    uvicorn_server("fastapi", "bench.peers:fastapi_app", loop)]
        cases += [
            Case("peers", "Starlette: Mount x3 + 3 pure-ASGI middlewares (uvicorn)", "starlette", "/a/b/c/hello"),
            Case("peers", "FastAPI: include_router x3 (uvicorn)", "fastapi", "/a/b/c/hello"),
        ]
    if "polls" in sections:
        databases = {"SQLite": (sqlite("polls"), sqlite("votes"))}
        if pg is not None:
            databases["PostgreSQL"] = (pg["nestor_polls"], pg["bare_votes"])
        for db, (polls_url, votes_url) in databases.items():
            key = db.lower()
            servers += [nestor_server(f"polls-{key}", folder, ["polls"], polls_url, loop, "/polls/"),
                        bare_server(f"votes-{key}", "votes", loop, "/", votes_url)]
            bare_label = f"bare aiohttp, same SQL: vote on {db}"
            cases += [
                Case("polls", bare_label, f"votes-{key}", "/votes/1", "POST", VOTE, 8, cpu_bound=False),
                Case("polls", f"**Nestor** polls API: vote on {db}", f"polls-{key}", "/polls/api/questions/1/votes",
                     "POST", VOTE, 8, same_work=bare_label, cpu_bound=False),
                Case("polls", f"**Nestor** polls: `GET /polls/` page on {db}", f"polls-{key}", "/polls/",
                     connections=8, cpu_bound=False),
            ]
    if "schemas" in sections:
        servers += [nestor_server("declared", folder, ["polls"], sqlite("declared"), loop, "/polls/"),
                    nestor_server("handwritten", folder, ["bench.handwritten"], sqlite("handwritten"), loop, "/polls/")]
        for what, path, body, rejected in (
            ("vote", "/polls/api/questions/1/votes", VOTE, False),
            ("create a question", "/polls/api/questions", QUESTION, False),
            ("a vote refused (422: no database)", "/polls/api/questions/1/votes", '{"choice": "one"}', True),
        ):
            hand = f"hand-written checks: {what}"
            connections = 64 if rejected else 8
            cases += [Case("schemas", hand, "handwritten", path, "POST", body, connections, cpu_bound=rejected,
                           refused=rejected),
                      Case("schemas", f"**declared schema**: {what}", "declared", path, "POST", body, connections,
                           same_work=hand, cpu_bound=rejected, refused=rejected)]
    if "product" in sections:
        more_servers, more_cases = product_plan(folder, loop, sqlite)
        servers += more_servers
        cases += more_cases
    return servers, cases


def check_same_answers(cases: list[Case], servers: dict[str, Server]) -> None:
    """Refuse to measure a case whose answer differs from the one of the case it is compared
    with (status and body; time stamps aside): it would not be the same work."""
    by_label = {c.label: c for c in cases}

    def answer(case: Case) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(servers[case.server].url + case.path, timeout=10) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            status, body = e.code, e.read().decode()
        return status, re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", "<time>", body)

    for case in cases:
        reference = by_label.get(case.same_work or "")
        if case.same_body and reference is not None and answer(case) != answer(reference):
            raise RuntimeError(f"{case.label} ({case.path}) answers differently from {reference.label}:\n"
                               f"{answer(case)}\n---\n{answer(reference)}")


def access_log_lines(folder: Path, servers: list[Server]) -> str:
    """Count the access log lines each product server wrote to its log file (read once they stopped)."""
    counts = []
    for server in servers:
        if server.name.startswith("product-"):
            lines = dropped = 0
            with open(folder / f"{server.name}.log", "rb") as log:
                for line in log:
                    lines += b" aiohttp.access: " in line or b'HTTP/1.1" ' in line
                    dropped += b"log line(s) dropped" in line
            counts.append(f"{server.name} {lines:,}" + (" (some dropped: the log did not keep up)" if dropped else ""))
    return "Access log lines written to each server's log file: " + "; ".join(counts) + "."


STAT = "median"  # or "best": set from --stat
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
DISTURBED = 0.03  # other processes on the server's core longer than this share of the time spoil a run
SATURATED = 0.95 + DISTURBED  # a CPU-bound server busy less than 95 % of the time was not the limit
TRIES = 4


def busy_ticks(cpu: str) -> int | None:
    """CPU ticks spent since boot by processes on one core (`cpu0`) or the whole machine (`cpu`), and
    by the hypervisor's other guests (steal); None without /proc. Interrupt work (irq, softirq) is
    left out: it is mostly the server's own loopback traffic, which kernels that account interrupt
    time apart (seen here: 14 % of the server's core under load) do not charge to the server."""
    values = _cpu_fields(cpu)
    return None if values is None else values[0] + values[1] + values[2] + values[7]


def interrupt_ticks(cpu: str) -> int | None:
    """CPU ticks spent since boot on interrupts (irq and softirq) by one core or the machine."""
    values = _cpu_fields(cpu)
    return None if values is None else values[5] + values[6]


def _cpu_fields(cpu: str) -> list[int] | None:
    # user nice system idle iowait irq softirq steal
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] == cpu:
                return [int(v) for v in fields[1:9]]
    except (OSError, ValueError):
        pass
    return None


def descendants(roots: list[int]) -> list[int]:
    """Return the processes `roots` and all their descendants."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, pending = [], list(roots)
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending += [child for child, parent in parents.items() if parent == pid]
    return found


def cpu_ns(pids: list[int]) -> int:
    """Nanoseconds on a CPU used so far by these processes, all their threads (schedstat)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(task.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def measure(case: Case, server: Server, args: argparse.Namespace, ours: list[int]) -> tuple[load.Result, float, float]:
    """Load one case; return the result, the share of time other processes ran on the server's
    core meanwhile (the whole machine's, unpinned), and the server's CPU time per request in us."""
    served = descendants([server.process.pid]) if server.process else []
    pinned = bool(load.pin(0))
    watched = served if pinned else served + descendants(ours)  # unpinned: the database is ours too
    core = "cpu0" if pinned else "cpu"
    busy, cpu, mine = busy_ticks(core), cpu_ns(served), cpu_ns(watched)
    interrupts = interrupt_ticks(core)
    done, began = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    result = load.measure(server.url + case.path, duration=args.duration, connections=case.connections,
                          method=case.method, body=case.body, use=args.tool)
    elapsed = time.monotonic() - began
    per_request = (cpu_ns(served) - cpu) / 1000 / max(1, result.requests)
    after = busy_ticks(core)
    if busy is None or after is None:
        return result, 0.0, per_request
    ours_ticks = (cpu_ns(watched) - mine) / 1e9 * TICKS
    if not pinned:  # the load generator shares the machine too
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours_ticks += (now.ru_utime + now.ru_stime - done.ru_utime - done.ru_stime) * TICKS
    cores = 1 if pinned else (os.cpu_count() or 1)
    others = max(0.0, after - busy - ours_ticks) / (elapsed * TICKS * cores)
    # A server below full use was not the limit (the load generator was starved): as disturbed. Its
    # core's interrupt work (its own traffic) counts as its use when it is pinned.
    handled = (interrupt_ticks(core) or 0) - (interrupts or 0) if pinned else 0
    idle = max(0.0, SATURATED - ((cpu_ns(served) - cpu) / 1e9 + handled / TICKS) / elapsed) if case.cpu_bound else 0.0
    return result, max(others, idle), per_request


def wait_until_quiet(seconds: float) -> None:
    """Wait (up to `seconds`) for a second in which other processes leave the server's core alone."""
    core = "cpu0" if load.pin(0) else "cpu"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = busy_ticks(core)
        time.sleep(1)
        after = busy_ticks(core)
        if before is None or after is None or (after - before) / TICKS < DISTURBED:
            return


def run_load(cases: list[Case], servers: dict[str, Server], args: argparse.Namespace, ours: list[int]) -> None:
    for case in cases:  # warm-up: lazy imports, caches, database pools
        load.measure(servers[case.server].url + case.path, duration=1, connections=case.connections,
                     method=case.method, body=case.body, use=args.tool)
    for round_number in range(args.rounds):
        shift = round_number % len(cases)
        for case in cases[shift:] + cases[:shift]:  # interleaved: drift hits every case alike
            tries = []
            for _ in range(TRIES):  # measured again while other processes use the machine
                tries.append(measure(case, servers[case.server], args, ours))
                if tries[-1][1] <= DISTURBED or args.patience <= 0:
                    break
                print(f"  disturbed ({tries[-1][1]:.0%} of the CPU used by others): waiting, then again",
                      file=sys.stderr)
                wait_until_quiet(args.patience)
            result, other, per_request = min(tries, key=lambda t: t[1])
            case.results.append(result)
            case.disturbance.append(other)
            case.cpu_us.append(per_request)
            print(f"  round {round_number + 1}: {case.label}: {result.rps:,.0f} rps", file=sys.stderr)


def startup_rows(repeats: int) -> list[list[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO)])}
    rows = []
    for n in STARTUP_SIZES:
        figures = {}
        for kind in ("bare", "nestor"):
            runs = [json.loads(subprocess.run([sys.executable, "-m", "bench.startup", kind, str(n)], cwd=REPO, env=env,
                                              capture_output=True, text=True, check=True, timeout=120).stdout)
                    for _ in range(repeats)]
            figures[kind] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        bare, nestor = figures["bare"], figures["nestor"]
        ready = nestor["build_s"] + nestor["start_s"]
        bare_ready = bare["build_s"] + bare["start_s"]
        rows.append([str(n), f"{nestor['import_s'] * 1000:.0f} ms", f"{nestor['build_s'] * 1000:.0f} ms",
                     f"{nestor['start_s'] * 1000:.0f} ms", f"**{ready * 1000:.0f} ms**",
                     f"{bare_ready * 1000:.0f} ms ({ready / bare_ready:.1f}x)", f"{nestor['rss_mb']:.0f} MiB",
                     f"{bare['rss_mb']:.0f} MiB ({nestor['rss_mb'] / bare['rss_mb']:.2f}x)"])
    return rows


# -- report ----------------------------------------------------------------------------------

TITLES = {
    "overhead": "1. Platform overhead: plain-text handler at depth 3",
    "json": "2. The same JSON endpoint and Jinja2 page",
    "routing": "3. Route resolution: a route in the last-mounted of N sub-apps (5 routes each)",
    "peers": "4. Peers: the same handler at depth 3",
    "polls": "5. Polls: votes and page renders",
    "schemas": "6. Declared schemas (`@operation`) against the hand-written checks they replaced (polls API, SQLite)",
    "product": "7. The product as people run it: `nestor serve` on the default nestor.toml plus README's greeter",
    "startup": "8. Start-up and memory with N sub-apps (median of 3 fresh processes)",
    "rows": f"9. Cost as the data grows: {ROWS:,} polls questions (`bench.rows`: time per request, not throughput)",
}


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def report(sections: list[str], cases: list[Case], startup: list[list[str]] | None,
           notes: dict[str, str] | None = None, rows_text: str | None = None) -> str:
    by_label = {c.label: c for c in cases if c.results}
    reference = by_label.get("bare aiohttp, flat: `/hello`")
    bare = reference.median("rps") if reference else 0.0
    bare_cpu = reference.median("cpu_us") if reference else 0.0
    extra = {
        "overhead": [("x bare 3 nested", "bare aiohttp, 3 nested sub-apps"),
                     ("x naive depth 3", "hand-built depth 3, naive behaviours")],
        "peers": [("x Nestor depth 3", "**Nestor** depth 3, kernel on")],
    }
    out = []
    for section in sections:
        out.append(f"### {TITLES[section]}\n")
        if section == "rows":
            out += [rows_text or "", ""]
            continue
        if section == "startup":
            out.append(table(["sub-apps", "import", "build", "start", "build + start", "bare aiohttp build + start",
                              "memory (RSS)", "bare aiohttp memory"], startup or []))
            out.append("")
            continue
        columns = [(name, ref) for name, ref in extra.get(section, []) if ref in by_label]
        header = ["server", "rps", "x bare aiohttp"] + [name for name, _ in columns]
        header += ["x same work" if section != "routing" else "x 1 sub-app"] if section in SAME_WORK else []
        header += ["p50", "p99", "server CPU/request", "x bare aiohttp by CPU"]
        rows = []
        for case in (c for c in cases if c.section == section):
            rps = case.median("rps")
            marks = (" (!)" if not case.refused and any(r.failed for r in case.results) else "") + (" (~)" if case.disturbed else "")
            row = [case.label + marks, f"{rps:,.0f}", f"{rps / bare:.2f}"]
            row += [f"{rps / by_label[ref].median('rps'):.2f}" for _, ref in columns]
            if section in SAME_WORK:
                row.append(f"{rps / by_label[case.same_work].median('rps'):.2f}" if case.same_work in by_label else "")
            row += [f"{case.median('p50_ms'):.2f} ms", f"{case.median('p99_ms'):.2f} ms", f"{case.median('cpu_us'):.1f} us",
                    f"{bare_cpu / case.median('cpu_us'):.2f}"]
            rows.append(row)
        out.append(table(header, rows))
        if any(r.failed for c in cases if c.section == section and not c.refused for r in c.results):
            out.append("\n(!) some requests failed (non-2xx answers or socket errors): that figure is not valid")
        if section in TARGETS:
            out.append("\n" + targets_table(TARGETS[section], by_label))
        if notes and section in notes:
            out.append("\n" + notes[section])
        out.append("")
    return "\n".join(out)


SAME_WORK = ("json", "polls", "schemas", "routing", "product")


def targets_table(targets: list[tuple[str, str, str, float | None]], by_label: dict[str, Case]) -> str:
    """The section's targets: each ratio of requests per second (and of CPU per request), met or not."""
    rows = []
    for what, ours, theirs, least in targets:
        if ours not in by_label or theirs not in by_label:
            continue
        a, b = by_label[ours], by_label[theirs]
        ratio = a.median("rps") / b.median("rps")
        met = "" if least is None else "yes" if ratio >= least else "**no**"
        rows.append([what, f"{ratio:.2f}", f"{b.median('cpu_us') / a.median('cpu_us'):.2f}",
                     "" if least is None else f">= {least:g}", met])
    return table(["ratio", "x (rps)", "x (CPU/request)", "target", "met"], rows)


def machine(args: argparse.Namespace) -> str:
    import aiohttp

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    versions = []
    for name in ("uvloop", "orjson", "starlette", "fastapi", "uvicorn"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    pinned = "server on core 0, load on core 1 (taskset)" if load.pin(1) else "not pinned (no taskset or one core)"
    how = (f"`{'wrk -t1 -c<N> --latency' if args.tool == 'wrk' else 'python -m bench.load'}`, "
           f"{args.rounds} interleaved rounds of {args.duration:g} s, "
           f"{'best round' if args.stat == 'best' else 'median'} shown")
    return (f"{os.cpu_count()} cores ({cpu}), Linux {stdlib_platform.release()}, Python {stdlib_platform.python_version()}, "
            f"aiohttp {aiohttp.__version__}, {', '.join(versions)}; event loop {args.loop}; {pinned}; load: {how}.")


@contextlib.contextmanager
def running(servers: list[Server], folder: Path) -> Iterator[dict[str, Server]]:
    try:
        for server in servers:
            server.start(folder)
        for server in servers:
            server.wait_ready(folder)
        yield {s.name: s for s in servers}
    finally:
        for server in servers:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of load per case and round (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is shown (default 2)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="event loop of every server")
    parser.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--tool", choices=["wrk", "python"], default=load.tool(), help="load generator")
    parser.add_argument("--output", help="also write the report (markdown) to this file")
    parser.add_argument("--stat", choices=["median", "best"], default="median",
                        help="figure shown per case: the median of the kept rounds (default), or the best "
                             "(most rps, least CPU and latency: for a machine shared with other work)")
    parser.add_argument("--patience", type=float, default=0,
                        help="seconds to wait for other processes to calm down before measuring a disturbed "
                             f"case again, up to {TRIES} tries (default 0: never again, so the run stays short)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the servers on the way out
    global STAT
    STAT = args.stat
    sections = [s.strip() for s in (args.only or ",".join(SECTIONS)).split(",")]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {','.join(SECTIONS)}")
    if args.tool == "python":
        print("note: wrk is not installed (apt-get install wrk): the Python client is often the bottleneck",
              file=sys.stderr)
    started = time.monotonic()
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="nestor-bench-") as tmp:
        folder = Path(tmp)
        needs_pg = "polls" in sections
        with postgres.server(["nestor_polls", "bare_votes"]) if needs_pg else contextlib.nullcontext() as pg:
            if needs_pg and pg is None:
                print("note: PostgreSQL binaries not found: polls on SQLite only", file=sys.stderr)
            servers, cases = plan(sections, folder, args.loop, pg)
            if any(s not in ("startup", "rows") for s in sections):
                ours = [postgres.postmaster(pg)] if pg else []
                with running(servers, folder) as by_name:
                    check_same_answers(cases, by_name)
                    run_load(cases, by_name, args, [pid for pid in ours if pid])
                if "product" in sections:
                    notes["product"] = access_log_lines(folder, servers)
        startup = startup_rows(3) if "startup" in sections else None
    rows_text = None
    if "rows" in sections:  # its own servers and databases, one after the other (about 3 minutes)
        from . import rows

        rows_out = rows.section(ROWS, ["sqlite", "postgresql"], requests=50, budget=5.0, loop=args.loop)
        rows_text = rows_out.split("\n", 2)[2]  # without its own heading
    text = f"Machine: {machine(args)}\n\n" + report(sections, cases, startup, notes, rows_text)
    measured = [c for c in cases if c.disturbance]
    if measured:
        kept = sum(len(c.kept()) for c in measured)
        text += (f"\nRounds in which other processes ran on the servers' core more than {DISTURBED:.0%} of the "
                 f"time, or a CPU-bound server was busy less than {SATURATED - DISTURBED:.0%} of it (the load "
                 f"generator starved), are left out: {kept} of {sum(len(c.results) for c in measured)} kept"
                 f"{'; (~) marks a case with no undisturbed round (its least disturbed one is shown)' if any(c.disturbed for c in measured) else ''}.\n")
    text += f"\n(total {time.monotonic() - started:.0f} s)\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
