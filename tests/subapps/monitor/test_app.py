"""The monitor mounted in Nestor: its routes, its readiness on /health, its start-up order."""

from __future__ import annotations

from pytest_aiohttp import AiohttpClient

from nestor.tree import TREE

from .conftest import BuildMonitor, closed_port_url, target


def test_monitor_mounts_without_route_problems(make_monitor: BuildMonitor) -> None:
    app = make_monitor([target("site", closed_port_url())])
    assert app[TREE].warnings == []


async def test_health_reports_the_monitor_ready(aiohttp_client: AiohttpClient, make_monitor: BuildMonitor) -> None:
    client = await aiohttp_client(make_monitor([target("site", closed_port_url())]))
    async with client.get("/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["subapps"]["monitor"] == {"ready": True}


async def test_monitor_page_is_listed_in_the_navigation(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor
) -> None:
    client = await aiohttp_client(make_monitor([target("site", closed_port_url())]))
    async with client.get("/") as resp:
        assert resp.status == 200
        assert '<a href="/monitor/">Monitor</a>' in await resp.text()
