"""Several workers on one site (`nestor serve --workers N` sets nestor.app.WORKER on each):
worker 0 runs the schedule, every worker follows the checks through the bus (real Redis)."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from nestor.app import WORKER

from ...fixtures.redis import RedisServer, redis_server  # noqa: F401 (a fixture)
from .conftest import BuildMonitor, Client, Upstream, check_now, eventually, target


@pytest.fixture
async def workers(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream, redis_server: RedisServer  # noqa: F811
) -> tuple[Client, Client]:
    """Worker 0 and worker 1 of one site: one database, one Redis bus, one target."""
    tables = {"nestor": {"bus_url": redis_server.url()}}
    first = make_monitor([target("site", upstream.url("/ok"))], tables=tables)
    second = make_monitor([target("site", upstream.url("/ok"))], tables=tables)
    second[WORKER] = 1
    return await aiohttp_client(first), await aiohttp_client(second)


async def last_check(client: Client) -> dict[str, Any] | None:
    async with client.get("/monitor/api/targets/site") as resp:
        assert resp.status == 200
        return (await resp.json())["last_check"]


async def test_only_worker_0_checks_on_schedule(workers: tuple[Client, Client], upstream: Upstream) -> None:
    first, second = workers
    checked = await eventually(lambda: last_check(first), lambda c: c is not None)
    followed = await eventually(lambda: last_check(second), lambda c: c is not None and c["id"] == checked["id"])
    assert followed == checked  # worker 1 shows worker 0's check...
    assert upstream.hits["/ok"] == 1  # ...and made none of its own (the target's interval is an hour)


async def test_check_asked_of_worker_1_is_followed_by_worker_0(workers: tuple[Client, Client]) -> None:
    first, second = workers
    await eventually(lambda: last_check(first), lambda c: c is not None)
    asked = (await check_now(second, "site"))["check"]
    followed = await eventually(lambda: last_check(first), lambda c: c is not None and c["id"] == asked["id"])
    assert followed == asked


async def test_both_workers_are_ready(workers: tuple[Client, Client]) -> None:
    for client in workers:
        async with client.get("/health") as resp:
            assert resp.status == 200, await resp.text()


async def test_live_page_of_one_worker_shows_a_check_made_by_the_other(workers: tuple[Client, Client]) -> None:
    first, second = workers
    await eventually(lambda: last_check(second), lambda c: c is not None)
    async with second.ws_connect("/monitor/ws") as ws:
        asked = (await check_now(first, "site"))["check"]
        while True:  # the status sent on connecting first, then the live messages
            message = await ws.receive_json(timeout=10)
            if message["type"] == "check" and message["check"]["id"] == asked["id"]:
                break
    assert message["target"] == "site"
