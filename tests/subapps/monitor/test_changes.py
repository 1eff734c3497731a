"""State changes (up -> down, down -> up) are published on the bus and stored; every check is published."""

from __future__ import annotations

import asyncio
from typing import Any

from pytest_aiohttp import AiohttpClient

from nestor import BUS

from .conftest import (
    ON_BOTH_DATABASES,
    BuildMonitor,
    Client,
    Upstream,
    check_now,
    eventually,
    first_check,
    status_of,
    target,
)

pytestmark = ON_BOTH_DATABASES


async def flaky_client(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> Client:
    """A monitor watching /flaky, after its check at start-up found it up."""
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/flaky"))]))
    assert (await first_check(client, "site"))["state"] == "up"
    return client


async def change_after_check(client: Client, name: str) -> dict[str, Any]:
    """Check now and return the change announced on monitor.changes."""
    async with client.app[BUS].subscribe("monitor.changes") as changes:
        await check_now(client, name)
        return await asyncio.wait_for(changes.get(), 5)


async def test_going_down_publishes_a_change(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await flaky_client(aiohttp_client, make_monitor, upstream)
    upstream.flaky = 500
    change = await change_after_check(client, "site")
    assert {k: change[k] for k in ("type", "target", "from", "to", "error", "detail")} == {
        "type": "change",
        "target": "site",
        "from": "up",
        "to": "down",
        "error": "status",
        "detail": "expected 200, got 500",
    }


async def test_coming_back_up_publishes_a_change(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await flaky_client(aiohttp_client, make_monitor, upstream)
    upstream.flaky = 500
    await check_now(client, "site")
    upstream.flaky = 200
    change = await change_after_check(client, "site")
    assert (change["from"], change["to"], change["error"]) == ("down", "up", None)


async def test_changes_are_stored_newest_first(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await flaky_client(aiohttp_client, make_monitor, upstream)
    for status in (500, 503, 200):
        upstream.flaky = status
        await check_now(client, "site")
    changes = (await status_of(client, "site"))["changes"]
    assert [(c["from"], c["to"]) for c in changes] == [("down", "up"), ("up", "down")]


async def test_first_check_of_a_target_is_not_a_change(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/fail"))]))
    status = await first_check(client, "site")
    assert (status["state"], status["changes"]) == ("down", [])


async def test_change_across_a_restart_is_recorded(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    first = await flaky_client(aiohttp_client, make_monitor, upstream)
    await first.close()
    upstream.flaky = 500
    second = await aiohttp_client(make_monitor([target("site", upstream.url("/flaky"))]))
    status = await eventually(lambda: status_of(second, "site"), lambda s: s["state"] == "down")
    assert [(c["from"], c["to"]) for c in status["changes"]] == [("up", "down")]


async def test_every_check_is_published_with_the_uptime(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))]))
    await first_check(client, "site")
    async with client.app[BUS].subscribe("monitor.checks") as checks:
        answer = await check_now(client, "site")
        message = await asyncio.wait_for(checks.get(), 5)
    assert message == {
        "type": "check",
        "target": "site",
        "state": "up",
        "check": answer["check"],
        "uptime": {"hour": 100.0, "day": 100.0},
    }
