"""Brute force and stolen cookies: wrong tokens are limited per client address (429 with
Retry-After past MAX_FAILURES, counted across processes through Redis), and logging out ends
the login for every copy of its cookie. Clients are told apart by X-Forwarded-For from the
trusted test client (127.0.0.1), as a proxy in front of Nestor would tell them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from nestor import limits

from ...fixtures.redis import RedisServer, redis_server  # noqa: F401 (a fixture)
from .conftest import TOKEN, BuildAdmin, Client, bearer, csrf_token, log_in

ATTACKER = {"X-Forwarded-For": "203.0.113.7"}
SOMEONE_ELSE = {"X-Forwarded-For": "198.51.100.2"}
PROXIED = {"nestor": {"trusted_proxies": ["127.0.0.1"]}}
JSON = {"Accept": "application/json"}


async def status_of(client: Client, token: str, who: dict[str, str]) -> int:
    async with client.get("/admin/config", headers={**bearer(token), **who, **JSON}) as resp:
        return resp.status


async def test_wrong_tokens_past_the_limit_get_429_even_with_the_right_one(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nestor.auth")
    client = await aiohttp_client(make_admin(PROXIED))
    tolerated = [await status_of(client, f"guess-{n}", ATTACKER) for n in range(limits.MAX_FAILURES)]
    assert tolerated == [403] * limits.MAX_FAILURES
    async with client.get("/admin/config", headers={**bearer(), **ATTACKER, **JSON}) as resp:
        assert resp.status == 429  # the right token too: the answer must not tell right from wrong
        assert resp.content_type == "application/problem+json"
        assert 0 < int(resp.headers["Retry-After"]) <= limits.WINDOW
        assert "try again in" in (await resp.json())["detail"]
    assert await status_of(client, TOKEN, SOMEONE_ELSE) == 200  # another client is not slowed
    failures = [r.getMessage() for r in caplog.records if "a wrong admin_token from 203.0.113.7" in r.getMessage()]
    assert len(failures) == limits.MAX_FAILURES
    assert "rid=" in failures[0] and "GET /admin/config" in failures[0]


async def test_the_login_form_counts_and_refuses_the_same_way(aiohttp_client: AiohttpClient, make_admin: BuildAdmin) -> None:
    client = await aiohttp_client(make_admin(PROXIED))
    statuses = []
    for n in range(limits.MAX_FAILURES + 1):
        form = {"csrf_token": await csrf_token(client), "token": f"guess-{n}"}
        async with client.post("/admin/login", data=form, headers=ATTACKER, allow_redirects=False) as resp:
            statuses.append(resp.status)
            page = await resp.text()
    assert statuses == [403] * limits.MAX_FAILURES + [429]
    assert "<html" in page.lower() and "try again in" in page  # a page, for a browser


async def test_right_tokens_are_never_counted(aiohttp_client: AiohttpClient, make_admin: BuildAdmin) -> None:
    client = await aiohttp_client(make_admin(PROXIED))
    assert [await status_of(client, TOKEN, ATTACKER) for _ in range(3 * limits.MAX_FAILURES)] == [200] * 30


async def test_the_block_ends_with_its_window(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "WINDOW", 1.0)
    client = await aiohttp_client(make_admin(PROXIED))
    for n in range(limits.MAX_FAILURES):
        await status_of(client, f"guess-{n}", ATTACKER)
    assert await status_of(client, TOKEN, ATTACKER) == 429
    await asyncio.sleep(1.1)
    assert await status_of(client, TOKEN, ATTACKER) == 200


async def test_every_process_counts_together_through_redis(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, redis_server: RedisServer  # noqa: F811
) -> None:
    tables: dict[str, Any] = {"nestor": {**PROXIED["nestor"], "bus_url": redis_server.url()}}
    first, second = await aiohttp_client(make_admin(tables)), await aiohttp_client(make_admin(tables))
    half = limits.MAX_FAILURES // 2
    statuses = [await status_of(first, f"a-{n}", ATTACKER) for n in range(half)]
    statuses += [await status_of(second, f"b-{n}", ATTACKER) for n in range(limits.MAX_FAILURES - half)]
    assert statuses == [403] * limits.MAX_FAILURES  # the last of them, on the second, makes the block
    for client in (second, first):  # the first learns of it through the bus
        for _ in range(50):
            if await status_of(client, TOKEN, ATTACKER) == 429:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the block did not reach every process")


async def test_logout_ends_the_login_for_every_copy_of_the_cookie(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    app = make_admin()
    browser = await aiohttp_client(app)
    await log_in(browser)
    jar = browser.session.cookie_jar.filter_cookies(browser.make_url("/"))
    stolen = {name: morsel.value for name, morsel in jar.items()}
    thief = await aiohttp_client(browser.server)
    async with thief.get("/admin/config", cookies=stolen, headers=JSON) as resp:
        assert resp.status == 200  # the copy works while the login lasts...
    token = await csrf_token(browser, "/admin/")
    async with browser.post("/admin/logout", data={"csrf_token": token}, allow_redirects=False) as resp:
        assert resp.status == 303
    async with thief.get("/admin/config", cookies=stolen, headers=JSON) as resp:
        assert resp.status == 401  # ...and ends with it, though the thief's cookie never changed
