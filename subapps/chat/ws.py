"""The chat websocket, `GET /chat/ws/{room}?name=NAME`.

The server sends JSON text frames: first `{"type": "history", "messages": [...], "people": n}`,
then `message`, `join` and `leave` events of the room, and `error` for a frame it refused.
A client sends `{"type": "message", "text": ..., "name": ...}` (name optional). A frame that
is not such JSON gets an error frame and the connection stays open; a binary frame closes
it with 1003, one over `max_message_size` with 1009, a bad room name with 1008.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSCloseCode, WSMsgType, web

from nestor import DB, json_dumps, shield

from . import db
from .hub import HUB, Connection, Frame, close_reason, post
from .settings import HEARTBEAT, HISTORY, MAX_MESSAGE_SIZE, MAX_TEXT, SEND_QUEUE

# The kernel's send buffer of a socket that is not read grows to megabytes (Linux autotunes it
# up to 4 MiB), unseen in RSS; capped, send_queue is what bounds a slow client's backlog.
SEND_BUFFER = 256 * 1024
# No permessage-deflate: every socket would compress every broadcast frame again, in its own
# compressor (about 140 KiB of RSS per socket, and most of a broadcast's CPU), to save a few
# bytes of small JSON frames. The hub also writes one frame, built once, to every socket.
COMPRESS = False
EXPECTED = 'Send JSON like {"type": "message", "text": "Hello", "name": "Ada"}.'


def _bound_send_buffer(request: web.Request) -> None:
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def _query_value(request: web.Request, key: str) -> str | None:
    # Not request.query: it stays cached on the request's URL, some 400 bytes per open socket.
    return next((value for name, value in parse_qsl(request.query_string, keep_blank_values=True) if name == key), None)


async def chat_socket(request: web.Request) -> web.WebSocketResponse:
    config = request.config_dict
    # aiohttp's own class, not nestor.WebSocket: its access record costs about 1.5 KiB per idle
    # socket (measured with 1000 sockets), and a chat room holds its sockets open for hours.
    ws = web.WebSocketResponse(heartbeat=config[HEARTBEAT], max_msg_size=config[MAX_MESSAGE_SIZE], compress=COMPRESS)
    await ws.prepare(request)
    _bound_send_buffer(request)
    # Refused after the handshake: a browser shows a close reason, never a failed handshake's body.
    try:
        room = db.check_room(request.match_info["room"])
        name = db.check_name(_query_value(request, "name"))
    except (db.InvalidRoom, db.InvalidMessage) as e:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=close_reason(str(e)))
        return ws
    hub = request.app[HUB]
    connection = Connection(ws, request, room, name, config[SEND_QUEUE])
    try:
        await hub.join(connection)  # before reading the history, so no message falls in between
        await _send_history(request, connection)
        connection.start()
        await hub.publish(room, {"type": "join", "name": name, "people": hub.people().get(room, 0)})
        await _receive(request, connection)
    except ConnectionError:
        pass  # the client left while we were sending to it
    finally:
        hub.leave(connection)
        # Shielded: the handler is cancelled when the client's connection drops, and the
        # others must still hear that it left.
        await shield(request, hub.farewell(connection))
    return ws


async def _send_history(request: web.Request, connection: Connection) -> None:
    recent = await db.history(request.config_dict[DB], connection.room, limit=request.config_dict[HISTORY])
    connection.after_id = recent[-1].id if recent else 0
    people = request.app[HUB].people().get(connection.room, 0)
    frame = {"type": "history", "room": connection.room, "messages": [m.as_json() for m in recent], "people": people}
    await connection.ws.send_str(json_dumps(frame))


async def _receive(request: web.Request, connection: Connection) -> None:
    ws = connection.ws
    while True:  # not `async for`: an idle socket then waits in one coroutine less
        frame = await ws.receive()
        if frame.type is WSMsgType.TEXT:
            error = await _message(request, connection, frame.data)
            if error is not None and not connection.offer(Frame(json_dumps({"type": "error", "error": error}).encode())):
                return  # its backlog is full: the client stopped reading
        elif frame.type is WSMsgType.BINARY:
            await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=close_reason("Binary frames are not accepted. " + EXPECTED))
            return
        else:  # an error: aiohttp has closed the socket already (1009 for a frame too large)
            return


async def _message(request: web.Request, connection: Connection, data: str) -> str | None:
    """Store and broadcast a message frame; return what is wrong with it, if anything."""
    try:
        frame: Any = json.loads(data)
    except (ValueError, RecursionError):
        return "The frame is not JSON. " + EXPECTED
    if not isinstance(frame, dict) or frame.get("type") != "message":
        return "Unknown frame. " + EXPECTED
    try:
        text, name = db.validate_message(frame.get("text"), frame.get("name", connection.name), request.config_dict[MAX_TEXT])
    except db.InvalidMessage as e:
        return str(e)
    await post(request, connection.room, name, text)
    return None
