"""The chat pages: the room list with people counts, a room's page, and bad room names."""

from __future__ import annotations

import re

import pytest

from .conftest import Client, join, post_message


async def test_index_lists_rooms_with_how_many_people_are_in_each(client: Client) -> None:
    await join(client, "lobby", "Ada")
    await join(client, "lobby", "Bob")
    await post_message(client, "archive", "old news")
    async with client.get("/chat/") as resp:
        assert resp.status == 200
        page = await resp.text()
    rows = dict(re.findall(r'<a href="/chat/([a-z]+)">\1</a></th>\s*<td class="people">(\d+)</td>', page))
    assert rows == {"lobby": "2", "archive": "0"}


async def test_index_without_rooms_invites_to_start_one(client: Client) -> None:
    async with client.get("/chat/") as resp:
        assert resp.status == 200
        assert "No rooms yet" in await resp.text()


async def test_go_to_room_form_redirects_to_the_room(client: Client) -> None:
    async with client.get("/chat/?room=lobby", allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/chat/lobby"


async def test_go_to_room_form_with_a_bad_name_says_why(client: Client) -> None:
    async with client.get("/chat/?room=Not+OK") as resp:
        assert resp.status == 400
        page = await resp.text()
    assert "is not valid" in page
    assert 'aria-invalid="true"' in page


async def test_room_page_shows_history_and_loads_its_script_from_a_file(client: Client) -> None:
    await post_message(client, "lobby", "<b>not bold</b>", name="Ada")
    async with client.get("/chat/lobby") as resp:
        assert resp.status == 200
        page = await resp.text()
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page
    assert 'data-socket="/chat/ws/lobby"' in page
    assert '<script src="/chat/static/chat.js"></script>' in page
    assert re.search(r"<script>|<script [^>]*>[^<]", page) is None  # no inline script: the CSP forbids it


async def test_room_script_is_served(client: Client) -> None:
    async with client.get("/chat/static/chat.js") as resp:
        assert resp.status == 200
        assert "new WebSocket(" in await resp.text()


@pytest.mark.parametrize("room", ["Lobby", "_x", "a" * 41, "caf%C3%A9", "ws"])
async def test_bad_room_name_is_a_400_page_saying_what_a_name_may_be(client: Client, room: str) -> None:
    async with client.get(f"/chat/{room}") as resp:
        assert resp.status == 400
        assert resp.content_type == "text/html"
        assert "Room name" in await resp.text()


async def test_chat_is_ready_on_health(client: Client) -> None:
    async with client.get("/health") as resp:
        assert resp.status == 200
        assert (await resp.json())["subapps"]["chat"] == {"ready": True}
