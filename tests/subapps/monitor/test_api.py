"""The monitor JSON API at /monitor/api: targets, checks, check now; errors as problem+json."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from nestor_subapps.monitor.schemas import MAX_LIMIT

from .conftest import (
    ON_BOTH_DATABASES,
    BuildMonitor,
    Client,
    Upstream,
    check_now,
    checks_of,
    eventually,
    first_check,
    target,
)

pytestmark = ON_BOTH_DATABASES

PROBLEM = "application/problem+json"


async def problem_of(resp: Any) -> dict[str, Any]:
    """Return the problem document of an error response, after checking its media type."""
    assert resp.content_type == PROBLEM
    body = await resp.json(content_type=PROBLEM)
    assert body["status"] == resp.status
    return body


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream) -> Client:
    """A monitor of /ok, checked once."""
    app = make_monitor([target("site", upstream.url("/ok"), interval=600, timeout=3)])
    client = await aiohttp_client(app)
    await first_check(client, "site")
    return client


async def test_targets_lists_each_target_with_its_config_state_and_last_check(
    client: Client, upstream: Upstream
) -> None:
    async with client.get("/monitor/api/targets") as resp:
        assert resp.status == 200
        [item] = (await resp.json())["items"]
    assert {k: item[k] for k in ("name", "url", "interval", "timeout", "expect_status", "state")} == {
        "name": "site",
        "url": upstream.url("/ok"),
        "interval": 600.0,
        "timeout": 3.0,
        "expect_status": [200],
        "state": "up",
    }
    assert (item["last_check"]["status"], item["uptime"]) == (200, {"hour": 100.0, "day": 100.0})
    assert item["links"] == {
        "checks": "/monitor/api/targets/site/checks",
        "check": "/monitor/api/targets/site/check",
    }


async def test_target_gives_the_same_as_the_list_plus_its_changes(client: Client) -> None:
    async with client.get("/monitor/api/targets") as resp:
        assert resp.status == 200
        [listed] = (await resp.json())["items"]
    async with client.get("/monitor/api/targets/site") as resp:
        assert resp.status == 200
        one = await resp.json()
    assert one == {**listed, "changes": []}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/monitor/api/targets/nothing"),
        ("GET", "/monitor/api/targets/nothing/checks"),
        ("POST", "/monitor/api/targets/nothing/check"),
    ],
)
async def test_unknown_target_is_404_problem(client: Client, method: str, path: str) -> None:
    async with client.request(method, path) as resp:
        assert resp.status == 404
        body = await problem_of(resp)
    assert body["detail"] == "There is no monitored target 'nothing'."


async def test_checks_lists_the_newest_first_up_to_limit(client: Client) -> None:
    made = [(await check_now(client, "site"))["check"]["id"] for _ in range(3)]
    async with client.get("/monitor/api/targets/site/checks", params={"limit": "2"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert (body["target"], body["limit"]) == ("site", 2)
    assert [c["id"] for c in body["items"]] == [made[2], made[1]]


async def test_checks_default_limit_is_the_page_size(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    app = make_monitor([target("site", upstream.url("/ok"))], tables={"monitor": {"api": {"page_size": 2}}})
    client = await aiohttp_client(app)
    await first_check(client, "site")
    for _ in range(2):
        await check_now(client, "site")
    async with client.get("/monitor/api/targets/site/checks") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert (body["limit"], len(body["items"])) == (2, 2)


async def test_checks_limit_is_capped(client: Client) -> None:
    async with client.get("/monitor/api/targets/site/checks", params={"limit": "100000"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["limit"] == MAX_LIMIT


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "", "12345678901"])
async def test_checks_limit_must_be_a_positive_whole_number(client: Client, limit: str) -> None:
    async with client.get("/monitor/api/targets/site/checks", params={"limit": limit}) as resp:
        assert resp.status == 400
        assert "limit" in (await problem_of(resp))["detail"]


async def test_check_now_is_202_with_the_recorded_check(client: Client) -> None:
    async with client.post("/monitor/api/targets/site/check") as resp:
        assert resp.status == 202
        assert resp.headers["Location"] == "/monitor/api/targets/site/checks"
        body = await resp.json()
    assert (body["target"], body["state"], body["check"]["status"]) == ("site", "up", 200)
    assert (await checks_of(client, "site"))[0] == body["check"]


async def test_check_now_completes_when_the_client_leaves(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("slow", upstream.url("/slow"))]))
    await first_check(client, "slow")
    upstream.slow_started.clear()
    async with aiohttp.ClientSession() as session:

        async def send() -> None:
            async with session.post(client.make_url("/monitor/api/targets/slow/check")) as resp:
                await resp.read()

        request = asyncio.create_task(send())
        await asyncio.wait_for(upstream.slow_started.wait(), 5)
        request.cancel()  # hang up while the target is still answering
        with suppress(asyncio.CancelledError):
            await request
    assert request.cancelled()
    checks = await eventually(lambda: checks_of(client, "slow"), lambda checks: len(checks) == 2)
    assert [c["status"] for c in checks] == [200, 200]


async def test_api_token_guards_the_api(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    tables = {"monitor": {"api": {"api_token": "s3cret"}}}
    app = make_monitor([target("site", upstream.url("/ok"))], tables=tables)
    client = await aiohttp_client(app)
    async with client.post("/monitor/api/targets/site/check") as resp:
        assert resp.status == 401
    async with client.post(
        "/monitor/api/targets/site/check", headers={"Authorization": "Bearer s3cret"}
    ) as resp:
        assert resp.status == 202


async def test_password_in_a_target_url_is_not_shown(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    url = upstream.url("/ok").replace("http://", "http://user:hunter2@")
    client = await aiohttp_client(make_monitor([target("site", url)]))
    async with client.get("/monitor/api/targets/site") as resp:
        assert resp.status == 200
        body = await resp.text()
    assert "hunter2" not in body
    assert "http://user:***@127.0.0.1:" in body
    async with client.get("/monitor/site") as resp:
        assert resp.status == 200
        assert "hunter2" not in await resp.text()
