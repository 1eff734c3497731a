"""`nestor chat ROOM --url http://host:port --name NAME`: a terminal chat client.

Joins the room over the chat websocket (aiohttp's client), prints the history and every
message, join and leave, and sends each line typed. Ctrl-D (end of input) leaves the room
(exit status 0); when the server closes the connection or goes away the client says why
and exits with status 1. `nestor chat` runs it: the chat sub-app adds the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiohttp
from yarl import URL

EXIT_OK, EXIT_LOST, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
CHAT_PREFIX = "/chat"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; return the exit status."""
    args = parser().parse_args(argv)
    try:
        url = socket_url(args.url, args.room, args.name)
    except ValueError as e:
        print(f"nestor chat: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(chat(url, args.room))
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


def parser() -> argparse.ArgumentParser:
    """Return the command line parser (`nestor chat` uses the same arguments)."""
    parser = argparse.ArgumentParser(
        prog="nestor chat",
        description="Chat in a room from the terminal: type a line to send it, Ctrl-D to leave.",
    )
    parser.add_argument("room", metavar="ROOM", help="the room to join, e.g. lobby")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the Nestor server (default: %(default)s)")
    parser.add_argument("--name", default="", help="the name shown with your messages (default: anonymous)")
    return parser


def socket_url(base: str, room: str, name: str) -> URL:
    """Return the websocket URL of a room on the server at `base`; ValueError when `base` is not one."""
    url = URL(base)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"--url {base!r} must be an http:// or https:// server address, e.g. http://127.0.0.1:8080")
    scheme = "wss" if url.scheme == "https" else "ws"
    socket = url.with_scheme(scheme).with_query(None).with_fragment(None) / CHAT_PREFIX.strip("/") / "ws" / room
    return socket.with_query(name=name) if name else socket


async def chat(url: URL, room: str) -> int:
    """Chat until end of input or until the server closes; return the exit status."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, heartbeat=30)
        except (aiohttp.ClientError, OSError) as e:
            print(f"Cannot join {room!r} at {url}: {describe(e)}", file=sys.stderr)
            return EXIT_LOST
        async with ws:
            reason = await receive(ws, until="history")  # joined: only now read what is typed
            if ws.closed:
                print(closed_message(ws.close_code, reason), file=sys.stderr)
                return EXIT_LOST
            read_lines(asyncio.get_running_loop(), lines)
            receiver = asyncio.create_task(receive(ws))
            sender = asyncio.create_task(send(ws, lines))
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            if receiver not in done and sender.exception() is None:  # end of input: leave politely
                await ws.close()
                receiver.cancel()
                await asyncio.wait({receiver})
                print("Left the room. Bye.", file=sys.stderr)
                return EXIT_OK
            sender.cancel()
            if receiver not in done:  # a send failed: the connection is going; see how it ends
                await ws.close()
            await asyncio.wait({sender, receiver})
            reason = "" if receiver.cancelled() else receiver.result()
            print(closed_message(ws.close_code, reason), file=sys.stderr)
            return EXIT_LOST


def describe(error: BaseException) -> str:
    """Return a short reason for a failed connection."""
    if isinstance(error, aiohttp.WSServerHandshakeError):
        return f"the server answered {error.status} {error.message} (is it a Nestor server with the chat app?)"
    return str(error) or type(error).__name__


def closed_message(code: int | None, reason: str) -> str:
    """Return why the connection ended, for the person at the terminal."""
    if code is None or code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE:
        return "The connection to the server was lost."
    because = f": {reason}" if reason else ""
    if code == aiohttp.WSCloseCode.GOING_AWAY:
        return f"The server went away (code 1001){because}"
    return f"The server closed the connection (code {code}){because}"


def read_lines(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Read stdin in a daemon thread (a tty, a pipe or a file alike); None marks its end."""

    def run() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(lines.put_nowait, None)

    # A daemon thread: a read blocked on the terminal must not keep the process alive at exit.
    threading.Thread(target=run, name="stdin", daemon=True).start()


async def send(ws: aiohttp.ClientWebSocketResponse, lines: asyncio.Queue[str | None]) -> None:
    """Send each non-empty line as a message; return at end of input."""
    while (line := await lines.get()) is not None:
        if line.strip():
            await ws.send_json({"type": "message", "text": line})


async def receive(ws: aiohttp.ClientWebSocketResponse, until: str = "") -> str:
    """Print frames until the connection closes (or a frame of type `until`); return the close reason."""
    while True:
        frame = await ws.receive()
        if frame.type is aiohttp.WSMsgType.TEXT:
            try:
                data = json.loads(frame.data)
            except ValueError:
                continue
            show(data)
            if until and isinstance(data, dict) and data.get("type") == until:
                return ""
        elif frame.type is aiohttp.WSMsgType.CLOSE:
            return str(frame.extra or "")
        elif frame.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return ""


def show(frame: Any) -> None:
    """Print one frame from the server."""
    if not isinstance(frame, dict):
        return
    kind = frame.get("type")
    if kind == "history":
        for message in frame.get("messages", []):
            show(message)
        print(f"-- joined #{frame.get('room')}: {frame.get('people', 0)} here; type a line to send it, Ctrl-D to leave --", flush=True)
    elif kind == "message":
        print(f"[{clock(frame.get('created_at'))}] {frame.get('name')}: {frame.get('text')}", flush=True)
    elif kind in ("join", "leave"):
        verb = "joined" if kind == "join" else "left"
        print(f"* {frame.get('name')} {verb} ({frame.get('people', 0)} here)", flush=True)
    elif kind == "error":
        print(f"! {frame.get('error')}", flush=True)


def clock(iso: object) -> str:
    """Return the local time of day of an ISO timestamp."""
    try:
        return datetime.fromisoformat(str(iso)).astimezone().strftime("%H:%M")
    except ValueError:
        return "--:--"


if __name__ == "__main__":
    sys.exit(main())
