"""This worker's rooms: the open websockets, their backlogs, and the bus that feeds them.

Every message goes through the kernel bus (topic `chat.room.<room>`), also those sent to
this worker: one background task forwards the messages of the rooms that have a websocket
here to those websockets, framed once for all of them. A frame goes straight into the socket
of a client that keeps up; a client that is behind gets a bounded backlog drained by a task
of its own, so one slow client never delays the others, and a client whose backlog fills up
is closed with 1013 (try again later). Workers tell each other how many people each room has
on the `chat.presence` topic, so room lists count everyone, on every worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from nestor import BUS, DB, Bus, config_of, json_dumps, shield

from . import db

logger = logging.getLogger("chat")

PRESENCE = "chat.presence"
PRESENCE_INTERVAL = 10.0  # seconds between a worker's announcements of its people count
PRESENCE_DELAY = 0.2  # joins and leaves within this many seconds are announced together
CLOSE_TIMEOUT = 10.0  # seconds a closing client gets to take the close frame before it is cut off
CLOSE_REASON_BYTES = 123  # a close frame carries at most 125 bytes, 2 of them the code
FIN_TEXT = 0x81  # the first byte of a whole (unfragmented) text frame


def topic(room: str) -> str:
    """Return the bus topic of a room."""
    return f"chat.room.{room}"


def close_reason(text: str) -> bytes:
    """Return `text` as a close reason, cut to fit a close frame."""
    return text.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore").encode()


class Frame:
    """One text frame for many sockets: its payload, and the bytes a server puts on the wire for it.

    A server's frames are neither masked nor (here: ws.py turns permessage-deflate off)
    compressed, so every socket gets the same bytes (RFC 6455, section 5.2): built once per
    message, not once per socket.
    """

    __slots__ = ("message_id", "payload", "wire")

    def __init__(self, payload: bytes, message_id: int | None = None) -> None:
        self.payload, self.message_id = payload, message_id
        size = len(payload)
        if size < 126:
            head = bytes((FIN_TEXT, size))
        elif size < 1 << 16:
            head = struct.pack("!BBH", FIN_TEXT, 126, size)
        else:
            head = struct.pack("!BBQ", FIN_TEXT, 127, size)
        self.wire = head + payload


class Connection:
    """One websocket in one room: frames go straight into its socket, or to a backlog while it is behind.

    An idle connection holds no task and no queue: the backlog and the task sending it exist
    only while the client is behind (and before `start()`, while its history goes out).
    """

    __slots__ = ("_backlog", "_closing", "_low", "_queue_size", "_sender", "_started", "_transport", "after_id", "name",
                 "room", "ws")

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, room: str, name: str, queue_size: int) -> None:
        self.ws, self.room, self.name = ws, room, name
        self.after_id = 0  # messages up to this id went out with the history
        self._transport = request.transport
        # Straight writes need an uncompressed socket (ws.py turns compression off) and the
        # transport's low-water mark: a client whose socket holds more than that is behind.
        self._low = -1
        if self._transport is not None and not ws.compress:
            self._low = self._transport.get_write_buffer_limits()[0]
        self._queue_size = queue_size
        self._backlog: deque[Frame] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._started = False
        self._closing: asyncio.Task[None] | None = None

    def offer(self, frame: Frame) -> bool:
        """Send a frame now if the client keeps up, else add it to its backlog; False when the backlog is full.

        Never waits: a client that is behind delays nobody else.
        """
        if frame.message_id is not None and frame.message_id <= self.after_id:
            return True  # it went out with the history
        transport = self._transport
        if self._sender is None and self._started and transport is not None \
                and transport.get_write_buffer_size() <= self._low:
            # The client keeps up (what it was sent before has gone down to the kernel, or
            # nearly): the frame goes into the socket, whole, like every frame aiohttp writes.
            if not self.ws.closed and not transport.is_closing():
                transport.write(frame.wire)
            return True
        if self._backlog is None:
            self._backlog = deque()
        elif len(self._backlog) >= self._queue_size:
            return False
        self._backlog.append(frame)
        if self._sender is None and self._started:
            self._sender = asyncio.create_task(self._send_backlog())
        return True

    def start(self) -> None:
        """Start sending live frames, after those queued while the history went out."""
        self._started = True
        if self._backlog:
            self._sender = asyncio.create_task(self._send_backlog())

    async def _send_backlog(self) -> None:
        backlog = self._backlog
        try:
            while backlog:
                frame = backlog.popleft()
                if frame.message_id is not None and frame.message_id <= self.after_id:
                    continue  # already sent with the history
                # aiohttp's writer waits here while the client's socket is full.
                # Shielded: aiohttp 3.14 makes every writer of a connection wait on one shared
                # drain future. Cancelling this task (close() does, for a slow client) would
                # cancel that future too, and ws.close() below would fail at once instead of
                # timing out and cutting the connection: the client would be held forever.
                await asyncio.shield(self.ws.send_frame(frame.payload, WSMsgType.TEXT))
        except ConnectionError:
            pass  # the client is gone; its handler sees the close
        finally:
            # Caught up (or gone): frames go straight to the socket again, and an idle
            # connection keeps neither the task nor the queue.
            self._sender = None
            if self._backlog is backlog:
                self._backlog = None

    def close_soon(self, code: int, reason: str) -> None:
        """Close in the background: whoever notices a slow client must not wait for it."""
        if self._closing is None:
            self._closing = asyncio.create_task(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        """Stop sending, send a close frame, and cut the connection if the client does not take it."""
        if self._sender is not None:
            self._sender.cancel()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=code, message=close_reason(reason))
        except TimeoutError:
            if self._transport is not None:
                self._transport.abort()

    async def stop(self) -> None:
        """Wait for the connection's tasks to end (its handler calls this on the way out)."""
        tasks = [t for t in (self._sender, self._closing) if t is not None]
        if self._sender is not None:
            self._sender.cancel()
        if tasks:
            await asyncio.wait(tasks)


class Hub:
    """The rooms of this worker: who is connected where, and the subscription that feeds them."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.rooms: dict[str, set[Connection]] = {}
        self.subscription = bus.subscribe(PRESENCE, maxsize=10_000)
        self.worker = os.urandom(6).hex()
        self._others: dict[str, tuple[float, dict[str, int]]] = {}  # worker -> (seen at, people by room)
        self._changed = asyncio.Event()

    async def join(self, connection: Connection) -> None:
        """Add a websocket to its room; return once the room's messages reach it from any worker."""
        members = self.rooms.setdefault(connection.room, set())
        members.add(connection)
        self._changed.set()
        await self.subscription.add(topic(connection.room))

    def leave(self, connection: Connection) -> None:
        """Remove a websocket from its room (again is harmless)."""
        members = self.rooms.get(connection.room)
        if members is None or connection not in members:
            return
        members.discard(connection)
        if not members:
            del self.rooms[connection.room]
            self.subscription.discard(topic(connection.room))
        self._changed.set()

    def people(self) -> dict[str, int]:
        """Return how many websockets each room has, on this worker and the others."""
        counts = {room: len(members) for room, members in self.rooms.items()}
        fresh = time.monotonic() - 3 * PRESENCE_INTERVAL
        for worker, (seen, rooms) in list(self._others.items()):
            if seen < fresh:
                del self._others[worker]  # it stopped announcing: gone
                continue
            for room, count in rooms.items():
                counts[room] = counts.get(room, 0) + count
        return counts

    def broadcast(self, room: str, message: dict[str, Any]) -> None:
        """Send a message to every websocket of the room here, framed once; close those that stopped reading.

        Never waits for a client (see `Connection.offer`), so one slow client delays nobody.
        """
        members = self.rooms.get(room)
        if not members:
            return
        frame = Frame(json_dumps(message).encode(), message.get("id") if message.get("type") == "message" else None)
        too_slow = [connection for connection in members if not connection.offer(frame)]
        for connection in too_slow:
            self.leave(connection)
            connection.close_soon(WSCloseCode.TRY_AGAIN_LATER, "Too slow: messages piled up unread.")

    async def run(self) -> None:
        """Forward bus messages to this worker's websockets and announce its people count."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._forward())
            group.create_task(self._announce())

    async def _forward(self) -> None:
        async for message in self.subscription:
            if not isinstance(message, dict):
                continue
            if message.get("type") == "presence":
                if message.get("worker") != self.worker and isinstance(message.get("rooms"), dict):
                    self._others[str(message["worker"])] = (time.monotonic(), message["rooms"])
            elif isinstance(message.get("room"), str):
                self.broadcast(message["room"], message)

    async def _announce(self) -> None:
        while True:
            try:
                async with asyncio.timeout(PRESENCE_INTERVAL):
                    await self._changed.wait()
                await asyncio.sleep(PRESENCE_DELAY)
            except TimeoutError:
                pass
            self._changed.clear()
            await self._publish_presence()

    async def _publish_presence(self, rooms: dict[str, int] | None = None) -> None:
        if rooms is None:
            rooms = {room: len(members) for room, members in self.rooms.items()}
        try:
            await self.bus.publish(PRESENCE, {"type": "presence", "worker": self.worker, "rooms": rooms})
        except Exception:
            logger.exception("could not announce this worker's people count")

    async def farewell(self, connection: Connection) -> None:
        """Wait for a connection that left to wind down, then tell its room."""
        await connection.stop()
        people = self.people().get(connection.room, 0)
        await self.publish(connection.room, {"type": "leave", "name": connection.name, "people": people})

    async def publish(self, room: str, event: dict[str, Any]) -> None:
        """Publish an event (a join, a leave) to the room on every worker."""
        try:
            await self.bus.publish(topic(room), {**event, "room": room})
        except Exception:  # the event is lost; the chat goes on
            logger.exception("could not publish a %s event in room %s", event.get("type"), room)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every websocket of this worker, and tell the others it has nobody left."""
        connections = [c for members in self.rooms.values() for c in members]
        await asyncio.gather(*(c.close(code, reason) for c in connections))
        await self._publish_presence({})


HUB = web.AppKey("chat.hub", Hub)


async def post(request: web.Request, room: str, name: str, text: str) -> db.Message:
    """Store a message and publish it to the room on every worker; both complete even if the client leaves."""
    engine, bus = request.config_dict[DB], request.config_dict[BUS]

    async def write() -> db.Message:
        message = await db.add_message(engine, room, name, text)
        try:
            await bus.publish(topic(room), message.as_json())
        except Exception:  # stored: it is in the history, though live clients miss it
            logger.exception("could not publish message %s of room %s", message.id, room)
        return message

    return await shield(request, write())


async def room_list(request: web.Request, limit: int) -> list[dict[str, Any]]:
    """Return the rooms with people or history, the most people first, then the latest active."""
    people = request.config_dict[HUB].people()  # the chat app's hub, also from its /api child
    stored = {room.name: room for room in await db.rooms(request.config_dict[DB], limit=limit)}
    listed = []
    for name in dict.fromkeys([*sorted(people, key=lambda r: -people[r]), *stored]):
        room = stored.get(name)
        listed.append(
            {
                "room": name,
                "people": people.get(name, 0),
                "messages": room.messages if room else 0,
                "last_message_at": room.last_message_at.isoformat() if room else None,
            }
        )
    return listed[:limit]


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the hub and its background task; at teardown every websocket is closed with 1001."""
    hub = Hub(config_of(app)[BUS])
    app[HUB] = hub
    task = asyncio.create_task(hub.run(), name="chat hub")
    task.add_done_callback(_report_failure)
    yield
    task.cancel()
    await asyncio.wait({task})
    await hub.close_all(WSCloseCode.GOING_AWAY, "The server is shutting down.")
    hub.subscription.close()


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the chat hub stopped: live messages no longer reach this worker", exc_info=task.exception())


async def close_sockets(app: web.Application) -> None:
    """on_shutdown: close every websocket with 1001, so graceful shutdown does not wait for them."""
    hub = app.get(HUB)
    if hub is not None:
        await hub.close_all(WSCloseCode.GOING_AWAY, "The server is shutting down.")
