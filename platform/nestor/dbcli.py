"""`nestor db status|upgrade|downgrade|history|revision`: each sub-app's migrations from the command line.

They read the same configuration as `nestor serve` (`database_url` with its levels and
sources) and answer mistakes in one line: an unknown sub-app, an unknown revision, a
database that cannot be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from . import migrations
from .app import create_app
from .config import ConfigError
from .db import BASE_DIR, DATABASE_URL, DatabaseUnavailable, engine_for, pool_options, unavailable
from .migrations import History
from .tree import TREE

T = TypeVar("T")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add `nestor db` and its commands to the command line."""
    db = sub.add_parser("db", help="each sub-app's migrations: status, upgrade, downgrade, history, revision")
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", parents=[common], help="revision, head, pending and drift of each sub-app")
    status.add_argument("--json", action="store_true", help="print JSON")
    upgrade = actions.add_parser("upgrade", parents=[common], help="apply pending migrations (default: all, to head)")
    upgrade.add_argument("subapp", nargs="?", help="only this sub-app")
    upgrade.add_argument("revision", nargs="?", default="heads", help="to this revision (default: heads)")
    downgrade = actions.add_parser("downgrade", parents=[common], help="undo migrations of one sub-app")
    downgrade.add_argument("subapp")
    downgrade.add_argument("revision", help="the revision to go back to (an id, -1, or base)")
    history = actions.add_parser("history", parents=[common], help="the revisions of each sub-app, newest first")
    history.add_argument("subapp", nargs="?")
    revision = actions.add_parser("revision", parents=[common], help="write a new migration into a sub-app's package")
    revision.add_argument("subapp")
    revision.add_argument("-m", "--message", required=True, help="what it changes, e.g. 'add pinned'")
    revision.add_argument("--autogenerate", action="store_true", help="compare the sub-app's MetaData with the database")
    for parser, run in ((status, status_command), (upgrade, upgrade_command), (downgrade, downgrade_command),
                        (history, history_command), (revision, revision_command)):
        parser.set_defaults(run=run)


def _setup(args: argparse.Namespace) -> tuple[list[History], AsyncEngine]:
    root = create_app(args.config)[TREE].root.app
    return root[migrations.HISTORIES], engine_for(root[DATABASE_URL], root[BASE_DIR], pool_options(root))


def _chosen(found: list[History], name: str | None) -> list[History]:
    if name is None:
        return found
    chosen = [h for h in found if h.label == name]
    if not chosen:
        known = ", ".join(h.label for h in found) or "none"
        raise ConfigError(f"no mounted sub-app {name!r} has migrations (those that do: {known})")
    return chosen


def _run(engine: AsyncEngine, work: Callable[[], Awaitable[T]], label: str = "") -> T:
    """Run `work` on a fresh loop; Alembic's and the database's errors become one-line ConfigErrors."""
    from alembic.util import CommandError

    async def go() -> T:
        try:
            return await work()
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except CommandError as e:
        raise ConfigError(f"{label}: {e}" if label else str(e)) from None
    except (DatabaseUnavailable, OSError) as e:
        shown = engine.url.render_as_string(hide_password=True)
        raise ConfigError(f"database_url {shown}: {unavailable(e) or e}") from None


def status_command(args: argparse.Namespace) -> int:
    """Print each sub-app's current revision, head, pending count and drift."""
    found, engine = _setup(args)

    async def read() -> list[dict[str, Any]]:
        rows = []
        for history in found:
            async with engine.connect() as conn:
                at = await migrations.current(conn, history)
            behind = (await migrations.pending(engine, [history])).get(history.label, [])
            differs = await migrations.drift(engine, history) if not behind else []
            rows.append({"subapp": history.label, "current": sorted(at), "head": sorted(history.heads()),
                         "pending": behind, "drift": differs})
        return rows

    rows = _run(engine, read)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        state = f"{len(row['pending'])} pending ({', '.join(row['pending'])})" if row["pending"] else "up to date"
        print(f"{row['subapp']}: at {', '.join(row['current']) or 'nothing'}, head {', '.join(row['head'])}: {state}")
        for line in row["drift"]:
            print(f"  drift: {line}: a migration is missing (nestor db revision {row['subapp']} -m ... --autogenerate)")
    return 0


def upgrade_command(args: argparse.Namespace) -> int:
    """Apply pending migrations: every sub-app to its head, or one sub-app to a revision."""
    found, engine = _setup(args)
    done = _run(engine, lambda: migrations.upgrade(engine, _chosen(found, args.subapp), args.revision), args.subapp or "")
    print("\n".join(done) or "nothing to do: every sub-app is at its head")
    return 0


def downgrade_command(args: argparse.Namespace) -> int:
    """Undo one sub-app's migrations down to a revision."""
    from alembic import command

    found, engine = _setup(args)
    [history] = _chosen(found, args.subapp)
    _run(engine, lambda: migrations.run(engine, history, lambda c: command.downgrade(c, args.revision)), history.label)
    print(f"{history.label}: downgraded to {args.revision}")
    return 0


def history_command(args: argparse.Namespace) -> int:
    """Print the revisions of each sub-app (or one), newest first, marking the current one."""
    from alembic import command

    found, engine = _setup(args)

    async def read() -> list[str]:
        return [await migrations.run(engine, h, lambda c: command.history(c, indicate_current=True))
                for h in _chosen(found, args.subapp)]

    for history, text in zip(_chosen(found, args.subapp), _run(engine, read)):
        print(f"[{history.label}] {history.folder}\n{text.rstrip()}\n")
    return 0


def revision_command(args: argparse.Namespace) -> int:
    """Write a new migration file into the sub-app's migrations folder (compared with the database with --autogenerate)."""
    from alembic import command

    found, engine = _setup(args)
    [history] = _chosen(found, args.subapp)
    rev_id = f"{_next_number(history):04d}"

    def write(config: Any) -> None:
        config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
        command.revision(config, args.message, autogenerate=args.autogenerate, rev_id=rev_id)

    _run(engine, lambda: migrations.run(engine, history, write), history.label)
    [written] = history.folder.glob(f"{rev_id}_*.py")
    print(f"wrote {written}: review it, then nestor db upgrade")
    return 0


def _next_number(history: History) -> int:
    numbers = [int(m.group()) for rev in history.revisions() if (m := re.match(r"\d+", rev))]
    return max(numbers, default=0) + 1


def check_problems(root: Any, deploy: bool) -> list[str]:
    """`nestor check`: drift (always) and pending migrations (deploy checks), when the database exists."""
    found = root[migrations.HISTORIES]
    url = root[DATABASE_URL]
    if not found or (url.startswith("sqlite") and not _sqlite_file(url, root[BASE_DIR])):
        return []  # nothing to compare yet: start-up creates the database and migrates it
    engine = engine_for(url, root[BASE_DIR])

    async def read() -> list[str]:
        problems = []
        behind = await migrations.pending(engine, found)
        for label, revisions in behind.items():
            if deploy:
                problems.append(f"{label}: {len(revisions)} pending migration(s) ({', '.join(revisions)}): "
                                "run `nestor db upgrade` before starting this version")
        for history in found:
            if history.label not in behind:
                problems += [f"{history.label}: {line}: a migration is missing" for line in await migrations.drift(engine, history)]
        return problems

    try:
        return _run(engine, read)
    except ConfigError as e:
        return [f"cannot check the migrations: {e}"]


def _sqlite_file(url: str, base: Path) -> bool:
    from sqlalchemy.engine import make_url

    database = make_url(url).database or ""
    return database == ":memory:" or (Path(database) if Path(database).is_absolute() else base / database).exists()
