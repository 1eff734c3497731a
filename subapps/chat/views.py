"""The chat pages: the list of rooms, and a room's page (its script talks to the websocket)."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from nestor import DB, PAGE_SIZE

from . import db
from .hub import HUB, room_list
from .settings import HISTORY, MAX_TEXT


async def index(request: web.Request) -> web.Response:
    wanted = request.query.get("room")
    error = ""
    if wanted is not None:
        try:
            room = db.check_room(wanted.strip())
        except db.InvalidRoom as e:
            error = str(e)
        else:
            raise web.HTTPSeeOther(request.app.router["room"].url_for(room=room))
    context = {"rooms": await room_list(request, request.config_dict[PAGE_SIZE]), "error": error, "wanted": wanted or ""}
    return aiohttp_jinja2.render_template("chat/index.html", request, context, status=400 if error else 200)


@aiohttp_jinja2.template("chat/room.html")
async def room(request: web.Request) -> dict[str, Any]:
    try:
        name = db.check_room(request.match_info["room"])
    except db.InvalidRoom as e:
        raise web.HTTPBadRequest(text=str(e)) from e
    recent = await db.history(request.config_dict[DB], name, limit=request.config_dict[HISTORY])
    return {
        "room": name,
        "messages": recent,
        "people": request.app[HUB].people().get(name, 0),
        "max_text": request.config_dict[MAX_TEXT],
        "max_name": db.MAX_NAME,
    }
