"""Disconnect storm: 200 clients each start a vote and a chat message, then drop the connection.

Each client opens two connections to a real `nestor serve` (polls and chat on SQLite): one
votes through `POST /polls/api/questions/{id}/votes`, one posts through
`POST /chat/api/rooms/storm/messages`. Each connection is dropped (reset or closed, seeded
random) at a random moment: in the request head, in the body, right after the whole body,
while waiting for the response, or once it came. Every client votes for a choice of its own and sends a text of
its own, and every request has its own `X-Request-ID`, so each stored write names the request
it came from. Once the server is quiet, the stored writes must be exactly the writes it took:
none lost, none invented, none half-written.
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..fixtures.served import Served, serve
from .load import access_lines, connect, drop, fetch, read_response, request_bytes

CLIENTS = 200
SEED = 20260808
ROOM = "storm"
CHOICES_PER_QUESTION = 10  # polls' most
CONNECTIONS = 100  # open at once: more could overflow the listen backlog (128) and wait for SYN retries
# Where a client drops its connection: in the request head, in the body, right after the whole
# body, while waiting for the response (after up to MOST_WAIT seconds), or once the response
# came (the patient ones: without them, "nothing lost" could hold for want of answers).
MOMENTS = ("in_head", "in_body", "after_body", "waiting", "after_response")
MOST_WAIT = 0.8  # the longest a "waiting" client waits; answers take 0.1 to 1.5 s in the storm
RESPONSE_TIMEOUT = 10.0  # the longest an "after_response" client waits
STORM_SECONDS = 30.0  # every client has dropped its connection by then, or the storm fails
TEXT_LENGTH = 1500  # under chat's max_text (2000); a body cut anywhere leaves a text that would show
# The record the server should keep of a write whose client left before the response (it keeps
# none yet: see test_stored_writes_are_exactly_those_the_servers_log_shows_started): a line of
# logger nestor.jobs
# naming the request id, e.g. `INFO nestor.jobs: POST /chat/api/rooms/storm/messages: the
# client left; its write completes (rid=storm-chat-17)`.
CLIENT_LEFT = re.compile(r"nestor\.jobs: .*\brid=(?P<rid>[A-Za-z0-9._:-]+)")
QUIET_POLL, QUIET_POLLS, QUIET_DEADLINE = 0.1, 5, 15.0  # counts unchanged for 5 polls 0.1 s apart


@dataclass
class Write:
    """One vote or chat post of the storm, and how far its client got."""

    kind: str  # "vote" or "chat"
    rid: str
    path: str
    body: dict[str, Any]
    moment: str
    cut: float  # where in the head or body the client stops (a fraction)
    wait: float  # seconds the client waits for the response
    reset: bool  # drop with a reset (RST) rather than an orderly close (FIN)
    whole_body: bool = False  # the whole request was written and drained
    status: int | None = None  # the status of a response the client read whole

    @property
    def acknowledged(self) -> bool:
        return self.status == 201


@dataclass
class Storm:
    """What the clients did, what the server logged, and what the database holds afterwards."""

    writes: list[Write]
    stored: dict[str, set[str]]  # kind -> rids of the writes found in the database
    duplicates: list[str]  # rids stored more than once
    strangers: list[str]  # stored rows that match no request of the storm
    logged: dict[str, str] = field(default_factory=dict)  # rid -> status in the access log
    left: set[str] = field(default_factory=set)  # rids the server logged as left during their write
    quiet_counts: tuple[int, int] = (0, 0)
    final_counts: tuple[int, int] = (0, 0)
    alive_after: int | None = None

    def rids(self, kind: str, *, where: Any = lambda w: True) -> set[str]:
        return {w.rid for w in self.writes if w.kind == kind and where(w)}

    def answered(self, kind: str) -> set[str]:
        """The writes the access log shows answered with 201."""
        return {rid for rid in self.rids(kind) if self.logged.get(rid) == "201"}

    def started(self, kind: str) -> set[str]:
        """The writes the server's log shows started: answered, or left by their client mid-write."""
        return self.answered(kind) | (self.left & self.rids(kind))


def plan(rng: random.Random, kind: str, client: int, path: str, body: dict[str, Any]) -> Write:
    """Return a write with its moment, cut, wait and way of dropping chosen by the seeded `rng`."""
    moment, cut, wait = rng.choice(MOMENTS), rng.random(), rng.uniform(0, MOST_WAIT)
    return Write(
        kind=kind,
        rid=f"storm-{kind}-{client}",
        path=path,
        body=body,
        moment=moment,
        cut=cut,
        wait=RESPONSE_TIMEOUT if moment == "after_response" else wait,
        reset=rng.random() < 0.5,
    )


async def attempt(port: int, write: Write, gate: asyncio.Semaphore) -> None:
    """Send one write and drop its connection at the planned moment."""
    head, payload = request_bytes("POST", write.path, write.rid, write.body)
    async with gate:
        reader, writer = await connect(port)
        try:
            if write.moment == "in_head":
                writer.write(head[: 1 + int(write.cut * (len(head) - 2))])
            elif write.moment == "in_body":
                writer.write(head + payload[: int(write.cut * (len(payload) - 1))])
            else:
                writer.write(head + payload)
            await writer.drain()
            if write.moment in ("after_body", "waiting", "after_response"):
                write.whole_body = True
            if write.moment in ("waiting", "after_response"):
                try:
                    async with asyncio.timeout(write.wait):
                        write.status = (await read_response(reader)).status
                except TimeoutError:
                    pass
        except ConnectionError:
            pass  # the server cannot have answered a request it did not take whole
        finally:
            await drop(writer, reset=write.reset)


async def create_questions(served: Served, count: int) -> list[tuple[int, int]]:
    """Create `count` questions and return every (question id, choice id)."""
    choices = []
    for number in range(count):
        options = [f"choice {c}" for c in range(CHOICES_PER_QUESTION)]
        body = {"text": f"Storm question {number}?", "choices": options}
        response = await fetch(served.port, "POST", "/polls/api/questions", f"setup-{number}", body)
        if response.status != 201:
            raise RuntimeError(f"could not create a question: {response.status} {response.body!r}")
        question = response.json()
        choices += [(question["id"], choice["id"]) for choice in question["choices"]]
    return choices


def counts(database: Path) -> tuple[int, int]:
    """Return (votes on storm questions, messages in the storm room), read from the SQLite file."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        votes = conn.execute(
            "SELECT coalesce(sum(c.votes), 0) FROM polls_choice c "
            "JOIN polls_question q ON q.id = c.question_id WHERE q.text LIKE 'Storm question %'"
        ).fetchone()[0]
        messages = conn.execute("SELECT count(*) FROM chat_message WHERE room = ?", (ROOM,)).fetchone()[0]
    conn.close()
    return votes, messages


async def wait_quiet(database: Path) -> tuple[int, int]:
    """Return the counts once they have not changed for a while (bounded by QUIET_DEADLINE)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + QUIET_DEADLINE
    last, same = counts(database), 0
    while same < QUIET_POLLS and loop.time() < deadline:
        await asyncio.sleep(QUIET_POLL)
        now = counts(database)
        same = same + 1 if now == last else 0
        last = now
    if same < QUIET_POLLS:
        raise RuntimeError(f"the server did not go quiet in {QUIET_DEADLINE} s: the counts still move ({last})")
    return last


def stored_writes(database: Path, writes: list[Write]) -> tuple[dict[str, set[str]], list[str], list[str]]:
    """Return the rids whose write is stored, the rids stored twice, and rows from no request."""
    by_choice = {w.body["choice"]: w.rid for w in writes if w.kind == "vote"}
    by_text = {(w.body["name"], w.body["text"]): w.rid for w in writes if w.kind == "chat"}
    stored: dict[str, set[str]] = {"vote": set(), "chat": set()}
    duplicates, strangers = [], []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        for choice_id, votes in conn.execute("SELECT id, votes FROM polls_choice WHERE votes > 0"):
            rid = by_choice.get(choice_id)
            if rid is None:
                continue  # a sample question's choice: not part of the storm
            stored["vote"].add(rid)
            if votes > 1:
                duplicates.append(rid)
        for name, text in conn.execute("SELECT name, text FROM chat_message WHERE room = ?", (ROOM,)):
            rid = by_text.get((name, text))
            if rid is None:
                strangers.append(f"{name}: {text[:40]}... ({len(text)} characters)")
            elif rid in stored["chat"]:
                duplicates.append(rid)
            else:
                stored["chat"].add(rid)
    conn.close()
    return stored, duplicates, strangers


async def run_storm(folder: Path) -> Storm:
    served = await serve(folder, 'subapps = ["polls", "chat"]')
    try:
        database = folder / "nestor.sqlite3"
        choices = await create_questions(served, CLIENTS // CHOICES_PER_QUESTION)
        rng = random.Random(SEED)
        writes = []
        for client in range(CLIENTS):
            question_id, choice_id = choices[client]
            vote = {"choice": choice_id}
            writes.append(plan(rng, "vote", client, f"/polls/api/questions/{question_id}/votes", vote))
            text = f"client {client} says " + "".join(rng.choices(string.ascii_letters, k=TEXT_LENGTH))
            message = {"text": text, "name": f"storm-{client}"}
            writes.append(plan(rng, "chat", client, f"/chat/api/rooms/{ROOM}/messages", message))
        gate = asyncio.Semaphore(CONNECTIONS)
        async with asyncio.timeout(STORM_SECONDS):
            await asyncio.gather(*(attempt(served.port, write, gate) for write in writes))
        quiet = await wait_quiet(database)
        storm = Storm(writes, *stored_writes(database, writes), quiet_counts=quiet)
        storm.logged = {
            line["rid"]: line["status"]
            for line in access_lines(served.log())
            if line["method"] == "POST" and line["rid"].startswith("storm-")
        }
        storm.left = {match["rid"] for match in CLIENT_LEFT.finditer(served.log())}
        storm.alive_after = (await fetch(served.port, "GET", "/health", "after-storm")).status
    finally:
        code = await served.stop()
    if code != 0:
        raise RuntimeError(f"nestor serve exited with {code}:\n{served.log()[-3000:]}")
    storm.final_counts = counts(database)
    return storm


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storm]:
    """Run the storm once for the whole module (about 200 × 2 requests) and report its figures."""
    result = asyncio.run(run_storm(tmp_path_factory.mktemp("storm")))
    for kind in ("vote", "chat"):
        tried = result.rids(kind)
        whole = result.rids(kind, where=lambda w: w.whole_body)
        acknowledged = result.rids(kind, where=lambda w: w.acknowledged)
        started, stored = result.started(kind), result.stored[kind]
        print(
            f"\ndisconnect storm, {kind}: tried {len(tried)}, whole body sent {len(whole)}, "
            f"acknowledged {len(acknowledged)}, started by the server's log {len(started)} "
            f"({len(result.answered(kind))} answered, {len(started - result.answered(kind))} left mid-write), "
            f"stored {len(stored)}, stored with no record on the server {len(stored - started)}, "
            f"writes lost {len((acknowledged | started) - stored)}"
        )
    yield result


KINDS = ["vote", "chat"]


@pytest.mark.parametrize("kind", KINDS)
def test_no_acknowledged_write_is_lost(storm: Storm, kind: str) -> None:
    acknowledged = storm.rids(kind, where=lambda w: w.acknowledged)
    assert acknowledged, "no client waited long enough for an answer: the storm proves nothing"
    assert sorted(acknowledged - storm.stored[kind]) == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_response_a_client_read_is_201(storm: Storm, kind: str) -> None:
    statuses = [(w.rid, w.status) for w in storm.writes if w.kind == kind and w.status is not None]
    assert statuses
    assert [(rid, status) for rid, status in statuses if status != 201] == []


@pytest.mark.parametrize("kind", KINDS)
def test_no_write_is_stored_without_its_whole_body(storm: Storm, kind: str) -> None:
    assert sorted(storm.stored[kind] - storm.rids(kind, where=lambda w: w.whole_body)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_no_write_is_stored_twice(storm: Storm, kind: str) -> None:
    assert [rid for rid in storm.duplicates if rid.startswith(f"storm-{kind}-")] == []


def test_every_stored_message_is_a_whole_sent_text(storm: Storm) -> None:
    assert storm.stored["chat"], "no message was stored: the storm proves nothing"
    assert storm.strangers == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_write_the_server_answered_is_stored(storm: Storm, kind: str) -> None:
    assert storm.answered(kind), "the server answered no write: the storm proves nothing"
    assert sorted(storm.answered(kind) - storm.stored[kind]) == []


@pytest.mark.parametrize("kind", KINDS)
def test_stored_writes_are_exactly_those_the_servers_log_shows_started(storm: Storm, kind: str) -> None:
    assert sorted(storm.stored[kind] ^ storm.started(kind)) == []


def test_nothing_is_written_after_the_server_went_quiet(storm: Storm) -> None:
    assert storm.final_counts == storm.quiet_counts


def test_server_answers_after_the_storm(storm: Storm) -> None:
    assert storm.alive_after == 200
