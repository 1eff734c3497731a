"""The chat JSON API at /chat/api. Errors are application/problem+json (RFC 9457).

A message posted here is stored and reaches every websocket of the room, on every worker,
exactly as one sent over a websocket. When `api_token` is set at any level, every request
needs `Authorization: Bearer <api_token>`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nestor import API_TOKEN, DB, PAGE_SIZE, require_token
from nestor import inputs, jsonenc

from . import db
from .hub import post, room_list
from .settings import MAX_LIMIT, MAX_MESSAGE_SIZE, MAX_TEXT


def create_api_app() -> web.Application:
    app = web.Application(middlewares=[require_token(API_TOKEN)])
    app.add_routes(
        [
            web.get("/rooms", rooms, name="rooms"),
            web.get("/rooms/{room}/messages", messages, name="messages"),
            web.post("/rooms/{room}/messages", create_message, name="messages"),
        ]
    )
    return app


async def rooms(request: web.Request) -> web.Response:
    limit = min(query_int(request, "limit", request.config_dict[PAGE_SIZE]), request.config_dict[MAX_LIMIT])
    return jsonenc.json_response({"items": await room_list(request, limit), "limit": limit})


async def messages(request: web.Request) -> web.Response:
    room = room_of(request)
    limit = min(query_int(request, "limit", request.config_dict[PAGE_SIZE]), request.config_dict[MAX_LIMIT])
    before = query_int(request, "before", None)
    # One more than asked for says whether an older page exists.
    found = await db.history(request.config_dict[DB], room, limit=limit + 1, before=before)
    items, older = found[-limit:], found[:-limit]
    next_url = None
    if older:
        query = {"before": str(items[0].id), "limit": str(limit)}
        next_url = str(request.app.router["messages"].url_for(room=room).with_query(query))
    return jsonenc.json_response(
        {"items": [m.as_json() for m in items], "limit": limit, "before": before, "next": next_url}
    )


async def create_message(request: web.Request) -> web.Response:
    room = room_of(request)
    body = await inputs.read_json(request, MAX_MESSAGE_SIZE)
    try:
        text, name = db.validate_message(body.get("text"), body.get("name"), request.config_dict[MAX_TEXT])
    except db.InvalidMessage as e:
        return _invalid(request, "The message is not valid; see errors.", e.errors)
    message = await post(request, room, name, text)
    return jsonenc.json_response(message.as_json(), status=201)


# -- input and output ------------------------------------------------------------------------


def room_of(request: web.Request) -> str:
    """Return the room of the URL; 400 saying what a room name may be."""
    try:
        return db.check_room(request.match_info["room"])
    except db.InvalidRoom as e:
        raise web.HTTPBadRequest(text=str(e)) from e


def query_int(request: web.Request, name: str, default: Any) -> Any:
    """Return a query parameter that must be a whole number of at least 1; 400 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) < 1:
        raise web.HTTPBadRequest(text=f"{name}={raw[:40]!r} is not a whole number of at least 1.")
    return int(raw)


def _invalid(request: web.Request, detail: str, fields: dict[str, str]) -> web.Response:
    return inputs.invalid(request, detail, fields)
