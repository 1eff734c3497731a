"""The chat JSON API at /chat/api. Errors are application/problem+json (RFC 9457).

A message posted here is stored and reaches every websocket of the room, on every worker,
exactly as one sent over a websocket. When `api_token` is set at any level, every request
needs `Authorization: Bearer <api_token>`.
"""

from __future__ import annotations

from aiohttp import web

from nestor import API_TOKEN, DB, PAGE_SIZE, invalid, json_response, query_int, read_json, require_token

from . import db
from .hub import post, room_list
from .settings import MAX_LIMIT, MAX_MESSAGE_SIZE, MAX_TEXT

MAX_BEFORE = 9_999_999_999


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
    limit = min(query_int(request, "limit", request.config_dict[PAGE_SIZE], minimum=1), request.config_dict[MAX_LIMIT])
    return json_response({"items": await room_list(request, limit), "limit": limit})


async def messages(request: web.Request) -> web.Response:
    room = room_of(request)
    limit = min(query_int(request, "limit", request.config_dict[PAGE_SIZE], minimum=1), request.config_dict[MAX_LIMIT])
    # Any id above the last one means the latest page; ten digits, as ids have at most.
    before = query_int(request, "before", None, minimum=1, maximum=MAX_BEFORE)
    # One more than asked for says whether an older page exists.
    found = await db.history(request.config_dict[DB], room, limit=limit + 1, before=before)
    items, older = found[-limit:], found[:-limit]
    next_url = None
    if older:
        query = {"before": str(items[0].id), "limit": str(limit)}
        next_url = str(request.app.router["messages"].url_for(room=room).with_query(query))
    return json_response(
        {"items": [m.as_json() for m in items], "limit": limit, "before": before, "next": next_url}
    )


async def create_message(request: web.Request) -> web.Response:
    room = room_of(request)
    body = await read_json(request, MAX_MESSAGE_SIZE)
    try:
        text, name = db.validate_message(body.get("text"), body.get("name"), request.config_dict[MAX_TEXT])
    except db.InvalidMessage as e:
        return invalid(request, "The message is not valid; see errors.", e.errors)
    message = await post(request, room, name, text)
    return json_response(message.as_json(), status=201)


# -- input and output ------------------------------------------------------------------------


def room_of(request: web.Request) -> str:
    """Return the room of the URL; 400 saying what a room name may be."""
    try:
        return db.check_room(request.match_info["room"])
    except db.InvalidRoom as e:
        raise web.HTTPBadRequest(text=str(e)) from e
