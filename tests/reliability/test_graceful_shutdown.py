"""Graceful shutdown under load: SIGTERM a real `nestor serve` while it is busy.

A load client keeps 8 keep-alive connections busy with pages, API reads and votes (polls and
chat on SQLite) while 3 websockets sit in a chat room; once the load is well under way the
server gets SIGTERM. The load goes on until the server refuses connections. Then: every
request the server took got a whole response, every vote it acknowledged is in the database
file, every websocket was closed with 1001 (going away), the cleanup contexts ran, and the
exit code is 0.

A request the server did not take is "refused", not "failed": it went out after the signal,
and its connection was refused (the listener had closed), or the server closed or reset it
before the request was written whole or before one byte of a response came back (aiohttp
closes idle keep-alive connections at shutdown; a request racing that close was never read).
A request written before the signal was the server's to answer: with no response it failed.
The server's own records back this up: no refused request is in its access log, and the votes
in the database are exactly the acknowledged ones.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType

from ..fixtures.served import serve
from .load import ANSWERED, FAILED, REFUSED, Call, Load, Result, access_lines, fetch

CONNECTIONS = 8
MOST_REQUESTS = 4000
LOAD_SECONDS = 15.0  # the load ends by then, even if the server never stops
REQUEST_TIMEOUT = 10.0
SIGTERM_AFTER = 150  # answered requests before the signal: the server is busy when it comes
SIGTERM_AT_LATEST = 5.0  # seconds: the signal goes then even if the load is slow
WEBSOCKETS = 3
ROOM = "lobby"
CLOSE_WAIT = 15.0  # seconds a websocket waits for the server's close frame
# The line the kernel should log once every cleanup context has run (it logs none yet: see
# test_the_log_says_the_cleanup_contexts_ran), e.g. from nestor.serve.run once web.run_app
# returns: `INFO nestor.serve: stopped: requests drained, every cleanup context has run`.
CLEANED_UP = re.compile(r"\bnestor(\.\w+)*: stopped\b")


@dataclass
class Shutdown:
    """What the load and the websockets saw, and what the server left behind."""

    results: list[Result]
    signal_at: float
    exit_code: int
    log: str
    close_codes: list[int | None]
    votes_in_database: int
    integrity: str
    leftovers: list[str] = field(default_factory=list)  # SQLite journal files left after exit

    def rids(self, outcome: str) -> set[str]:
        return {r.rid for r in self.results if r.outcome == outcome}

    def count(self, outcome: str) -> int:
        return len(self.rids(outcome))

    def acknowledged_votes(self) -> int:
        return sum(1 for r in self.results if r.outcome == ANSWERED and r.call.method == "POST")


async def create_question(port: int) -> tuple[int, list[int]]:
    body = {"text": "Does Nestor stop gracefully?", "choices": ["yes", "no", "maybe"]}
    response = await fetch(port, "POST", "/polls/api/questions", "setup-question", body)
    if response.status != 201:
        raise RuntimeError(f"could not create the question: {response.status} {response.body!r}")
    question = response.json()
    return question["id"], [choice["id"] for choice in question["choices"]]


def calls_for(question_id: int, choice_ids: list[int]) -> list[Call]:
    """Pages, API reads and votes, in the order each connection sends them."""
    votes = f"/polls/api/questions/{question_id}/votes"
    return [
        Call("GET", "/"),
        Call("POST", votes, 201, {"choice": choice_ids[0]}),
        Call("GET", "/polls/"),
        Call("GET", f"/polls/api/questions/{question_id}/results"),
        Call("POST", votes, 201, {"choice": choice_ids[1]}),
        Call("GET", "/chat/api/rooms"),
        Call("GET", f"/polls/{question_id}"),
        Call("POST", votes, 201, {"choice": choice_ids[2]}),
        Call("GET", "/polls/api/questions"),
        Call("GET", "/chat/"),
        Call("GET", "/health"),
    ]


async def join(session: aiohttp.ClientSession, url: str, number: int) -> aiohttp.ClientWebSocketResponse:
    """Join the chat room; return once the server has sent the room's history."""
    ws = await session.ws_connect(f"{url}/chat/ws/{ROOM}?name=watcher-{number}")
    first = await ws.receive_json(timeout=REQUEST_TIMEOUT)
    if first.get("type") != "history":
        raise RuntimeError(f"the chat websocket sent {first!r} before the history")
    return ws


async def watch(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes the websocket; return the close code (None: not closed in time)."""
    try:
        async with asyncio.timeout(LOAD_SECONDS + CLOSE_WAIT):
            async for message in ws:  # ends at the server's close frame (aiohttp answers it)
                if message.type is WSMsgType.ERROR:
                    break
    except TimeoutError:
        return None
    return ws.close_code


async def until_busy(load: Load) -> None:
    """Return once the load has had SIGTERM_AFTER answers, or SIGTERM_AT_LATEST seconds passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SIGTERM_AT_LATEST
    while load.count(ANSWERED) < SIGTERM_AFTER and loop.time() < deadline:
        await asyncio.sleep(0.01)


def read_database(path: Path, question_id: int) -> tuple[int, str]:
    """Return (votes on the question, PRAGMA integrity_check), from the file the server left."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        votes = conn.execute(
            "SELECT coalesce(sum(votes), 0) FROM polls_choice WHERE question_id = ?", (question_id,)
        ).fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    return votes, integrity


async def run_shutdown(folder: Path) -> Shutdown:
    served = await serve(folder, 'subapps = ["polls", "chat"]')
    try:
        question_id, choice_ids = await create_question(served.port)
        load = Load(
            served.port,
            calls_for(question_id, choice_ids),
            connections=CONNECTIONS,
            most=MOST_REQUESTS,
            seconds=LOAD_SECONDS,
            timeout=REQUEST_TIMEOUT,
        )
        async with aiohttp.ClientSession() as session:
            sockets = [await join(session, served.url, n) for n in range(WEBSOCKETS)]
            watchers = [asyncio.create_task(watch(ws)) for ws in sockets]
            running = asyncio.create_task(load.run())
            await until_busy(load)
            load.stopping()  # then at once the signal: no request goes out between the two
            signal_at = asyncio.get_running_loop().time()
            exit_code = await served.stop(timeout=REQUEST_TIMEOUT + CLOSE_WAIT)
            results = await running
            close_codes = await asyncio.gather(*watchers)
    finally:
        await served.kill()
    # Before opening the file: a reader would create the journal files itself.
    leftovers = sorted(p.name for p in folder.glob("nestor.sqlite3-*"))
    votes, integrity = read_database(folder / "nestor.sqlite3", question_id)
    return Shutdown(results, signal_at, exit_code, served.log(), close_codes, votes, integrity, leftovers)


@pytest.fixture(scope="module")
def shutdown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shutdown]:
    """SIGTERM the server once under load for the whole module, and report the figures."""
    result = asyncio.run(run_shutdown(tmp_path_factory.mktemp("shutdown")))
    sent = [r for r in result.results if r.sent]
    answered_after = sum(1 for r in result.results if r.outcome == ANSWERED and r.at >= result.signal_at)
    acknowledged = result.acknowledged_votes()
    print(
        f"\ngraceful shutdown: requests tried {len(result.results)}, sent {len(sent)}, accepted "
        f"{result.count(ANSWERED) + result.count(FAILED)}, answered {result.count(ANSWERED)} "
        f"({answered_after} after SIGTERM), refused {result.count(REFUSED)} "
        f"({sum(1 for r in result.results if r.outcome == REFUSED and not r.sent)} at connect), "
        f"failed {result.count(FAILED)}; votes acknowledged {acknowledged}, in the database "
        f"{result.votes_in_database}, writes lost {max(0, acknowledged - result.votes_in_database)}; "
        f"websocket close codes {[int(c) if c is not None else None for c in result.close_codes]}; "
        f"exit code {result.exit_code}"
    )
    yield result


def test_the_load_was_running_when_the_signal_came(shutdown: Shutdown) -> None:
    answered_after = [r for r in shutdown.results if r.outcome == ANSWERED and r.at >= shutdown.signal_at]
    assert answered_after, "no request was answered after SIGTERM: the shutdown was not under load"
    assert shutdown.count(REFUSED) > 0, "the load never saw the server go away"


def test_no_accepted_request_fails(shutdown: Shutdown) -> None:
    assert [(r.rid, r.call.method, r.call.path, r.detail) for r in shutdown.results if r.outcome == FAILED] == []


def test_refused_requests_are_not_in_the_access_log(shutdown: Shutdown) -> None:
    logged = {line["rid"] for line in access_lines(shutdown.log)}
    assert sorted(shutdown.rids(REFUSED) & logged) == []


def test_every_acknowledged_vote_is_in_the_database(shutdown: Shutdown) -> None:
    assert shutdown.acknowledged_votes() > 0
    assert shutdown.votes_in_database == shutdown.acknowledged_votes()


def test_websockets_are_closed_with_going_away(shutdown: Shutdown) -> None:
    assert shutdown.close_codes == [WSCloseCode.GOING_AWAY] * WEBSOCKETS


def test_server_exits_with_code_zero(shutdown: Shutdown) -> None:
    assert shutdown.exit_code == 0, shutdown.log[-3000:]


def test_database_is_closed_cleanly(shutdown: Shutdown) -> None:
    assert (shutdown.integrity, shutdown.leftovers) == ("ok", [])


def test_log_has_no_error(shutdown: Shutdown) -> None:
    assert [line for line in shutdown.log.splitlines() if " ERROR " in line or "Traceback" in line] == []


def test_the_log_says_the_cleanup_contexts_ran(shutdown: Shutdown) -> None:
    assert CLEANED_UP.search(shutdown.log)
