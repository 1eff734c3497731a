"""/metrics: Prometheus text with requests by sub-app, route name, method and status; bounded labels."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pytest_aiohttp import AiohttpClient

from nestor.metrics import METRICS, OTHER_METHOD, UNMATCHED

from ..conftest import MakeApp

Client = TestClient[web.Request, web.Application]
REQUESTS = "nestor_http_requests_total"
LATENCY = "nestor_http_request_duration_seconds"


async def scrape(client: Client) -> list[Sample]:
    """Return every sample /metrics reports."""
    async with client.get("/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def requests(samples: list[Sample]) -> dict[tuple[str, str, str, str], float]:
    """{(subapp, route, method, status): count} of the request counter."""
    return {
        (s.labels["subapp"], s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in samples
        if s.name == REQUESTS
    }


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    return found[0] if found else None


async def send(client: Client, method: str, path: str, times: int = 1, **kwargs: object) -> None:
    for _ in range(times):
        async with client.request(method, path, **kwargs) as resp:
            await resp.read()


async def test_metrics_are_prometheus_text(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert "version=" in resp.headers["Content-Type"]
        text = await resp.text()
    assert f"# TYPE {REQUESTS} counter" in text
    assert f"# TYPE {LATENCY} histogram" in text


async def test_requests_are_counted_by_sub_app_route_method_and_status(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    await send(client, "GET", "/a/", times=3)
    await send(client, "GET", "/a/api/items/3")
    await send(client, "GET", "/a/api/items/4")
    await send(client, "POST", "/a/api/echo", json={"x": 1})
    await send(client, "GET", "/a/nope", times=2)
    await send(client, "GET", "/a/boom")
    await send(client, "DELETE", "/a/")
    counts = requests(await scrape(client))
    assert counts[("a", "a:index", "GET", "200")] == 3
    assert counts[("a.api", "a:api:item", "GET", "200")] == 2
    assert counts[("a.api", "a:api:echo", "POST", "200")] == 1
    assert counts[("a", UNMATCHED, "GET", "404")] == 2
    assert counts[("a", "a:boom", "GET", "500")] == 1
    assert counts[("a", UNMATCHED, "DELETE", "405")] == 1
    assert not [key for key in counts if key[0] == "b"]  # nothing was asked of /b


async def test_latency_is_observed_once_per_request(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    await send(client, "GET", "/a/", times=3)
    await send(client, "GET", "/a/slow")
    samples = await scrape(client)
    assert value(samples, f"{LATENCY}_count", subapp="a", route="a:index", method="GET") == 3
    slow = {"subapp": "a", "route": "a:slow", "method": "GET"}
    assert value(samples, f"{LATENCY}_count", **slow) == 1
    assert value(samples, f"{LATENCY}_bucket", le="0.1", **slow) == 0  # it sleeps 0.2 s
    assert value(samples, f"{LATENCY}_bucket", le="+Inf", **slow) == 1


async def test_a_thousand_unknown_paths_add_no_label_values(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    await send(client, "GET", "/a/unknown-0")
    await send(client, "GET", "/unknown-0")
    before = requests(await scrape(client))
    for i in range(1, 1000):
        await send(client, "GET", f"/a/unknown-{i}")
        await send(client, "GET", f"/unknown-{i}/deeper?q={i}")
    after = requests(await scrape(client))
    assert set(after) - set(before) == {("nestor", "metrics", "GET", "200")}  # the first scrape
    assert after[("a", UNMATCHED, "GET", "404")] == 1000
    assert after[("nestor", UNMATCHED, "GET", "404")] == 1000


# Methods the HTTP parser accepts but no route serves (the C parser refuses made-up ones with a 400).
@pytest.mark.parametrize("method", ["PROPFIND", "MKCOL", "PURGE"])
async def test_unknown_methods_share_one_label(
    aiohttp_client: AiohttpClient, make_app: MakeApp, method: str
) -> None:
    client = await aiohttp_client(make_app())
    await send(client, method, "/a/")
    counts = requests(await scrape(client))
    assert counts[("a", UNMATCHED, OTHER_METHOD, "405")] == 1
    assert not [key for key in counts if key[2] == method]


async def test_open_websockets_are_counted_per_sub_app(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    first = await client.ws_connect("/a/api/ws")
    second = await client.ws_connect("/a/api/ws")
    assert value(await scrape(client), "nestor_websockets_open", subapp="a.api", worker="0") == 2
    await first.close()
    await second.close()
    for _ in range(100):  # the server sees the close a moment later
        if value(await scrape(client), "nestor_websockets_open", subapp="a.api", worker="0") is None:
            break
        await asyncio.sleep(0.01)
    assert value(await scrape(client), "nestor_websockets_open", subapp="a.api", worker="0") is None
    assert requests(await scrape(client))[("a.api", "a:api:ws", "GET", "101")] == 2


async def test_database_pool_use_is_reported(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    samples = await scrape(client)
    assert value(samples, "nestor_db_pool_size", worker="0") == 5  # SQLAlchemy's pool for SQLite
    assert value(samples, "nestor_db_pool_checked_out", worker="0") == 0
    assert value(samples, "nestor_db_pool_overflow", worker="0") is not None


async def test_bus_messages_are_counted(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    from nestor import BUS

    client = await aiohttp_client(make_app())
    bus = client.app[BUS]
    async with bus.subscribe("news") as subscription:
        await bus.publish("news", {"n": 1})
        await bus.publish("news", {"n": 2})
        await subscription.get()
        samples = await scrape(client)
    assert value(samples, "nestor_bus_messages_published_total") == 2
    assert value(samples, "nestor_bus_messages_delivered_total") == 2


async def test_each_app_counts_only_its_own_requests(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    busy = await aiohttp_client(make_app())
    quiet = await aiohttp_client(make_app())
    await send(busy, "GET", "/a/", times=2)
    assert ("a", "a:index", "GET", "200") not in requests(await scrape(quiet))
    assert requests(await scrape(busy))[("a", "a:index", "GET", "200")] == 2


async def test_requests_by_sub_app_sums_every_route_and_status(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    await send(client, "GET", "/a/", times=2)
    await send(client, "GET", "/a/nope")
    await send(client, "GET", "/a/api/")
    counts = client.app[METRICS].requests_by_subapp()
    assert (counts["a"], counts["a.api"]) == (3, 1)
    assert "b" not in counts


async def test_a_metrics_token_keeps_metrics_from_anyone_without_it(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"metrics_token": "m" * 32}}))
    async with client.get("/metrics") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    async with client.get("/metrics", headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401
    async with client.get("/metrics", headers={"Authorization": f"Bearer {'m' * 32}"}) as resp:
        assert resp.status == 200
        assert "nestor_http_requests_total" in await resp.text()
