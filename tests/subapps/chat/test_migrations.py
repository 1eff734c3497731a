"""Chat's migrations: 0002 (the chat_room summary) upgrades a database holding messages and counts
them per room, and downgrades to 0001 keeping every message. On SQLite and PostgreSQL. And a
bad `keep_days` stops start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

import nestor_subapps.chat
from nestor import ConfigError
from nestor.db import engine_for
from nestor.migrations import History, current, migrations_folder, run, upgrade
from nestor_subapps.chat import db

from ...conftest import MakeApp

HISTORY = History("chat", migrations_folder(nestor_subapps.chat.subapp), db.metadata)
ROOMS = ["lobby", "dev", "lobby", "ops", "lobby", "dev", "lobby"]  # in the order their messages came
START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on this test's empty database, migrated to 0001 and holding a message per entry of ROOMS."""
    engine = engine_for(database_url, tmp_path)
    try:
        await upgrade(engine, [HISTORY], target="0001")
        async with engine.begin() as conn:  # as 0001's code wrote them: no chat_room to keep in step
            for n, room in enumerate(ROOMS):
                created = START + timedelta(minutes=n)
                await conn.execute(db.messages.insert().values(room=room, name="Ada", text=f"m{n}", created_at=created))
        yield engine
    finally:
        await engine.dispose()


async def revision(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return await current(conn, HISTORY)


async def downgrade(engine: AsyncEngine, target: str) -> None:
    await run(engine, HISTORY, lambda config: command.downgrade(config, target))


async def all_messages(engine: AsyncEngine) -> list[tuple[int, str, str]]:
    async with engine.connect() as conn:
        query = sa.select(db.messages.c.id, db.messages.c.room, db.messages.c.text).order_by(db.messages.c.id)
        return [tuple(row) for row in await conn.execute(query)]


async def summary(engine: AsyncEngine) -> dict[str, tuple[int, int]]:
    """chat_room as room -> (messages, last_id)."""
    async with engine.connect() as conn:
        query = sa.select(db.room_summaries.c.room, db.room_summaries.c.messages, db.room_summaries.c.last_id)
        return {row.room: (row.messages, row.last_id) for row in await conn.execute(query)}


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def test_upgrade_counts_the_messages_already_there_per_room(engine: AsyncEngine) -> None:
    before = await all_messages(engine)
    await upgrade(engine, [HISTORY])
    assert await revision(engine) == {"0002"}
    assert await all_messages(engine) == before
    last_id = {room: message_id for message_id, room, _ in before}
    assert await summary(engine) == {"lobby": (4, last_id["lobby"]), "dev": (2, last_id["dev"]), "ops": (1, last_id["ops"])}
    listed = await db.rooms(engine, limit=10)
    assert [(room.name, room.messages) for room in listed] == [("lobby", 4), ("dev", 2), ("ops", 1)]
    assert listed[0].last_message_at == START + timedelta(minutes=len(ROOMS) - 1)


async def test_after_the_upgrade_new_messages_are_counted(engine: AsyncEngine) -> None:
    await upgrade(engine, [HISTORY])
    message = await db.add_message(engine, "ops", "Bob", "after the upgrade")
    assert (await summary(engine))["ops"] == (2, message.id)
    assert [room.name for room in await db.rooms(engine, limit=10)] == ["ops", "lobby", "dev"]


async def test_downgrade_to_0001_drops_the_summary_and_keeps_every_message(engine: AsyncEngine) -> None:
    before = await all_messages(engine)
    await upgrade(engine, [HISTORY])
    await downgrade(engine, "0001")
    assert await revision(engine) == {"0001"}
    assert await all_messages(engine) == before
    assert "chat_room" not in await tables(engine)


async def test_upgrade_after_a_downgrade_counts_messages_written_meanwhile(engine: AsyncEngine) -> None:
    await upgrade(engine, [HISTORY])
    await downgrade(engine, "0001")
    async with engine.begin() as conn:
        await conn.execute(db.messages.insert().values(room="new", name="Ada", text="at 0001", created_at=START))
    await upgrade(engine, [HISTORY])
    assert (await summary(engine))["new"][0] == 1
    assert (await summary(engine))["lobby"][0] == 4


@pytest.mark.parametrize("value", [-1, -0.5, "30"])
def test_a_bad_keep_days_stops_start_up_naming_the_setting(make_app: MakeApp, value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        make_app({"chat": {"keep_days": value}}, specs=[nestor_subapps.chat.subapp])
    assert str(raised.value).startswith("test config [chat]: keep_days: ")
