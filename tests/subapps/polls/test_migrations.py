"""Polls' migrations: 0002 (the list's index and the search index) upgrades a database holding
questions, finds them by text, and downgrades to 0001 keeping every row. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

import nestor_subapps.polls
from nestor.db import engine_for
from nestor.migrations import History, current, migrations_folder, run, upgrade
from nestor_subapps.polls import db

QUESTIONS = 60
HISTORY = History("polls", migrations_folder(nestor_subapps.polls.subapp), db.metadata)


@pytest.fixture
async def engine(database_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on this test's empty database, migrated to 0001 and holding QUESTIONS questions."""
    engine = engine_for(database_url, tmp_path)
    try:
        await upgrade(engine, [HISTORY], target="0001")
        for n in range(QUESTIONS):
            await db.create_question(engine, f"Question {n}: {'tea' if n % 3 else 'Coffee'}?", ["Yes", "No"])
        yield engine
    finally:
        await engine.dispose()


async def revision(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await current(conn, HISTORY)


async def schema(engine: AsyncEngine) -> dict[str, set[str]]:
    """The polls_question indexes and, on SQLite, the search tables and triggers the database has."""

    def read(sync: sa.Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(sync)
        found = {"indexes": {index["name"] for index in inspector.get_indexes("polls_question")}}
        if sync.dialect.name == "sqlite":
            rows = sync.execute(sa.text("SELECT type, name FROM sqlite_master WHERE name LIKE 'polls_question_fts%'"))
            found["search"] = {f"{kind} {name}" for kind, name in rows if kind in ("table", "trigger")}
        return found

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def downgrade(engine: AsyncEngine, target: str) -> None:
    await run(engine, HISTORY, lambda config: command.downgrade(config, target))


async def all_rows(engine: AsyncEngine) -> list[tuple[int, str]]:
    async with engine.connect() as conn:
        query = sa.select(db.questions.c.id, db.questions.c.text).order_by(db.questions.c.id)
        return [tuple(row) for row in await conn.execute(query)]


async def test_upgrade_indexes_the_questions_already_there(engine: AsyncEngine) -> None:
    before = await all_rows(engine)
    await upgrade(engine, [HISTORY])
    assert await revision(engine) == {"0002"}
    assert await all_rows(engine) == before
    found = await db.list_questions(engine, q="COFFEE", limit=100)
    assert [q.text for q in found] == [f"Question {n}: Coffee?" for n in reversed(range(0, QUESTIONS, 3))]
    assert "polls_question_created_at_id" in (await schema(engine))["indexes"]


async def test_upgrade_makes_each_databases_search_index(engine: AsyncEngine) -> None:
    await upgrade(engine, [HISTORY])
    found = await schema(engine)
    if engine.dialect.name == "postgresql":
        assert "polls_question_text_trgm" in found["indexes"]
    else:
        assert found["search"] >= {  # with FTS5's own tables (polls_question_fts_data, ...)
            "table polls_question_fts",
            "trigger polls_question_fts_insert",
            "trigger polls_question_fts_delete",
            "trigger polls_question_fts_update",
        }


async def test_downgrade_to_0001_removes_the_indexes_and_keeps_every_row(engine: AsyncEngine) -> None:
    before = await all_rows(engine)
    await upgrade(engine, [HISTORY])
    await downgrade(engine, "0001")
    assert await revision(engine) == {"0001"}
    assert await all_rows(engine) == before
    gone = {"indexes": set()} if engine.dialect.name == "postgresql" else {"indexes": set(), "search": set()}
    assert await schema(engine) == gone


async def test_upgrade_after_a_downgrade_indexes_questions_asked_meanwhile(engine: AsyncEngine) -> None:
    await upgrade(engine, [HISTORY])
    await downgrade(engine, "0001")
    await db.create_question(engine, "Asked at 0001: green tea?", ["Yes", "No"])
    await upgrade(engine, [HISTORY])
    assert [q.text for q in await db.list_questions(engine, q="green", limit=10)] == ["Asked at 0001: green tea?"]
