"""Chat storage: the messages table and its per-room summary (chat's own MetaData), the rules
for rooms, names and texts, and the pruning of old messages.

`chat_room` holds one row per room with history: how many messages it has and its newest
one, kept in step by `add_message` (an upsert in the transaction of the insert) and `prune`,
so that the room list reads a few rows instead of grouping every message.

Knows nothing of HTTP or websockets: handlers translate the exceptions at the edge. Every
query takes the kernel's `AsyncEngine` (SQLite or PostgreSQL).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

logger = logging.getLogger("nestor_subapps.chat")

MAX_ROOM = 40
MAX_NAME = 40
ANONYMOUS = "anonymous"
MAX_ID = 2**31 - 1  # the largest INTEGER on PostgreSQL
ROOM_RE = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{MAX_ROOM - 1}}}")
RESERVED_ROOMS = frozenset({"api", "ws", "static"})  # path segments the chat app uses itself

metadata = sa.MetaData()
messages = sa.Table(
    "chat_message",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("room", sa.String(MAX_ROOM), nullable=False),
    sa.Column("name", sa.String(MAX_NAME), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("chat_message_room_id", "room", "id"),  # history pages: one room, by id
)
room_summaries = sa.Table(
    "chat_room",
    metadata,
    sa.Column("room", sa.String(MAX_ROOM), primary_key=True),
    sa.Column("messages", sa.Integer, nullable=False),  # how many messages the room has
    sa.Column("last_id", sa.Integer, nullable=False),  # the id of its newest message
    sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("chat_room_last_id", "last_id"),  # the room list: the most recently active first
)


class InvalidRoom(ValueError):
    """A room name breaks the rules; the message says which one."""


class InvalidMessage(ValueError):
    """A message breaks the rules; `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Message:
    """One stored chat message."""

    id: int
    room: str
    name: str
    text: str
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        """Return the message as the API and the websockets show it."""
        return {
            "type": "message",
            "id": self.id,
            "room": self.room,
            "name": self.name,
            "text": self.text,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Room:
    """A room that has history: how many messages and when the last one came."""

    name: str
    messages: int
    last_message_at: datetime


def check_room(room: str) -> str:
    """Return a valid room name; raise InvalidRoom saying what a name may be."""
    if room in RESERVED_ROOMS:
        raise InvalidRoom(f"Room name {room!r} is reserved; choose another one.")
    if not ROOM_RE.fullmatch(room):
        raise InvalidRoom(
            f"Room name {room[:MAX_ROOM + 10]!r} is not valid: use 1 to {MAX_ROOM} lower-case letters, "
            "digits, '-' or '_', starting with a letter or a digit."
        )
    return room


# Databases refuse NUL and lone surrogates (JSON can carry both); a chat needs no controls.
# Unicode's categories Cc and Cs, as character ranges: 50x faster than unicodedata per character.
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_BUT_TAB_NEWLINE_OR_SURROGATE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _bad_characters(text: str, *, lines: bool = False) -> bool:
    """True when `text` has a control character (tabs and newlines allowed with `lines`) or a lone surrogate."""
    pattern = _CONTROL_BUT_TAB_NEWLINE_OR_SURROGATE if lines else _CONTROL_OR_SURROGATE
    return pattern.search(text) is not None


def check_name(name: object) -> str:
    """Return a display name (anonymous when none is given); raise InvalidMessage."""
    if name is None:
        return ANONYMOUS
    if not isinstance(name, str):
        raise InvalidMessage({"name": "The name must be text."})
    name = name.strip()
    if len(name) > MAX_NAME:
        raise InvalidMessage({"name": f"At most {MAX_NAME} characters, please (this one has {len(name)})."})
    if _bad_characters(name):
        raise InvalidMessage({"name": "The name contains control characters or broken Unicode."})
    return name or ANONYMOUS


def validate_message(text: object, name: object, max_text: int) -> tuple[str, str]:
    """Return the message's text and name, stripped; raise InvalidMessage with field errors."""
    errors: dict[str, str] = {}
    clean = text.strip() if isinstance(text, str) else ""
    if not isinstance(text, str):
        errors["text"] = "The text must be a string."
    elif not clean:
        errors["text"] = "Write something: the text is empty."
    elif len(clean) > max_text:
        errors["text"] = f"At most {max_text} characters, please (this one has {len(clean)})."
    elif _bad_characters(clean, lines=True):
        errors["text"] = "The text contains control characters or broken Unicode."
    try:
        clean_name = check_name(name)
    except InvalidMessage as e:
        errors.update(e.errors)
    if errors:
        raise InvalidMessage(errors)
    return clean, clean_name


async def add_message(engine: AsyncEngine, room: str, name: str, text: str) -> Message:
    """Store a message (already validated) and return it with its id; count it in its room's summary."""
    created = datetime.now(UTC)
    async with engine.begin() as conn:
        result = await conn.execute(
            messages.insert().values(room=room, name=name, text=text, created_at=created)
        )
        message_id = result.inserted_primary_key[0]
        await conn.execute(_count_message(conn, room, message_id, created))
    return Message(message_id, room, name, text, created)


def _count_message(conn: AsyncConnection, room: str, message_id: int, created: datetime) -> sa.Insert:
    """The upsert adding one message to its room's row in chat_room (the row made for a room's first).

    The newest message stays the one with the highest id: on PostgreSQL, two messages to one
    room may commit in the other order than their ids were given.
    """
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(room_summaries)
    insert = insert.values(room=room, messages=1, last_id=message_id, last_message_at=created)
    newer = insert.excluded.last_id > room_summaries.c.last_id
    return insert.on_conflict_do_update(
        index_elements=[room_summaries.c.room],
        set_={
            "messages": room_summaries.c.messages + 1,
            "last_id": sa.case((newer, insert.excluded.last_id), else_=room_summaries.c.last_id),
            "last_message_at": sa.case(
                (newer, insert.excluded.last_message_at), else_=room_summaries.c.last_message_at
            ),
        },
    )


async def history(engine: AsyncEngine, room: str, *, limit: int, before: int | None = None) -> list[Message]:
    """Return the room's last `limit` messages with an id below `before`, oldest first."""
    query = sa.select(messages).where(messages.c.room == room)
    if before is not None and before <= MAX_ID:  # above it, every id is below: no bound
        query = query.where(messages.c.id < before)
    query = query.order_by(messages.c.id.desc()).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [_message(row) for row in reversed(rows)]


async def rooms(engine: AsyncEngine, *, limit: int) -> list[Room]:
    """Return the rooms with history, the most recently active first (from chat_room: `limit` rows read)."""
    query = (
        sa.select(room_summaries.c.room, room_summaries.c.messages, room_summaries.c.last_message_at)
        .order_by(room_summaries.c.last_id.desc())
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [Room(row.room, row.messages, _utc(row.last_message_at)) for row in rows]


async def prune(engine: AsyncEngine, older_than: datetime, batch: int = 5000) -> int:
    """Delete the messages written before `older_than`; return how many were deleted.

    Ids grow with time, so the old messages are the first ones by id: each batch reads the
    first `batch` ids, deletes the leading run older than the cutoff and takes them off their
    rooms' counts (a room left with none leaves the list), in a transaction of its own. It
    stops at the first batch with no old message: no batch scans the table.
    """
    cutoff = (older_than if older_than.tzinfo is not None else older_than.replace(tzinfo=UTC)).astimezone(UTC)
    total = 0
    while True:
        async with engine.begin() as conn:
            first = sa.select(messages.c.id, messages.c.created_at).order_by(messages.c.id).limit(batch)
            rows = (await conn.execute(first)).all()
            last_old = None
            for row in rows:
                if _utc(row.created_at) >= cutoff:
                    break
                last_old = row.id
            if last_old is None:
                break
            deleted = await conn.execute(
                messages.delete()
                .where(messages.c.id <= last_old, messages.c.created_at < cutoff)
                .returning(messages.c.room)
            )
            per_room = Counter(deleted.scalars())
            for room, count in sorted(per_room.items()):  # in one order: no deadlock with another pruner
                await conn.execute(
                    room_summaries.update()
                    .where(room_summaries.c.room == room)
                    .values(messages=room_summaries.c.messages - count)
                )
            if per_room:
                await conn.execute(
                    room_summaries.delete().where(
                        room_summaries.c.room.in_(sorted(per_room)), room_summaries.c.messages <= 0
                    )
                )
            total += sum(per_room.values())
        if last_old != rows[-1].id or len(rows) < batch:
            break  # a newer message or the table's end came in this batch: the next has no old one
    logger.info("chat: pruned %d messages written before %s", total, cutoff.isoformat(timespec="seconds"))
    return total


async def answers(engine: AsyncEngine) -> None:
    """Read one message id: the table answers (the readiness check; counting every row took
    33 ms a check at a million messages, this reads one index entry)."""
    async with engine.connect() as conn:
        await conn.scalar(sa.select(messages.c.id).limit(1))


def _utc(value: datetime) -> datetime:
    # SQLite keeps no time zone; every value was written in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _message(row: sa.Row) -> Message:
    return Message(row.id, row.room, row.name, row.text, _utc(row.created_at))
