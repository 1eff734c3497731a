"""The monitor pages: the dashboard, a target's details, the live websocket, the static files."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp import WSMsgType
from pytest_aiohttp import AiohttpClient

from .conftest import BuildMonitor, Client, Upstream, check_now, first_check, target


async def page(client: Client, path: str) -> str:
    async with client.get(path) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        return await resp.text()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream) -> Client:
    """A monitor of two targets, one up and one down, each checked once."""
    targets = [target("web", upstream.url("/ok")), target("broken", upstream.url("/fail"))]
    client = await aiohttp_client(make_monitor(targets))
    for name in ("web", "broken"):
        await first_check(client, name)
    return client


def row_of(html: str, name: str) -> str:
    """Return the dashboard's table row of a target."""
    match = re.search(rf'<tr class="target" data-target="{name}".*?</tr>', html, re.S)
    assert match is not None, f"no row for {name}"
    return match.group(0)


async def test_dashboard_shows_each_target_with_its_state_latency_and_uptime(client: Client) -> None:
    html = await page(client, "/monitor/")
    web, broken = row_of(html, "web"), row_of(html, "broken")
    assert 'href="/monitor/web"' in web
    assert '<span class="state state-up">up</span>' in web
    assert re.search(r'<td class="latency">\d+ ms</td>', web)
    assert '<td class="uptime-hour">100.00 %</td>' in web
    assert '<span class="state state-down">down</span>' in broken
    assert '<td class="uptime-day">0.00 %</td>' in broken


async def test_dashboard_draws_a_latency_chart_in_svg(client: Client) -> None:
    await check_now(client, "web")
    web = row_of(await page(client, "/monitor/"), "web")
    points = re.search(r'<polyline class="latency-line" points="([^"]*)"', web)
    assert points is not None
    assert len(points.group(1).split()) == 2  # one point per check


async def test_dashboard_chart_marks_failed_checks(client: Client) -> None:
    broken = row_of(await page(client, "/monitor/"), "broken")
    assert broken.count('<line class="fail"') == 1


@pytest.mark.parametrize("path", ["/monitor/", "/monitor/web"])
async def test_pages_keep_to_the_csp_without_inline_script_style_or_external_files(
    client: Client, path: str
) -> None:
    html = await page(client, path)
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert "<style" not in html and " style=" not in html
    assert re.findall(r'(?:src|href)="(?:https?:)?//', html) == []
    assert '<script src="/monitor/static/monitor.js">' in html


@pytest.mark.parametrize(
    ("name", "kind", "sample"),
    [("monitor.js", "javascript", "new WebSocket("), ("monitor.css", "css", ".state-up")],
)
async def test_static_script_and_styles_are_served(client: Client, name: str, kind: str, sample: str) -> None:
    async with client.get(f"/monitor/static/{name}") as resp:
        assert resp.status == 200
        assert resp.content_type.endswith(kind)  # text/ or application/javascript, as the system says
        assert sample in await resp.text()


async def test_detail_page_lists_the_recent_checks(client: Client, upstream: Upstream) -> None:
    await check_now(client, "broken")
    html = await page(client, "/monitor/broken")
    assert "<h1>broken" in html
    assert upstream.url("/fail") in html
    assert html.count("status: expected 200, got 500") == 2


async def test_detail_page_of_unknown_target_is_404(client: Client) -> None:
    async with client.get("/monitor/nothing-here") as resp:
        assert resp.status == 404
        assert resp.content_type == "text/html"
        assert "There is no monitored target &#39;nothing-here&#39;." in await resp.text()


async def receive(ws: Any, kind: str) -> dict[str, Any]:
    """Return the next message of a type from the live websocket, skipping others (up to 20)."""
    for _ in range(20):
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == WSMsgType.TEXT
        message = msg.json()
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind} message")


async def test_live_websocket_sends_the_last_checks_on_connecting(client: Client) -> None:
    async with client.ws_connect("/monitor/ws") as ws:
        first = [await asyncio.wait_for(ws.receive_json(), 5) for _ in range(2)]
    shown = {(m["type"], m["target"], m["state"]) for m in first}
    assert shown == {("check", "web", "up"), ("check", "broken", "down")}


async def test_live_websocket_first_messages_carry_each_targets_uptime(client: Client) -> None:
    async with client.ws_connect("/monitor/ws") as ws:
        first = [await asyncio.wait_for(ws.receive_json(), 5) for _ in range(2)]
    uptimes = {m["target"]: m["uptime"] for m in first}
    assert uptimes == {"web": {"hour": 100.0, "day": 100.0}, "broken": {"hour": 0.0, "day": 0.0}}


async def test_live_websocket_sends_state_changes_made_before_connecting_oldest_first(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/flaky"))]))
    await first_check(client, "site")
    upstream.flaky = 503
    await check_now(client, "site")
    upstream.flaky = 200
    await check_now(client, "site")
    async with client.ws_connect("/monitor/ws") as ws:
        first = [await asyncio.wait_for(ws.receive_json(), 5) for _ in range(3)]
    assert [m["type"] for m in first] == ["check", "change", "change"]
    assert [(m["from"], m["to"]) for m in first[1:]] == [("up", "down"), ("down", "up")]
    assert first[0]["uptime"] == {"hour": 66.67, "day": 66.67}


async def test_live_websocket_sends_each_new_check(client: Client) -> None:
    async with client.ws_connect("/monitor/ws") as ws:
        for _ in range(2):
            await asyncio.wait_for(ws.receive_json(), 5)
        answer = await check_now(client, "web")
        message = await receive(ws, "check")
    assert (message["target"], message["check"]) == ("web", answer["check"])


async def test_live_websocket_sends_state_changes(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, upstream: Upstream
) -> None:
    client = await aiohttp_client(make_monitor([target("site", upstream.url("/flaky"))]))
    await first_check(client, "site")
    async with client.ws_connect("/monitor/ws") as ws:
        upstream.flaky = 503
        await check_now(client, "site")
        change = await receive(ws, "change")
    assert (change["target"], change["from"], change["to"]) == ("site", "up", "down")
