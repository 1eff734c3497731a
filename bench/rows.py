"""Polls with many questions: `python -m bench.rows [--rows 1000000] [--database sqlite|postgresql|both]`.

Fills an empty database with N questions of 3 choices each, in bulk (SQLite: executemany in
one transaction per 100,000 rows; PostgreSQL: COPY), after `nestor db upgrade` made the
tables and their indexes, so every index and search trigger is kept up to date as the rows
go in. Then starts a real `nestor serve` on it (pinned to core 0, as bench.run does) and
times sequential GETs over one keep-alive connection: the list API's first and a deep page,
searches for a rare, a middling and a common word, the list page, one question. Prints the
"1,000,000 rows" section: a markdown table per database of the median and p99 in
milliseconds (`section()` gives it to a driver such as bench.run).

Bounded in time: each URL gets `--requests` GETs or `--budget` seconds, whichever ends first
(the table says how many were made); loading takes about a minute per million questions
per database on 2 cores.

The texts are made-up questions over a vocabulary of ~170 words drawn with Zipf weights
(the commonest, "python", is in about 30% of them); "quokka" is planted in one question in
50,000. PostgreSQL is a throw-away server from the installed binaries (bench.postgres),
vacuumed and analysed after the load as autovacuum would be; SQLite is not analysed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nestor_subapps.polls.db import Cursor

from . import postgres
from .run import REPO, cpu_ns, descendants, nestor_server

BATCH = 100_000
START = datetime(2020, 1, 1, tzinfo=UTC)
NOUNS = """python database framework editor language server browser keyboard laptop phone coffee tea
library runner cloud container kernel compiler terminal shell theme font monitor chair desk office garden
bicycle train car city book movie song album game sport team season holiday breakfast lunch dinner pizza
pasta salad soup bread cheese wine beer juice water river mountain beach island forest lake camera printer
router network protocol format license company meeting deadline project release version feature bug patch
review branch commit merge pipeline deployment cache queue worker scheduler backup password token session
cookie header request response socket thread process memory disk storage index query table schema
migration column row cursor page search filter sort report chart dashboard metric alert log trace profile
benchmark api client widget button form layout color style animation icon weekend morning evening winter
summer autumn spring weather rain snow wind sun moon star planet rocket satellite robot drone sensor
battery charger cable adapter speaker headphone microphone""".split()
ADJECTIVES = """best fastest simplest cheapest favourite worst oldest newest safest quietest biggest smallest
open free modern classic lightweight portable reliable secure friendly popular""".split()
VERBS = "use prefer recommend avoid learn teach replace upgrade test deploy build buy sell fix share".split()
TEMPLATES = (
    "Which {a} {n1} do you {v} for {n2}?",
    "Is {n1} better than {n2}?",
    "Should we {v} the {n1} before the {n2}?",
    "How often do you {v} your {n1}?",
    "What is the {a} {n1} for a {n2}?",
    "Do you {v} {n1} or {n2}?",
)
CHOICES = ("Yes", "No", "Maybe")
RARE, RARE_EVERY = "quokka", 50_000
SEARCHED = {"few": RARE, "some": "microphone", "many": "python"}


def texts(count: int, seed: int = 1) -> Iterator[str]:
    """Yield `count` made-up questions, the same ones for the same seed."""
    rnd = random.Random(seed)
    weights = [1 / rank for rank in range(1, len(NOUNS) + 1)]
    for n in range(count):
        first, second = rnd.choices(NOUNS, weights, k=2)
        if n % RARE_EVERY == RARE_EVERY // 2:
            second = RARE
        template = rnd.choice(TEMPLATES)
        yield template.format(a=rnd.choice(ADJECTIVES), n1=first, n2=second, v=rnd.choice(VERBS))


def created_at(question_id: int) -> datetime:
    """When a question was asked: one every 30 s or so from START, the microseconds scattered."""
    return START + timedelta(seconds=30 * question_id, microseconds=question_id * 7_919_311 % 25_000_000)


def batches(count: int) -> Iterator[tuple[list[tuple[int, str, datetime]], list[tuple[int, int, str, int]]]]:
    """Yield (questions, choices) rows, BATCH questions at a time, ids from 1."""
    votes = random.Random(2)
    made = texts(count)
    for first in range(1, count + 1, BATCH):
        questions, choices = [], []
        for qid in range(first, min(count, first + BATCH - 1) + 1):
            questions.append((qid, next(made), created_at(qid)))
            choices += [(3 * qid - 2 + k, qid, text, votes.randrange(50)) for k, text in enumerate(CHOICES)]
        yield questions, choices


def fill_sqlite(path: Path, count: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous=OFF")  # this load only: a crash would mean loading again
        for questions, choices in batches(count):
            with conn:
                # created_at as SQLAlchemy writes it on SQLite (the lists compare that text)
                conn.executemany(
                    "INSERT INTO polls_question (id, text, created_at) VALUES (?, ?, ?)",
                    [(qid, text, created.strftime("%Y-%m-%d %H:%M:%S.%f")) for qid, text, created in questions],
                )
                conn.executemany("INSERT INTO polls_choice (id, question_id, text, votes) VALUES (?, ?, ?, ?)", choices)
    finally:
        conn.close()


async def fill_postgresql(url: str, count: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for questions, choices in batches(count):
            await conn.copy_records_to_table("polls_question", records=questions, columns=["id", "text", "created_at"])
            await conn.copy_records_to_table(
                "polls_choice", records=choices, columns=["id", "question_id", "text", "votes"]
            )
        for table in ("polls_question", "polls_choice"):
            await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()


def deep_cursor(count: int) -> str:
    """The place of the 100th oldest question: the page after it is near the end of the list."""
    qid = min(100, count)
    return str(Cursor(created_at(qid), qid))


def matches(count: int) -> dict[str, int]:
    """How many questions contain each searched word."""
    found = dict.fromkeys(SEARCHED.values(), 0)
    for text in texts(count):
        for word in found:
            found[word] += word in text
    return found


def upgrade(config: Path) -> None:
    """`nestor db upgrade`: the tables, indexes and search index of the current code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "platform"), str(REPO)])
    command = [sys.executable, "-m", "nestor.cli", "db", "upgrade", "--config", str(config)]
    subprocess.run(command, cwd=config.parent, env=env, check=True, capture_output=True, timeout=600)


def cases(count: int) -> list[tuple[str, str]]:
    """(what, path) of every timed request."""
    deep = deep_cursor(count)
    found = matches(count)
    few, some, many = (f"`{word}`, {found[word]:,} questions" for word in SEARCHED.values())
    return [
        ("API list, first page", "/polls/api/questions"),
        ("API list, deep page (`before=` 100 questions from the end)", f"/polls/api/questions?before={deep}"),
        ("API list, `offset=1000` (the deepest offset served)", "/polls/api/questions?offset=1000"),
        (f"API search, few matches ({few})", f"/polls/api/questions?q={RARE}"),
        (f"API search, some matches ({some})", f"/polls/api/questions?q={SEARCHED['some']}"),
        (f"API search, many matches ({many})", f"/polls/api/questions?q={SEARCHED['many']}"),
        (f"API search, many matches, deep page ({many})", f"/polls/api/questions?q={SEARCHED['many']}&before={deep}"),
        ("`/polls/` page, first", "/polls/"),
        ("`/polls/` page, deep (`before=`)", f"/polls/?before={deep}"),
        (f"`/polls/` page, search, few matches ({few})", f"/polls/?q={RARE}"),
        ("API one question: `/polls/api/questions/5`", "/polls/api/questions/5"),
    ]


@dataclass
class Timed:
    """One URL's GETs: seconds each, and CPU seconds per GET of the server and of PostgreSQL."""

    took: list[float]
    server_cpu: float
    database_cpu: float | None


def timings(port: int, path: str, requests: int, budget: float, cpu: dict[str, list[int]], warm_up: int = 5) -> Timed:
    """GET `path` one after the other on one connection (after `warm_up` untimed GETs),
    `requests` times or as many as `budget` seconds allow (at least 3). `cpu` names the
    processes whose CPU time is read: "server" and "database" (PostgreSQL's, if any)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    took: list[float] = []
    deadline = time.perf_counter() + budget
    used: dict[str, int] = {}
    try:
        for n in range(warm_up + requests):
            if len(took) >= 3 and time.perf_counter() > deadline:
                break
            if n == warm_up:
                used = {name: cpu_ns(pids) for name, pids in cpu.items()}
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
            if n >= warm_up:
                took.append(time.perf_counter() - started)
    finally:
        conn.close()
    per_get = {name: (cpu_ns(pids) - used[name]) / 1e9 / len(took) for name, pids in cpu.items()}
    return Timed(took, per_get["server"], per_get.get("database"))


def table(results: list[tuple[str, Timed]], title: str) -> str:
    lines = [
        f"### {title}", "",
        "| request | GETs | median ms | p99 ms | server CPU ms/GET | PostgreSQL CPU ms/GET |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for what, timed in results:
        took = timed.took
        p99 = statistics.quantiles(took, n=100)[98] if len(took) > 1 else took[0]
        database = "" if timed.database_cpu is None else f"{timed.database_cpu * 1000:.2f}"
        lines.append(
            f"| {what} | {len(took)} | {statistics.median(took) * 1000:.1f} | {p99 * 1000:.1f} "
            f"| {timed.server_cpu * 1000:.2f} | {database} |"
        )
    return "\n".join(lines)


def section(count: int, databases: list[str], requests: int, budget: float, loop: str) -> str:
    """The bench section: a heading, then one table per database (each in a fresh temp folder)."""
    out = [f"## {count:,} rows", ""]
    for database in databases:
        if database == "postgresql" and postgres.bin_dir() is None:
            out += ["PostgreSQL: skipped, its binaries are not installed (apt-get install postgresql).", ""]
            continue
        folder = Path(tempfile.mkdtemp(prefix="nestor-rows-"))
        try:
            out += [run(count, database, requests, budget, loop, folder), ""]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return "\n".join(out)


def run(count: int, database: str, requests: int, budget: float, loop: str, folder: Path) -> str:
    with postgres.server(["rows"]) if database == "postgresql" else contextlib.nullcontext() as urls:
        if database == "postgresql" and urls is None:
            raise SystemExit("PostgreSQL binaries not found (apt-get install postgresql)")
        url = urls["rows"] if urls else f"sqlite+aiosqlite:///{folder / 'rows.sqlite3'}"
        server = nestor_server("rows", folder, ["polls"], url, loop, "/health")
        upgrade(folder / "rows.toml")
        started = time.perf_counter()
        if database == "postgresql":
            asyncio.run(fill_postgresql(url, count))
        else:
            fill_sqlite(folder / "rows.sqlite3", count)
        loaded = time.perf_counter() - started
        print(f"loaded {count:,} questions ({3 * count:,} choices) into {database} in {loaded:.0f} s", file=sys.stderr)
        server.start(folder)
        try:
            server.wait_ready(folder, seconds=120)
            cpu = {"server": descendants([server.process.pid])} if server.process else {"server": []}
            if urls is not None and (master := postgres.postmaster(urls)) is not None:
                cpu["database"] = descendants([master])  # the backends serving the server's pool too
            results = [(what, timings(server.port, path, requests, budget, cpu)) for what, path in cases(count)]
        finally:
            server.stop()
    title = f"{count:,} questions on {database}: sequential GETs on one connection (loaded in {loaded:.0f} s)"
    return table(results, title)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rows", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="questions to load (default 1,000,000)")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per URL at most (default 50)")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per URL at most (default 5)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--keep", action="store_true", help="keep the folder (database, config, server log)")
    args = parser.parse_args()
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    if not args.keep:
        print(section(args.rows, databases, args.requests, args.budget, args.loop))
        return
    for database in databases:
        folder = Path(tempfile.mkdtemp(prefix=f"nestor-rows-{database}-"))
        print(run(args.rows, database, args.requests, args.budget, args.loop, folder), "\n")
        print(f"kept {folder}", file=sys.stderr)


if __name__ == "__main__":
    main()
