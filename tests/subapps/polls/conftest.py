"""Polls fixtures: every polls test runs twice, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_

import nestor_subapps.polls
from nestor import DB

from ...conftest import MakeApp
from ...fixtures.postgres import database_url, postgres_server  # noqa: F401 (fixtures)

BuildPolls = Callable[..., web.Application]
Client = TestClient[web.Request, web.Application]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SAMPLE_TEXTS = [text for text, _ in reversed(nestor_subapps.polls.db.SAMPLES)]  # newest first


@pytest.fixture
def make_polls(make_app: MakeApp, database_url: str) -> BuildPolls:
    """Return `make_polls(tables=None)`: Nestor with only the polls sub-app, on this test's database."""

    def build(tables: dict[str, Any] | None = None) -> web.Application:
        tables = {key: dict(value) for key, value in (tables or {}).items()}
        tables.setdefault("nestor", {}).setdefault("database_url", database_url)
        return make_app(tables, specs=[nestor_subapps.polls.subapp])

    return build


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_polls: BuildPolls) -> Client:
    """A client of Nestor with polls on its default configuration (the test server cancels
    handlers whose client left, as `nestor serve` does)."""
    return await aiohttp_client(make_polls())


def engine_of(client: Client) -> AsyncEngine:
    """Return the kernel's database engine of a started app."""
    return client.app[DB]


async def create_question(client: Client, text: str = "Tea or coffee?", choices: list[str] | None = None) -> dict[str, Any]:
    """Create a question through the API and return it as JSON."""
    body = {"text": text, "choices": choices or ["Tea", "Coffee"]}
    async with client.post("/polls/api/questions", json=body) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def votes_of(client: Client, question_id: int) -> dict[int, int]:
    """Return {choice id: votes} as the API reports them."""
    async with client.get(f"/polls/api/questions/{question_id}/results") as resp:
        assert resp.status == 200
        return {c["id"]: c["votes"] for c in (await resp.json())["choices"]}


async def csrf_token(client: Client, path: str = "/polls/new") -> str:
    """Load a form page (which sets the session cookie) and return its CSRF token."""
    async with client.get(path) as resp:
        assert resp.status == 200
        match = CSRF.search(await resp.text())
    assert match is not None, f"no csrf_token field on {path}"
    return match.group(1)


@contextmanager
def slowed(engine: AsyncEngine, statement: str, delay: float) -> Iterator[tuple[asyncio.Event, list[str]]]:
    """Make SQL starting with `statement` wait `delay` seconds first (a slow disk, a lock).

    Yields an event set when such a statement starts and a list that receives "done" when
    it went on to run, or "cancelled" when its caller was cancelled while it waited.
    """
    started, events = asyncio.Event(), []

    def before_execute(conn: Any, cursor: Any, text: str, params: Any, context: Any, many: bool) -> None:
        if not text.lstrip().upper().startswith(statement.upper()):
            return
        started.set()
        try:
            await_(asyncio.sleep(delay))  # SQLAlchemy runs sync events inside the awaiting task
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        events.append("done")

    sa.event.listen(engine.sync_engine, "before_cursor_execute", before_execute)
    try:
        yield started, events
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", before_execute)


@contextmanager
def transactions(engine: AsyncEngine) -> Iterator[list[str]]:
    """Count what the database is asked for meanwhile: the list gets "checkout" for every
    connection taken from the pool and "begin" for every transaction begun."""
    seen: list[str] = []

    def checkout(*args: Any) -> None:
        seen.append("checkout")

    def begin(conn: Any) -> None:
        seen.append("begin")

    sa.event.listen(engine.sync_engine.pool, "checkout", checkout)
    sa.event.listen(engine.sync_engine, "begin", begin)
    try:
        yield seen
    finally:
        sa.event.remove(engine.sync_engine, "begin", begin)
        sa.event.remove(engine.sync_engine.pool, "checkout", checkout)


async def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll `predicate` every 50 ms for up to `seconds`; return its last value."""
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()
