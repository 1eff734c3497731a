"""Chat storage: the messages table (chat's own MetaData), the rules for rooms, names and texts.

Knows nothing of HTTP or websockets: handlers translate the exceptions at the edge. Every
query takes the kernel's `AsyncEngine` (SQLite or PostgreSQL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

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
    """Store a message (already validated) and return it with its id."""
    created = datetime.now(UTC)
    async with engine.begin() as conn:
        result = await conn.execute(
            messages.insert().values(room=room, name=name, text=text, created_at=created)
        )
    return Message(result.inserted_primary_key[0], room, name, text, created)


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
    """Return the rooms with history, the most recently active first."""
    last_id = sa.func.max(messages.c.id)
    query = (
        sa.select(messages.c.room, sa.func.count().label("count"), sa.func.max(messages.c.created_at).label("last"))
        .group_by(messages.c.room)
        .order_by(last_id.desc())
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [Room(row.room, row.count, _utc(row.last)) for row in rows]


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
