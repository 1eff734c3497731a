"""Several processes serving one site: the schedule runs in one of them, under a lease held
where they all meet (a file beside SQLite, Redis, PostgreSQL), and another process takes it
over when that one stops; every process follows the checks through the bus (real Redis)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from nestor import Lease
from nestor.tree import TREE
from nestor_subapps.monitor.monitor import MONITOR

from ...fixtures.postgres import empty_database
from ...fixtures.redis import redis_server  # noqa: F401 (a fixture)
from .conftest import BuildMonitor, Client, Upstream, check_now, eventually, target

# Where the lease lives, by the site's database and bus.
SITES = {
    "sqlite file": ("sqlite", False),
    "redis": ("sqlite", True),
    "postgresql": ("postgresql", False),
}


@pytest.fixture(params=list(SITES))
async def site(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The [nestor] table of a site: one SQLite file or a new PostgreSQL database, Redis or not."""
    database, with_redis = SITES[request.param]
    table: dict[str, Any] = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'site.sqlite3'}"}
    if database == "postgresql":
        table["database_url"] = await empty_database(request.getfixturevalue("postgres_server"))
    if with_redis:
        table["bus_url"] = request.getfixturevalue("redis_server").url()
    return table


@pytest.fixture
async def pair(
    site: dict[str, Any], aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> tuple[Client, Client]:
    """Two processes of one site (two apps, as two workers or two hosts build them), one target."""
    tables = {"nestor": site}
    first = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))], tables=tables))
    second = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))], tables=tables))
    return first, second


def holder(pair: tuple[Client, Client]) -> tuple[Client, Client]:
    """Return (the process holding the schedule's lease, the other one)."""
    first, second = pair
    assert lease_of(first).held != lease_of(second).held
    return (first, second) if lease_of(first).held else (second, first)


def lease_of(client: Client) -> Lease:
    """The schedule's lease, as this process sees it."""
    lease = client.app[TREE].find("monitor").app[MONITOR].lease
    assert lease is not None
    return lease


async def test_one_process_of_the_site_checks_on_schedule(pair: tuple[Client, Client], upstream: Upstream) -> None:
    # Each would check at start-up (the interval is an hour): one check means one schedule.
    await eventually(lambda: _hits(upstream), lambda n: n >= 1)
    await eventually(lambda: _held(pair), lambda n: n == 1, seconds=3)
    await asyncio.sleep(1.5)  # a second schedule would have checked by now
    assert upstream.hits["/ok"] == 1
    assert await _held(pair) == 1


async def test_another_process_takes_over_when_the_holder_stops(pair: tuple[Client, Client], upstream: Upstream) -> None:
    await eventually(lambda: _hits(upstream), lambda n: n >= 1)
    await eventually(lambda: _held(pair), lambda n: n == 1, seconds=3)
    leading, other = holder(pair)
    await leading.close()  # its cleanup gives the lease up
    await eventually(lambda: _hits(upstream), lambda n: n == 2, seconds=5)
    assert lease_of(other).held
    async with other.get("/health") as resp:
        assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("site", ["redis"], indirect=True)
async def test_the_other_process_shows_the_checks_of_the_holder(pair: tuple[Client, Client]) -> None:
    await eventually(lambda: _held(pair), lambda n: n == 1, seconds=5)
    leading, other = holder(pair)
    checked = await eventually(lambda: last_check(leading), lambda c: c is not None)
    followed = await eventually(lambda: last_check(other), lambda c: c is not None and c["id"] == checked["id"])
    assert followed == checked


@pytest.mark.parametrize("site", ["redis"], indirect=True)
async def test_a_check_asked_of_either_process_is_followed_by_the_other(pair: tuple[Client, Client]) -> None:
    first, second = pair
    await eventually(lambda: last_check(first), lambda c: c is not None)
    for asked_of, follower in ((first, second), (second, first)):
        asked = (await check_now(asked_of, "site"))["check"]
        followed = await eventually(lambda: last_check(follower), lambda c: c is not None and c["id"] == asked["id"])
        assert followed == asked


async def test_both_processes_are_ready(pair: tuple[Client, Client]) -> None:
    for client in pair:
        async with client.get("/health") as resp:
            assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("site", ["redis"], indirect=True)
async def test_live_page_of_one_process_shows_a_check_made_by_the_other(pair: tuple[Client, Client]) -> None:
    first, second = pair
    await eventually(lambda: last_check(second), lambda c: c is not None)
    async with second.ws_connect("/monitor/ws") as ws:
        asked = (await check_now(first, "site"))["check"]
        while True:  # the status sent on connecting first, then the live messages
            message = await ws.receive_json(timeout=10)
            if message["type"] == "check" and message["check"]["id"] == asked["id"]:
                break
    assert message["target"] == "site"


async def last_check(client: Client) -> dict[str, Any] | None:
    async with client.get("/monitor/api/targets/site") as resp:
        assert resp.status == 200
        return (await resp.json())["last_check"]


async def _hits(upstream: Upstream) -> int:
    return upstream.hits["/ok"]


async def _held(pair: tuple[Client, Client]) -> int:
    return sum(lease_of(c).held for c in pair)


