"""Chat storage rules: room names, names and texts; history order on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from nestor import DB
from nestor_subapps.chat import db

from .conftest import Client


@pytest.mark.parametrize("room", ["lobby", "a", "room-1", "r_2", "0day", "x" * 40])
def test_valid_room_names_are_accepted(room: str) -> None:
    assert db.check_room(room) == room


@pytest.mark.parametrize("room", ["", "Lobby", "-a", "_a", "x" * 41, "a b", "a/b", "café", "a.b", "api", "ws", "static"])
def test_invalid_room_names_are_refused(room: str) -> None:
    with pytest.raises(db.InvalidRoom, match="Room name"):
        db.check_room(room)


@pytest.mark.parametrize(("name", "shown"), [(None, "anonymous"), ("", "anonymous"), ("  Ada  ", "Ada")])
def test_name_is_stripped_and_anonymous_when_empty(name: str | None, shown: str) -> None:
    assert db.validate_message("hi", name, 100) == ("hi", shown)


def test_text_may_span_lines_but_not_hold_other_control_characters() -> None:
    assert db.validate_message("one\ntwo\tthree", "Ada", 100) == ("one\ntwo\tthree", "Ada")
    with pytest.raises(db.InvalidMessage) as caught:
        db.validate_message("nul \x00 here", "Ada", 100)
    assert list(caught.value.errors) == ["text"]


def test_every_wrong_field_is_reported_at_once() -> None:
    with pytest.raises(db.InvalidMessage) as caught:
        db.validate_message("", "line\nbreak", 100)
    assert sorted(caught.value.errors) == ["name", "text"]


async def test_datetimes_come_back_in_utc_on_every_database(client: Client) -> None:
    await db.add_message(client.app[DB], "lobby", "Ada", "hi")
    (room,) = await db.rooms(client.app[DB], limit=5)
    (message,) = await db.history(client.app[DB], "lobby", limit=5)
    assert room.last_message_at.utcoffset() is not None
    assert room.last_message_at == message.created_at


async def test_unicode_text_is_stored_and_read_back_unchanged(client: Client) -> None:
    engine = client.app[DB]
    stored = await db.add_message(engine, "lobby", "Zoë", "naïve 🎉 — 日本語")
    assert await db.history(engine, "lobby", limit=5) == [stored]
