"""Checks asked for through the API make the server send requests: once per target per
`manual_check_interval` for the whole site (429 sooner), and only with a token when one is set."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from ...fixtures.redis import RedisServer, redis_server  # noqa: F401 (a fixture)
from .conftest import BuildMonitor, Client, Upstream, first_check, target

ADMIN = "admin-token-for-the-monitor-tests-0123456789"
API = "api-token-for-the-monitor-tests-0123456789"


async def ask(client: Client, name: str, token: str | None = None) -> tuple[int, dict[str, str], Any]:
    """POST a check of `name`; return the status, the headers and the JSON body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with client.post(f"/monitor/api/targets/{name}/check", headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


async def limited(aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream, **monitor: Any) -> Client:
    targets = [target("site", upstream.url("/ok")), target("other", upstream.url("/flaky"))]
    client = await aiohttp_client(make_monitor(targets, manual_check_interval=60, **monitor))
    for name in ("site", "other"):
        await first_check(client, name)
    return client


async def test_a_second_check_within_the_interval_is_429_with_retry_after(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await limited(aiohttp_client, make_monitor, upstream)
    status, _, _ = await ask(client, "site")
    assert status == 202
    status, headers, body = await ask(client, "site")
    assert status == 429
    assert headers["Content-Type"].startswith("application/problem+json")
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert body["status"] == 429 and "'site' was checked on request less than 60 s ago" in body["detail"]
    assert upstream.hits["/ok"] == 2  # the check at start-up and the one asked for


async def test_a_burst_of_checks_sends_one_request(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await limited(aiohttp_client, make_monitor, upstream)
    answers = await asyncio.gather(*(ask(client, "site") for _ in range(100)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [202] + [429] * 99
    assert upstream.hits["/ok"] == 2


async def test_the_limit_is_per_target(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await limited(aiohttp_client, make_monitor, upstream)
    assert (await ask(client, "site"))[0] == 202
    assert (await ask(client, "other"))[0] == 202
    assert (await ask(client, "site"))[0] == 429


async def test_an_unknown_target_is_404_not_429(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await limited(aiohttp_client, make_monitor, upstream)
    for _ in range(3):
        assert (await ask(client, "nothing"))[0] == 404


async def test_two_processes_on_one_redis_share_the_limit(
    aiohttp_client: AiohttpClient,
    make_monitor: BuildMonitor,
    upstream: Upstream,
    redis_server: RedisServer,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    site = {"nestor": {"bus_url": redis_server.url(), "database_url": f"sqlite+aiosqlite:///{tmp_path / 'site.sqlite3'}"}}
    processes = [
        await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))], tables=site, manual_check_interval=60))
        for _ in range(2)
    ]
    first, second = processes
    assert (await ask(first, "site"))[0] == 202
    status, headers, _ = await ask(second, "site")
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 60


@pytest.mark.parametrize(
    "tokens",
    [{"api_token": API}, {"admin_token": ADMIN}, {"api_token": API, "admin_token": ADMIN}],
    ids=["api token", "admin token", "both"],
)
async def test_with_a_token_set_a_check_needs_one(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream, tokens: dict[str, str]
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))], tables={"nestor": tokens}))
    await first_check_with(client, "site", tokens.get("api_token"))
    assert (await ask(client, "site"))[0] == 401
    assert (await ask(client, "site", "not-the-token"))[0] == 403
    for token in tokens.values():
        assert (await ask(client, "site", token))[0] == 202
    assert upstream.hits["/ok"] == 1 + len(tokens)  # refused asks sent nothing


async def test_with_only_the_admin_token_set_the_rest_of_the_api_stays_open(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/ok"))], tables={"nestor": {"admin_token": ADMIN}}))
    async with client.get("/monitor/api/targets/site") as resp:
        assert resp.status == 200
    assert (await ask(client, "site"))[0] == 401


async def test_without_tokens_anyone_may_ask_within_the_limit(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await limited(aiohttp_client, make_monitor, upstream)
    assert (await ask(client, "site"))[0] == 202
    assert (await ask(client, "site"))[0] == 429


async def first_check_with(client: Client, name: str, token: str | None) -> None:
    """Wait for the check at start-up, reading the API with `token` when it needs one."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(500):
        async with client.get(f"/monitor/api/targets/{name}", headers=headers) as resp:
            assert resp.status == 200
            if (await resp.json())["last_check"] is not None:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} was never checked")
