"""The chat API's declared types: what a body or a query must hold, and what answers look like.

Lengths and characters are checked by `db.validate_message` (shared with the websocket),
with messages of its own; here they are documented for the OpenAPI document only.
"""

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .db import MAX_NAME

MAX_BEFORE = 9_999_999_999  # any id above the last one means the latest page; ids have at most ten digits


class NewMessage(msgspec.Struct):
    """A message to post in the room, as someone (anonymous by default)."""

    text: Annotated[str, Meta(
        description="The message (max_text characters at most)", examples=["Hello!"],
        extra_json_schema={"minLength": 1}, extra={"invalid": "The text must be a string."},
    )]
    name: Annotated[str | None, Meta(
        description="The name shown with it", examples=["Ada"], extra_json_schema={"maxLength": MAX_NAME},
        extra={"invalid": "The name must be text."},
    )] = None


class PageQuery(msgspec.Struct):
    """How many: `limit` defaults to the level's page_size, capped by max_limit."""

    limit: Annotated[int, Meta(ge=1, le=MAX_BEFORE)] | None = None


class HistoryQuery(msgspec.Struct):
    """A page of history: the messages before the id `before` (the latest ones without it)."""

    limit: Annotated[int, Meta(ge=1, le=MAX_BEFORE)] | None = None
    before: Annotated[int, Meta(ge=1, le=MAX_BEFORE)] | None = None


class Message(msgspec.Struct):
    """A stored message."""

    type: Literal["message"]
    id: int
    room: str
    name: str
    text: str
    created_at: datetime


class MessagePage(msgspec.Struct):
    """Messages oldest first; `next` is the URL of the older page, if there is one."""

    items: list[Message]
    limit: int
    before: int | None
    next: str | None


class Room(msgspec.Struct):
    room: str
    people: int
    messages: int
    last_message_at: datetime | None


class RoomList(msgspec.Struct):
    """Rooms with people or history: the most people first, then the latest active."""

    items: list[Room]
    limit: int
