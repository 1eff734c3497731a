"""Migrations per sub-app: start-up applies them (development) or refuses (production), rows survive
upgrades and downgrades, databases made before migrations are adopted, drift is caught.

Each schema test runs on a private SQLite file and on a real PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine

import nestor_subapps.polls
from nestor import DB, ConfigError
from nestor.db import engine_for
from nestor.migrations import HISTORIES, History, drift, pending, upgrade

from ..conftest import MakeApp
from ..fixtures import migrating
from ..fixtures.cli_run import nestor, write_config
from ..fixtures.postgres import database_url, empty_database, postgres_server  # noqa: F401 (fixtures)
from ..fixtures.served import serve


@contextlib.asynccontextmanager
async def started(app: web.Application) -> AsyncIterator[web.Application]:
    """Run the app's start-up (migrations included) and, after the block, its teardown."""
    runner = web.AppRunner(app)
    try:
        await runner.setup()  # a start-up that fails has started the engine: cleanup disposes of it, as run_app does
        yield app
    finally:
        await runner.cleanup()


async def rows(engine: AsyncEngine, query: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(sa.text(query))]


def notes_app(make_app: MakeApp, url: str, folder: Path, version: int, **root: Any) -> web.Application:
    return make_app({"nestor": {"database_url": url, **root}}, specs=[migrating.spec(folder, version)])


async def test_a_fresh_database_is_migrated_at_start_up(make_app: MakeApp, database_url: str, tmp_path: Path) -> None:
    folder = migrating.write_revisions(tmp_path / "migrations", 2)
    async with started(notes_app(make_app, database_url, folder, 2)) as app:
        engine = app[DB]
        assert await rows(engine, "SELECT version_num FROM alembic_version_notes") == [("0002",)]
        await rows(engine, "SELECT id, text, pinned FROM notes_note")  # the columns exist


async def test_upgrade_and_downgrade_keep_every_row(make_app: MakeApp, database_url: str, tmp_path: Path) -> None:
    folder = migrating.write_revisions(tmp_path / "migrations", 1)
    async with started(notes_app(make_app, database_url, folder, 1)) as app:
        engine = app[DB]
        async with engine.begin() as conn:
            for n in range(1, 51):
                await conn.execute(sa.text("INSERT INTO notes_note (id, text) VALUES (:n, :t)"), {"n": n, "t": f"note {n}"})
                await conn.execute(sa.text("INSERT INTO notes_tag (note_id, name) VALUES (:n, 'x')"), {"n": n})
    migrating.write_revisions(folder, 2)  # v2 of the code: a NOT NULL column with a default, an index
    app = notes_app(make_app, database_url, folder, 2)
    async with started(app):
        assert await rows(app[DB], "SELECT count(*), sum(CASE WHEN pinned THEN 1 ELSE 0 END) FROM notes_note") == [(50, 0)]
        assert await rows(app[DB], "SELECT count(*) FROM notes_tag") == [(50,)]
    result = nestor_db(tmp_path, database_url, folder, "downgrade", "notes", "0001")
    assert result.returncode == 0, result.stderr
    engine = engine_for(database_url, tmp_path)
    try:
        assert await rows(engine, "SELECT count(*), min(text), max(id) FROM notes_note") == [(50, "note 1", 50)]
        assert await rows(engine, "SELECT count(*) FROM notes_tag") == [(50,)]  # no cascade when the table was rebuilt
        assert await rows(engine, "SELECT version_num FROM alembic_version_notes") == [("0001",)]
    finally:
        await engine.dispose()


async def test_renaming_a_column_rebuilds_the_table_with_its_rows(
    make_app: MakeApp, database_url: str, tmp_path: Path
) -> None:
    folder = migrating.write_revisions(tmp_path / "migrations", 2)
    async with started(notes_app(make_app, database_url, folder, 2)) as app:
        async with app[DB].begin() as conn:
            await conn.execute(sa.text("INSERT INTO notes_note (id, text, pinned) VALUES (7, 'kept', true)"))
            await conn.execute(sa.text("INSERT INTO notes_tag (note_id, name) VALUES (7, 'child')"))
    migrating.write_revisions(folder, 3)
    app = notes_app(make_app, database_url, folder, 3)
    async with started(app):
        assert await rows(app[DB], "SELECT id, body, pinned FROM notes_note") == [(7, "kept", True)]
        assert await rows(app[DB], "SELECT note_id, name FROM notes_tag") == [(7, "child")]


async def test_a_database_made_before_migrations_is_adopted_untouched(make_app: MakeApp, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    engine = engine_for(url, tmp_path)
    try:
        # What the previous release's tables() did at start-up: create_all, then the app used them.
        polls = nestor_subapps.polls
        async with engine.begin() as conn:
            await conn.run_sync(polls.db.metadata.create_all)
        question = await polls.db.create_question(engine, "Still here?", ["yes", "no"])
        await polls.db.vote(engine, question.id, question.choices[0].id)
    finally:
        await engine.dispose()
    app = make_app({"nestor": {"database_url": url}}, specs=[polls.subapp])
    async with started(app):
        # Stamped at the baseline 0001 with no data touched, then upgraded to the head (0002),
        # whose search index was built over the rows already there.
        assert await rows(app[DB], "SELECT version_num FROM alembic_version_polls") == [("0002",)]
        kept = await polls.db.get_question(app[DB], question.id)
        assert (kept.text, [c.votes for c in kept.choices]) == ("Still here?", [1, 0])
        assert await rows(app[DB], "SELECT count(*) FROM polls_question") == [(1,)]  # no sample questions added
        assert [q.id for q in await polls.db.list_questions(app[DB], q="still", limit=10)] == [question.id]


async def test_production_refuses_to_start_with_pending_migrations(make_app: MakeApp, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'prod.sqlite3'}"
    folder = migrating.write_revisions(tmp_path / "migrations", 1)
    async with started(notes_app(make_app, url, folder, 1)):
        pass
    migrating.write_revisions(folder, 2)
    with pytest.raises(ConfigError, match=r"pending migrations \(notes: 0002\): run `nestor db upgrade` before"):
        async with started(notes_app(make_app, url, folder, 2, mode="production")):
            pass


async def test_drift_makes_the_subapp_not_ready_and_its_errors_503(
    aiohttp_client: AiohttpClient, make_app: MakeApp, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'drift.sqlite3'}"
    folder = migrating.write_revisions(tmp_path / "migrations", 1)
    # The code of v2 (a `pinned` column) without its migration: the classic forgotten revision.
    app = make_app({"nestor": {"database_url": url}}, specs=[migrating.spec(folder, 2)])
    client = await aiohttp_client(app)
    async with client.get("/health") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["subapps"]["notes"] == {"ready": False, "error": "its tables do not match its code: see nestor db status"}
    async with client.get("/notes/", headers={"Accept": "application/json"}) as resp:
        assert resp.status == 503  # not a 500 with a traceback per request
        assert resp.headers["Retry-After"]
    assert await drift(app[DB], app[HISTORIES][-1]) == [
        "table notes_note: column pinned is in the code but not in the database"
    ]


async def test_two_engines_upgrading_at_once_on_postgresql_migrate_once(postgres_server: Any, tmp_path: Path) -> None:
    url = await empty_database(postgres_server)
    folder = migrating.write_revisions(tmp_path / "migrations", 3)
    history = [History("notes", folder, migrating.metadata(3))]
    engines = [engine_for(url, tmp_path) for _ in range(2)]
    try:
        done = await asyncio.gather(*(upgrade(engine, history) for engine in engines))
        assert sorted(len(lines) for lines in done) == [0, 1]  # one migrated, the other waited and found nothing to do
        assert await pending(engines[0], history) == {}
    finally:
        for engine in engines:
            await engine.dispose()


# -- the commands ---------------------------------------------------------------------------------


def nestor_db(tmp_path: Path, url: str, folder: Path, *args: str) -> Any:
    """Run `nestor db ARGS` on a project mounting the notes sub-app of tests.fixtures.migrating."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    (project / "notes_cli.py").write_text(
        "from pathlib import Path\nfrom tests.fixtures import migrating\n"
        f"subapp = migrating.spec(Path({str(folder)!r}), {max(int(p.name[:4]) for p in folder.glob('0*.py'))})\n",
        encoding="utf-8",
    )
    config = write_config(project, "", subapps='["notes_cli"]')
    config.write_text(config.read_text().replace(f"sqlite+aiosqlite:///{project / 'nestor.sqlite3'}", url))
    return nestor("db", *args, "--config", str(config))


def test_status_shows_revision_head_pending_and_drift(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}"
    folder = migrating.write_revisions(tmp_path / "migrations", 2)
    assert nestor_db(tmp_path, url, folder, "upgrade", "notes", "0001").returncode == 0
    status = nestor_db(tmp_path, url, folder, "status", "--json")
    assert status.returncode == 0, status.stderr
    kernel, row = json.loads(status.stdout)  # the kernel's own history comes first
    assert (kernel["subapp"], kernel["current"], kernel["pending"]) == ("nestor", [], ["0001"])
    assert (row["current"], row["head"], row["pending"]) == (["0001"], ["0002"], ["0002"])
    assert nestor_db(tmp_path, url, folder, "upgrade").returncode == 0
    kernel, row = json.loads(nestor_db(tmp_path, url, folder, "status", "--json").stdout)
    assert (kernel["current"], kernel["pending"]) == (["0001"], [])
    assert (row["current"], row["pending"], row["drift"]) == (["0002"], [], [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("upgrade", "nope"), "no mounted sub-app 'nope' has migrations (those that do: nestor, notes)"),
        (("downgrade", "notes", "9999"), "notes: Can't locate revision identified by '9999'"),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    folder = migrating.write_revisions(tmp_path / "migrations", 1)
    result = nestor_db(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}", folder, *args)
    assert result.returncode == 1
    assert result.stderr == f"nestor: error: {message}\n"


def test_revision_autogenerate_writes_what_the_code_added(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'auto.sqlite3'}"
    folder = migrating.write_revisions(tmp_path / "migrations", 1)
    assert nestor_db(tmp_path, url, folder, "upgrade").returncode == 0
    (tmp_path / "project" / "notes_cli.py").write_text(  # the code moves to v2: a `pinned` column
        "from pathlib import Path\nfrom tests.fixtures import migrating\n"
        f"subapp = migrating.spec(Path({str(folder)!r}), 2)\n",
        encoding="utf-8",
    )
    config = tmp_path / "project" / "nestor.toml"
    result = nestor("db", "revision", "notes", "-m", "pinned notes", "--autogenerate", "--config", str(config))
    assert result.returncode == 0, result.stderr
    [written] = folder.glob("0002_*.py")
    assert written.name == "0002_pinned_notes.py"
    text = written.read_text()
    assert "batch_op.add_column(sa.Column('pinned', sa.Boolean()" in text
    assert 'down_revision = "0001"' in text or "down_revision = '0001'" in text
    assert "drop_table" not in text.partition("def downgrade")[0]  # nothing of other tables
    upgraded = nestor("db", "upgrade", "--config", str(config))
    assert upgraded.returncode == 0, upgraded.stderr
    status = json.loads(nestor("db", "status", "--json", "--config", str(config)).stdout)
    [notes] = [row for row in status if row["subapp"] == "notes"]
    assert (notes["current"], notes["drift"]) == (["0002"], [])


def test_history_lists_each_revision_and_marks_the_current_one(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'h.sqlite3'}"
    folder = migrating.write_revisions(tmp_path / "migrations", 3)
    assert nestor_db(tmp_path, url, folder, "upgrade", "notes", "0002").returncode == 0
    result = nestor_db(tmp_path, url, folder, "history", "notes")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "->" in line]
    assert [line.split(",")[0] for line in lines] == ["0002 -> 0003 (head)", "0001 -> 0002 (current)", "<base> -> 0001"]


def test_check_reports_drift_and_with_deploy_pending_migrations(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.sqlite3'}"
    folder = migrating.write_revisions(tmp_path / "migrations", 2)
    assert nestor_db(tmp_path, url, folder, "upgrade", "notes", "0001").returncode == 0
    config = tmp_path / "project" / "nestor.toml"
    deploy = nestor("check", "--deploy", "--config", str(config))
    assert "notes: 1 pending migration(s) (0002): run `nestor db upgrade` before starting this version" in deploy.stdout
    migrating.write_revisions(folder, 1)  # the v2 code stays, its migration is gone: drift
    checked = nestor("check", "--config", str(config))
    assert checked.returncode == 1
    assert "notes: table notes_note: column pinned is in the code but not in the database: a migration is missing" in checked.stdout


async def test_two_servers_starting_at_once_on_postgresql_migrate_once(postgres_server: Any, tmp_path: Path) -> None:
    url = await empty_database(postgres_server)
    folder = migrating.write_revisions(tmp_path / "migrations", 3)
    servers = []
    for name in ("one", "two"):
        project = tmp_path / name
        project.mkdir()
        (project / "notes_cli.py").write_text(
            f"from pathlib import Path\nfrom tests.fixtures import migrating\nsubapp = migrating.spec(Path({str(folder)!r}), 3)\n"
        )
        servers.append(serve(project, f'subapps = ["notes_cli"]\ndatabase_url = "{url}"'))
    started_servers = await asyncio.gather(*servers)
    try:
        async with aiohttp.ClientSession() as session:
            for served in started_servers:
                async with session.get(served.url + "/notes/") as resp:
                    assert resp.status == 200, served.log()
    finally:
        for served in started_servers:
            await served.stop()
    applied = [s for s in started_servers if "migrations: notes: upgraded to 0003" in s.log()]
    assert len(applied) == 1, [s.log() for s in started_servers]


async def test_two_engines_upgrading_one_sqlite_file_at_once_migrate_once(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'both.sqlite3'}"
    folder = migrating.write_revisions(tmp_path / "migrations", 3)
    history = [History("notes", folder, migrating.metadata(3))]
    engines = [engine_for(url, tmp_path) for _ in range(2)]
    try:
        done = await asyncio.gather(*(upgrade(engine, history) for engine in engines))
        assert sorted(len(lines) for lines in done) == [0, 1]
    finally:
        for engine in engines:
            await engine.dispose()
