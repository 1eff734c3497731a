"""Dependency outages: PostgreSQL and Redis stop mid-run and come back; Nestor is never restarted.

PostgreSQL (polls, served in-process on a server of this module's own): while it is down,
pages answer a 503 HTML page and the API a 503 problem+json, both with Retry-After; /health
names the database; each failed request logs one warning line, no traceback. Once it is back,
the very first request succeeds (the pool pings connections before lending them out).

Redis (chat, two `nestor serve` processes on one Redis): while it is down, /health names the
bus, messages are still stored and reach the websockets of the process they were sent to;
once it is back, messages cross between the processes again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

import nestor_subapps.polls
from nestor import DB, SubApp

from ..conftest import MakeApp
from ..fixtures.postgres import (  # noqa: F401 (stoppable_postgres is a fixture)
    PostgresServer,
    empty_database,
    is_running,
    start_server,
    stop_server,
    stoppable_postgres,
)
from ..fixtures.redis import RedisServer, redis_server  # noqa: F401 (a fixture)
from ..fixtures.served import Served, serve

Client = TestClient[web.Request, web.Application]
WAIT = 15.0  # seconds any one expected state may take before the test fails
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
UNAVAILABLE = "The database is unavailable right now"


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture
def postgres(stoppable_postgres: PostgresServer) -> Iterator[PostgresServer]:  # noqa: F811
    """The module's PostgreSQL server, running again after the test whatever the test did."""
    if not is_running(stoppable_postgres):
        start_server(stoppable_postgres)
    yield stoppable_postgres
    if not is_running(stoppable_postgres):
        start_server(stoppable_postgres)


@pytest.fixture
async def polls(aiohttp_client: AiohttpClient, make_app: MakeApp, postgres: PostgresServer) -> Client:
    """A client of Nestor with polls (two sample questions) on an empty PostgreSQL database."""
    url = await empty_database(postgres)
    return await aiohttp_client(make_app({"nestor": {"database_url": url}}, specs=[nestor_subapps.polls.subapp]))


async def csrf_token(client: Client) -> str:
    """Load the new-question form (setting the session cookie); return its CSRF token."""
    async with client.get("/polls/new") as resp:
        assert resp.status == 200
        match = CSRF.search(await resp.text())
    assert match is not None
    return match.group(1)


def case(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request of a parametrized test, named by its method and path."""
    return pytest.param(method, path, body, id=f"{method} {path}")


@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        case("GET", "/polls/"),
        case("GET", "/polls/1"),
        case("GET", "/polls/1/results"),
        case("POST", "/polls/1/vote", {"choice": "1"}),
        case("POST", "/polls/new", {"text": "Up or down?", "choice": ["Up", "Down"]}),
    ],
)
async def test_page_is_a_503_html_page_while_the_database_is_down(
    polls: Client, postgres: PostgresServer, method: str, path: str, form: dict[str, Any] | None
) -> None:
    data = {**form, "csrf_token": await csrf_token(polls)} if form is not None else None
    stop_server(postgres)
    async with polls.request(method, path, data=data, allow_redirects=False) as resp:
        assert resp.status == 503
        assert resp.content_type == "text/html"
        assert int(resp.headers["Retry-After"]) > 0
        body = await resp.text()
    assert UNAVAILABLE in body
    assert "Traceback" not in body


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        case("GET", "/polls/api/questions"),
        case("GET", "/polls/api/questions/1"),
        case("GET", "/polls/api/questions/1/results"),
        case("POST", "/polls/api/questions", {"text": "Up or down?", "choices": ["Up", "Down"]}),
        case("POST", "/polls/api/questions/1/votes", {"choice": 1}),
    ],
)
async def test_api_is_a_503_problem_while_the_database_is_down(
    polls: Client, postgres: PostgresServer, method: str, path: str, body: dict[str, Any] | None
) -> None:
    stop_server(postgres)
    async with polls.request(method, path, json=body) as resp:
        assert resp.status == 503
        assert resp.content_type == "application/problem+json"
        assert int(resp.headers["Retry-After"]) > 0
        problem = await resp.json(content_type=None)
    assert (problem["status"], problem["title"]) == (503, "Service Unavailable")
    assert problem["detail"].startswith(UNAVAILABLE)
    assert problem["request_id"] == resp.headers["X-Request-ID"]


async def test_health_names_the_database_while_it_is_down(polls: Client, postgres: PostgresServer) -> None:
    stop_server(postgres)
    async with polls.get("/health") as resp:
        assert resp.status == 503
        health = await resp.json()
    assert health["checks"]["database"]["ready"] is False
    assert "database" in health["not_ready"]
    assert health["checks"]["bus"]["ready"] is True


async def test_each_failed_request_logs_one_warning_without_a_traceback(
    polls: Client, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    stop_server(postgres)
    caplog.set_level(logging.WARNING)
    for path in ("/polls/", "/polls/api/questions", "/polls/1", "/polls/api/questions/1"):
        async with polls.get(path) as resp:
            assert resp.status == 503
    warnings = [r for r in caplog.records if r.name == "nestor.errors" and r.levelno == logging.WARNING]
    assert [r.getMessage().split(" (request id")[0] for r in warnings] == [
        "Database unavailable in GET /polls/",
        "Database unavailable in GET /polls/api/questions",
        "Database unavailable in GET /polls/1",
        "Database unavailable in GET /polls/api/questions/1",
    ]
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


async def test_health_logs_the_database_outage_without_a_traceback(
    polls: Client, postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    stop_server(postgres)
    caplog.set_level(logging.WARNING)
    async with polls.get("/health") as resp:
        assert resp.status == 503
    assert [r for r in caplog.records if r.exc_info] == []


async def test_first_request_after_the_database_is_back_succeeds(polls: Client, postgres: PostgresServer) -> None:
    stop_server(postgres)
    async with polls.get("/polls/api/questions") as resp:
        assert resp.status == 503
    start_server(postgres)
    back = time.perf_counter()
    for path in ("/polls/api/questions", "/polls/", "/health"):
        async with polls.get(path) as resp:
            assert resp.status == 200, path
    print(f"PostgreSQL back: first request answered {1000 * (time.perf_counter() - back):.0f} ms later")


async def test_vote_after_the_database_is_back_is_stored(polls: Client, postgres: PostgresServer) -> None:
    stop_server(postgres)
    async with polls.post("/polls/api/questions/1/votes", json={"choice": 1}) as resp:
        assert resp.status == 503
    start_server(postgres)
    async with polls.post("/polls/api/questions/1/votes", json={"choice": 1}) as resp:
        assert resp.status == 201
    async with polls.get("/polls/api/questions/1/results") as resp:
        assert resp.status == 200
        results = await resp.json()
    assert results["total"] == 1


async def test_database_restart_between_requests_fails_no_request(polls: Client, postgres: PostgresServer) -> None:
    # The pool's connections from before the restart are dead: each is replaced before use.
    for _ in range(3):
        async with polls.get("/polls/api/questions") as resp:
            assert resp.status == 200
        stop_server(postgres)
        start_server(postgres)
    async with polls.get("/polls/api/questions") as resp:
        assert resp.status == 200


# -- the error mapping itself: outages are 503, bugs stay 500 ---------------------------------


async def sleep_in_database(request: web.Request) -> web.Response:
    async with request.config_dict[DB].connect() as conn:
        await conn.execute(sa.text("SELECT pg_sleep(30)"))
    return web.json_response({"slept": True})


async def query_missing_table(request: web.Request) -> web.Response:
    async with request.config_dict[DB].connect() as conn:
        await conn.execute(sa.text("SELECT * FROM no_such_table"))
    return web.json_response({"found": True})


def create_outage_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/sleep", sleep_in_database)
    app.router.add_get("/missing-table", query_missing_table)
    return app


OUTAGE = SubApp(name="outage", prefix="/outage", factory=create_outage_app, defaults={"error_format": "json"})


async def sleeping_queries(server: PostgresServer) -> int:
    import asyncpg  # the postgres extra; stoppable_postgres checked that it is installed

    conn = await asyncpg.connect(host=server.host, port=server.port, user=server.user, database="postgres")
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()


async def test_query_cut_off_by_the_database_stopping_is_a_503(
    aiohttp_client: AiohttpClient, make_app: MakeApp, postgres: PostgresServer
) -> None:
    url = await empty_database(postgres)
    client = await aiohttp_client(make_app({"nestor": {"database_url": url}}, specs=[OUTAGE]))
    request = asyncio.create_task(client.get("/outage/sleep"))
    for _ in range(int(WAIT / 0.05)):
        if await sleeping_queries(postgres) or request.done():
            break
        await asyncio.sleep(0.05)
    stop_server(postgres)
    async with await asyncio.wait_for(request, WAIT) as resp:
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) > 0
        problem = await resp.json(content_type=None)
    assert problem["detail"].startswith(UNAVAILABLE)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_query_of_a_missing_table_is_still_a_500(
    aiohttp_client: AiohttpClient, make_app: MakeApp, postgres: PostgresServer, tmp_path: Path, backend: str
) -> None:
    # SQLite reports a missing table as an OperationalError: a bug, not an outage.
    url = await empty_database(postgres) if backend == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    client = await aiohttp_client(make_app({"nestor": {"database_url": url}}, specs=[OUTAGE]))
    async with client.get("/outage/missing-table") as resp:
        assert resp.status == 500
        assert "Retry-After" not in resp.headers
        problem = await resp.json(content_type=None)
    assert problem["title"] == "Internal Server Error"


# -- Redis: two `nestor serve` processes with chat on one Redis ----------------------------------


Pair = tuple[Served, Served]


@pytest.fixture
async def chat_servers(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Pair]:  # noqa: F811
    """Two `nestor serve` processes of one deployment: one Redis bus, one SQLite database."""
    body = (
        'subapps = ["chat"]\n'
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "chat.sqlite3"}"\n'
        f'bus_url = "{redis_server.url()}"\n'
        "shutdown_timeout = 5\n"
    )
    started: list[Served] = []
    try:
        for name in ("first", "second"):  # one after the other: both create the tables
            (tmp_path / name).mkdir()
            started.append(await serve(tmp_path / name, body))
        yield started[0], started[1]
    finally:
        for served in started:
            await served.stop()


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


async def post_message(session: aiohttp.ClientSession, served: Served, text: str) -> dict[str, Any]:
    async with session.post(f"{served.url}/chat/api/rooms/lobby/messages", json={"text": text, "name": "api"}) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def next_message(ws: aiohttp.ClientWebSocketResponse, timeout: float = WAIT) -> dict[str, Any]:
    """Return the next `message` frame (joins, leaves and presence frames are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a frame, got {msg.type!r}"
            frame = msg.json()
            if frame["type"] == "message":
                return frame


async def join(session: aiohttp.ClientSession, served: Served, name: str) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{served.url}/chat/ws/lobby?name={name}")
    msg = await ws.receive(timeout=WAIT)
    assert msg.json()["type"] == "history"
    return ws


async def eventually(read: Callable[[], Awaitable[Any]], expected: Any) -> Any:
    """Return `read()` once it gives `expected`, trying for up to WAIT seconds; else its last value."""
    for _ in range(int(WAIT / 0.1)):
        value = await read()
        if value == expected:
            return value
        await asyncio.sleep(0.1)
    return await read()


def bus_state(session: aiohttp.ClientSession, served: Served) -> Callable[[], Awaitable[tuple[int, list[str]]]]:
    async def read() -> tuple[int, list[str]]:
        status, health = await get_json(session, f"{served.url}/health")
        return status, health["not_ready"]

    return read


async def test_while_redis_is_down_health_names_the_bus_on_every_process(
    chat_servers: Pair, redis_server: RedisServer  # noqa: F811
) -> None:
    redis_server.stop()
    async with aiohttp.ClientSession() as session:
        for served in chat_servers:
            assert await eventually(bus_state(session, served), (503, ["bus"])) == (503, ["bus"])


async def test_while_redis_is_down_messages_are_stored_and_reach_local_websockets(
    chat_servers: Pair, redis_server: RedisServer  # noqa: F811
) -> None:
    first, _ = chat_servers
    async with aiohttp.ClientSession() as session:
        ada = await join(session, first, "Ada")
        redis_server.stop()
        assert await eventually(bus_state(session, first), (503, ["bus"])) == (503, ["bus"])
        posted = await post_message(session, first, "while Redis is down")
        assert await next_message(ada) == posted
        status, stored = await get_json(session, f"{first.url}/chat/api/rooms/lobby/messages")
        await ada.close()
    assert status == 200
    assert stored["items"][-1] == posted


async def crosses(session: aiohttp.ClientSession, sender: Served, receiver: aiohttp.ClientWebSocketResponse) -> bool:
    """Post to `sender` until a message reaches `receiver` (right after Redis is back the first may be lost)."""
    for attempt in range(int(WAIT / 0.5)):
        posted = await post_message(session, sender, f"after the restart #{attempt}")
        try:
            while (await next_message(receiver, timeout=0.5))["id"] != posted["id"]:
                pass
            return True
        except TimeoutError:
            continue
    return False


async def test_after_redis_restarts_messages_cross_processes_again(
    chat_servers: Pair, redis_server: RedisServer  # noqa: F811
) -> None:
    first, second = chat_servers
    async with aiohttp.ClientSession() as session:
        bob = await join(session, second, "Bob")
        assert await crosses(session, first, bob)  # before the outage
        redis_server.stop()
        for served in chat_servers:
            assert await eventually(bus_state(session, served), (503, ["bus"])) == (503, ["bus"])
        redis_server.start()
        back = time.perf_counter()
        assert await crosses(session, first, bob)
        print(f"Redis back: a message crossed processes {time.perf_counter() - back:.2f} s later")
        for served in chat_servers:
            assert await eventually(bus_state(session, served), (200, [])) == (200, [])
        await bob.close()


async def test_redis_outage_logs_one_warning_and_one_recovery_per_process(
    chat_servers: Pair, redis_server: RedisServer  # noqa: F811
) -> None:
    async with aiohttp.ClientSession() as session:
        redis_server.stop()
        for served in chat_servers:
            assert await eventually(bus_state(session, served), (503, ["bus"])) == (503, ["bus"])
        for served in chat_servers:  # more requests during the outage log nothing more
            await post_message(session, served, "while Redis is down")
        redis_server.start()
        for served in chat_servers:
            assert await eventually(bus_state(session, served), (200, [])) == (200, [])
    for served in chat_servers:
        log = served.log()
        assert log.count("bus: Redis at") == 2, log  # "is unavailable", then "is back"
        assert re.search(r"WARNING nestor\.bus: bus: Redis at \S+ is unavailable", log), log
        assert re.search(r"INFO nestor\.bus: bus: Redis at \S+ is back", log), log
        assert "Traceback" not in log, log
