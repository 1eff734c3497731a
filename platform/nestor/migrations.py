"""Schema migrations per sub-app, with Alembic: one history and one version table each.

A sub-app that owns tables declares `SubApp(migrations="migrations", metadata=db.metadata)`:
its package ships a folder of Alembic revision files, and its history is its own, kept in
its own version table (`alembic_version_<name>`). Sub-apps from different authors are then
installed, upgraded and removed independently: no revision of one names another's. (Alembic's
branch labels would put every sub-app into one graph and one table instead: removing a
sub-app would leave a head that no installed code can reach.) The kernel owns the Alembic
environment (`migration_env/`: env.py and the template new revisions are written from), so a
sub-app ships revision files only. Operations run in batch mode, so ALTERs SQLite lacks work.

Start-up (`migrate_ctx`) reads each version table and the revision files' ids without loading
Alembic when nothing is pending; in development it applies what is pending, in production it
refuses to start. On PostgreSQL one process migrates under an advisory lock while the others
wait for it. After that, the live tables are compared with each sub-app's MetaData: a
difference (drift) makes the sub-app not ready on /health and its errors 503s saying why.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import fcntl
import io
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import logins
from .checks import is_production
from .config import ConfigError
from .db import DB, DRIFT
from .subapp import SubApp, package_folder
from .tree import Level

logger = logging.getLogger("nestor.migrations")
ENVIRONMENT = Path(__file__).resolve().parent / "migration_env"
LOCK_KEY = 0x6E6573746F72  # "nestor": the PostgreSQL advisory lock migrations run under


@dataclass(frozen=True, eq=False)
class History:
    """One sub-app's migrations: its revision files, its version table and its tables' MetaData."""

    label: str  # the level: polls, or polls.api
    folder: Path
    metadata: sa.MetaData | None

    @property
    def version_table(self) -> str:
        """The table holding this history's current revision."""
        return "alembic_version_" + self.label.replace(".", "_")

    def revisions(self) -> dict[str, tuple[str, ...]]:
        """Return each revision id with the ids it revises, read from the files (Alembic not loaded)."""
        found = {}
        for file in sorted(self.folder.glob("*.py")):
            values = _assignments(file, ("revision", "down_revision"))
            if isinstance(values.get("revision"), str):
                down = values.get("down_revision")
                found[values["revision"]] = tuple(down) if isinstance(down, tuple | list) else (down,) if down else ()
        return found

    def heads(self) -> set[str]:
        """The revisions no other revision revises: where `upgrade` goes."""
        revisions = self.revisions()
        revised = {down for downs in revisions.values() for down in downs}
        return set(revisions) - revised

    def tables(self) -> list[sa.Table]:
        """The tables the code declares, in dependency order."""
        return list(self.metadata.sorted_tables) if self.metadata is not None else []


def _assignments(file: Path, names: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for node in ast.parse(file.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id in names and getattr(node, "value", None) is not None:
            try:
                values[target.id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


KERNEL = History("nestor", Path(__file__).resolve().parent / "kernel_migrations", logins.metadata)


def histories(levels: Iterable[Level]) -> list[History]:
    """Return the kernel's history, then those of the mounted levels that declare migrations, in mount order."""
    found = [KERNEL]
    for level in levels:
        spec = level.spec
        if spec is not None and spec.migrations is not None:
            found.append(History(level.label, migrations_folder(spec), spec.metadata))
    return found


def migrations_folder(spec: SubApp) -> Path:
    """Return a spec's migrations folder (relative to its package); ConfigError when it is missing."""
    folder = Path(spec.migrations)
    folder = folder if folder.is_absolute() else package_folder(spec) / folder
    if not folder.is_dir():
        raise ConfigError(
            f"sub-app {spec.name!r}: its migrations folder {str(folder)!r} does not exist. Create it "
            f"(nestor db revision {spec.name} -m \"first\" --autogenerate writes the first revision) "
            "or fix SubApp(migrations=...)"
        )
    return folder


# -- reading the database ----------------------------------------------------------------------


async def current(conn: AsyncConnection, history: History) -> set[str]:
    """Return the revisions the database is at (empty: never migrated)."""
    return await conn.run_sync(_current, history)


def _current(conn: sa.Connection, history: History) -> set[str]:
    if not sa.inspect(conn).has_table(history.version_table):
        return set()
    rows = conn.execute(sa.text(f"SELECT version_num FROM {history.version_table}"))  # noqa: S608 (our name)
    return {row[0] for row in rows}


async def pending(engine: AsyncEngine, found: Iterable[History]) -> dict[str, list[str]]:
    """Return, by sub-app, the revisions not applied yet (only sub-apps with some)."""
    behind = {}
    async with engine.connect() as conn:
        for history in found:
            missing = _ahead(history, await current(conn, history))
            if missing:
                behind[history.label] = missing
    return behind


def _ahead(history: History, at: set[str]) -> list[str]:
    """The revisions between `at` and the heads, oldest first (all of them when `at` is empty)."""
    revisions = history.revisions()
    done: set[str] = set()
    stack = list(at)
    while stack:
        rev = stack.pop()
        if rev not in done:
            done.add(rev)
            stack.extend(revisions.get(rev, ()))
    order, seen = [], set()

    def visit(rev: str) -> None:
        if rev in seen or rev in done:
            return
        seen.add(rev)
        for down in revisions.get(rev, ()):
            visit(down)
        order.append(rev)

    for head in sorted(history.heads()):
        visit(head)
    return order


async def drift(engine: AsyncEngine, history: History) -> list[str]:
    """Return how the live tables differ from the code's MetaData: missing tables and columns, extra columns."""
    async with engine.connect() as conn:
        return await conn.run_sync(_drift, history)


def _drift(conn: sa.Connection, history: History) -> list[str]:
    inspector = sa.inspect(conn)
    found = []
    for table in history.tables():
        if not inspector.has_table(table.name):
            found.append(f"table {table.name} is in the code but not in the database")
            continue
        live = {column["name"] for column in inspector.get_columns(table.name)}
        code = set(table.columns.keys())
        found += [f"table {table.name}: column {c} is in the code but not in the database" for c in sorted(code - live)]
        found += [f"table {table.name}: column {c} is in the database but not in the code" for c in sorted(live - code)]
    return found


# -- running Alembic ----------------------------------------------------------------------------


def alembic_config(history: History, connection: sa.Connection | None = None, out: io.StringIO | None = None) -> Any:
    """Return an Alembic Config for one history: the kernel's environment, the sub-app's revision files."""
    from alembic.config import Config

    config = Config(stdout=out or io.StringIO(), attributes={"connection": connection, "nestor.history": history})
    config.set_main_option("script_location", str(ENVIRONMENT))
    config.set_main_option("version_locations", str(history.folder))
    config.set_main_option("path_separator", "os")
    return config


async def run(engine: AsyncEngine, history: History, action: Callable[[Any], Any]) -> str:
    """Run an Alembic command (`action(config)`) on one history, in one transaction; return what it printed.

    On SQLite, foreign keys are off meanwhile (batch mode copies and drops tables, and a DROP would
    cascade to the rows of other tables) and checked after: a violation rolls the migration back.
    """
    out = io.StringIO()
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines repeat what we log, in its words
    async with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # outside a transaction, or it is ignored
            await conn.commit()
        try:
            async with conn.begin():
                await conn.run_sync(lambda sync: action(alembic_config(history, sync, out)))
                if sqlite:
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise ConfigError(f"{history.label}: the migration breaks foreign keys: {broken[:3]}")
        finally:
            if sqlite:
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    return out.getvalue()


async def upgrade(engine: AsyncEngine, found: Iterable[History], target: str = "heads") -> list[str]:
    """Apply what is pending (to `target`), adopting databases made before migrations; return what was done."""
    from alembic import command

    done = []
    async with _exclusive(engine):  # several processes starting at once: one migrates, the others wait
        for history in found:
            behind = (await pending(engine, [history])).get(history.label)
            if not behind and target == "heads":
                continue
            if await _adopt(engine, history):
                done.append(f"{history.label}: an existing database, stamped at {_baseline(history)} (no data touched)")
            await run(engine, history, lambda config: command.upgrade(config, target))
            done.append(f"{history.label}: upgraded to {target if target != 'heads' else ', '.join(sorted(history.heads()))}")
    return done


def _baseline(history: History) -> str:
    return next(rev for rev, downs in history.revisions().items() if not downs)


async def _adopt(engine: AsyncEngine, history: History) -> bool:
    """Stamp the baseline on a database whose tables were created by `tables()` before migrations existed."""
    from alembic import command

    async with engine.connect() as conn:
        if await current(conn, history):
            return False
        names = set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))
    if not names & {table.name for table in history.tables()}:
        return False
    await run(engine, history, lambda config: command.stamp(config, _baseline(history)))
    return True


@contextlib.asynccontextmanager
async def _exclusive(engine: AsyncEngine) -> AsyncIterator[None]:
    """Let one process at a time check and apply migrations: the others wait, then find nothing to do.

    PostgreSQL: an advisory lock on the site's database (every host shares it). A SQLite file: an
    OS lock on a file beside it (SQLite lives on one machine).
    """
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
                await conn.commit()
        return
    database = engine.url.database or ""
    if engine.dialect.name != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        yield
        return
    with open(f"{database}.migrating", "a") as lock:  # noqa: ASYNC230 (opening a lock file does not block)
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# -- start-up -----------------------------------------------------------------------------------

HISTORIES = web.AppKey("nestor.histories", list)


async def migrate_ctx(app: web.Application) -> AsyncIterator[None]:
    """Root cleanup context, after the engine: bring every sub-app's tables to its code, or refuse to start."""
    found = app[HISTORIES]
    app[DRIFT] = {}
    if found:
        engine = app[DB]
        behind = await pending(engine, found)
        if behind and is_production(app):
            listed = "; ".join(f"{label}: {', '.join(revs)}" for label, revs in behind.items())
            raise ConfigError(
                f"pending migrations ({listed}): run `nestor db upgrade` before starting this version "
                "(production mode never migrates at start-up)"
            )
        if behind:
            for line in await upgrade(engine, found):
                logger.info("migrations: %s", line)
        async with engine.connect() as conn:  # one connection for every sub-app's comparison
            differences = {history.label: await conn.run_sync(_drift, history) for history in found}
        for history in found:
            differs = differences[history.label]
            if differs:
                app[DRIFT][history.label] = differs
                logger.warning(
                    "sub-app %s is not ready: its tables do not match its code (%s): a migration is missing; "
                    "see nestor db status", history.label, "; ".join(differs),
                )
    yield
