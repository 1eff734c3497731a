"""The chat JSON API at /chat/api. Errors are application/problem+json (RFC 9457).

A message posted here is stored and reaches every websocket of the room, on every worker,
exactly as one sent over a websocket. When `api_token` is set at any level, every request
needs `Authorization: Bearer <api_token>`.
"""

from __future__ import annotations

from aiohttp import web

from nestor import API_TOKEN, DB, PAGE_SIZE, invalid, json_response, operation, require_token

from . import db, schemas
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


@operation(query=schemas.PageQuery, responses={200: schemas.RoomList})
async def rooms(request: web.Request, query: schemas.PageQuery) -> web.Response:
    """The rooms, with how many people are in each now and how many messages they have."""
    limit = min(query.limit or request.config_dict[PAGE_SIZE], request.config_dict[MAX_LIMIT])
    return json_response({"items": await room_list(request, limit), "limit": limit})


@operation(query=schemas.HistoryQuery, responses={200: schemas.MessagePage}, errors=(400,))
async def messages(request: web.Request, query: schemas.HistoryQuery) -> web.Response:
    """A room's history, a page at a time, oldest first; `next` links the older page."""
    room = room_of(request)
    limit = min(query.limit or request.config_dict[PAGE_SIZE], request.config_dict[MAX_LIMIT])
    # One more than asked for says whether an older page exists.
    found = await db.history(request.config_dict[DB], room, limit=limit + 1, before=query.before)
    items, older = found[-limit:], found[:-limit]
    next_url = None
    if older:
        page = {"before": str(items[0].id), "limit": str(limit)}
        next_url = str(request.app.router["messages"].url_for(room=room).with_query(page))
    return json_response(
        {"items": [m.as_json() for m in items], "limit": limit, "before": query.before, "next": next_url}
    )


@operation(body=schemas.NewMessage, responses={201: schemas.Message}, errors=(400,), max_bytes=MAX_MESSAGE_SIZE)
async def create_message(request: web.Request, body: schemas.NewMessage) -> web.Response:
    """Post a message: stored, and sent to the room's websockets on every worker."""
    room = room_of(request)
    try:
        text, name = db.validate_message(body.text, body.name, request.config_dict[MAX_TEXT])
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
