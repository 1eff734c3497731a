"""The room list from chat_room: counts and order after posts (also concurrent ones), and the
pruning of old messages (`db.prune`, and `keep_days` at start-up). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine

import nestor_subapps.chat
from nestor import DB
from nestor.db import engine_for
from nestor.migrations import History, migrations_folder, upgrade
from nestor_subapps.chat import db

from .conftest import BuildChat, Client, eventually, post_message

HISTORY = History("chat", migrations_folder(nestor_subapps.chat.subapp), db.metadata)


async def room_list(client: Client) -> list[dict[str, Any]]:
    async with client.get("/chat/api/rooms") as resp:
        assert resp.status == 200
        return (await resp.json())["items"]


async def counts(client: Client) -> list[tuple[str, int]]:
    """The listed rooms with their message counts, in the list's order."""
    return [(room["room"], room["messages"]) for room in await room_list(client)]


async def add_messages(engine: AsyncEngine, rooms: list[str], days_ago: float = 0) -> list[db.Message]:
    """Post one message to each room in turn; with `days_ago`, written that long ago (its room's
    summary says so too, as add_message would have written it then)."""
    added = [await db.add_message(engine, room, "Ada", f"message {n} of {room}") for n, room in enumerate(rooms)]
    if days_ago:
        then = datetime.now(UTC) - timedelta(days=days_ago)
        ids = [message.id for message in added]
        async with engine.begin() as conn:
            await conn.execute(db.messages.update().where(db.messages.c.id.in_(ids)).values(created_at=then))
            await conn.execute(
                db.room_summaries.update().where(db.room_summaries.c.last_id.in_(ids)).values(last_message_at=then)
            )
    return added


async def texts(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list(await conn.scalars(sa.select(db.messages.c.text).order_by(db.messages.c.id)))


async def test_rooms_are_counted_and_the_most_recently_active_comes_first(client: Client) -> None:
    for n in range(3):
        await post_message(client, "lobby", f"lobby {n}")
    await post_message(client, "dev", "dev 0")
    await post_message(client, "ops", "ops 0")
    assert await counts(client) == [("ops", 1), ("dev", 1), ("lobby", 3)]
    last = await post_message(client, "lobby", "back in the lobby")
    listed = await room_list(client)
    assert [(room["room"], room["messages"]) for room in listed] == [("lobby", 4), ("ops", 1), ("dev", 1)]
    assert listed[0]["last_message_at"] == last["created_at"]


async def test_the_room_list_is_cut_at_limit_keeping_the_latest_rooms(client: Client) -> None:
    for room in ("a", "b", "c"):
        await post_message(client, room, "hi")
    async with client.get("/chat/api/rooms?limit=2") as resp:
        assert [room["room"] for room in (await resp.json())["items"]] == ["c", "b"]


async def test_concurrent_posts_to_one_room_are_all_counted(client: Client) -> None:
    await post_message(client, "quiet", "before the rush")
    posted = await asyncio.gather(*(post_message(client, "busy", f"m{n}") for n in range(20)))
    newest = max(posted, key=lambda message: message["id"])
    listed = await room_list(client)
    assert [(room["room"], room["messages"]) for room in listed] == [("busy", 20), ("quiet", 1)]
    assert listed[0]["last_message_at"] == newest["created_at"]
    async with client.get("/chat/api/rooms/busy/messages?limit=50") as resp:
        assert len((await resp.json())["items"]) == 20


async def test_prune_deletes_only_old_messages_fixes_counts_and_drops_emptied_rooms(client: Client) -> None:
    engine = client.app[DB]
    await add_messages(engine, ["gone", "mixed", "gone", "mixed", "mixed"], days_ago=10)
    await add_messages(engine, ["mixed", "fresh"])
    assert await counts(client) == [("fresh", 1), ("mixed", 4), ("gone", 2)]

    # batch=2: the old messages take three batches, the last of them stopping at a new one.
    assert await db.prune(engine, datetime.now(UTC) - timedelta(days=1), batch=2) == 5
    assert await texts(engine) == ["message 0 of mixed", "message 1 of fresh"]
    assert await counts(client) == [("fresh", 1), ("mixed", 1)]
    assert await db.prune(engine, datetime.now(UTC) - timedelta(days=1)) == 0

    await post_message(client, "gone", "a room emptied by pruning starts again")
    assert await counts(client) == [("gone", 1), ("fresh", 1), ("mixed", 1)]


async def test_prune_keeps_messages_newer_than_the_cutoff(client: Client) -> None:
    engine = client.app[DB]
    await add_messages(engine, ["lobby"], days_ago=3)
    await add_messages(engine, ["lobby"], days_ago=1)
    assert await db.prune(engine, datetime.now(UTC) - timedelta(days=2)) == 1
    assert await texts(engine) == ["message 0 of lobby"]  # the one from a day ago
    assert await counts(client) == [("lobby", 1)]


async def migrated_with_old_and_new_messages(database_url: str, tmp_path: Path) -> None:
    """Before the app starts: chat's tables, a room of old messages and a room with old and new ones."""
    engine = engine_for(database_url, tmp_path)
    try:
        await upgrade(engine, [HISTORY])
        await add_messages(engine, ["old", "mixed", "old"], days_ago=40)
        await add_messages(engine, ["mixed"], days_ago=2)
    finally:
        await engine.dispose()


async def test_keep_days_prunes_old_messages_at_start_up(
    aiohttp_client: AiohttpClient, make_chat: BuildChat, database_url: str, tmp_path: Path
) -> None:
    await migrated_with_old_and_new_messages(database_url, tmp_path)
    client = await aiohttp_client(make_chat({"chat": {"keep_days": 30}}))
    assert await eventually(lambda: counts(client), [("mixed", 1)]) == [("mixed", 1)]
    async with client.get("/chat/api/rooms/mixed/messages") as resp:
        assert [m["text"] for m in (await resp.json())["items"]] == ["message 0 of mixed"]


async def test_by_default_every_message_is_kept(
    aiohttp_client: AiohttpClient, make_chat: BuildChat, database_url: str, tmp_path: Path
) -> None:
    await migrated_with_old_and_new_messages(database_url, tmp_path)
    client = await aiohttp_client(make_chat())
    await asyncio.sleep(0.5)  # time enough for a pruning that should not happen
    assert await counts(client) == [("mixed", 2), ("old", 2)]
