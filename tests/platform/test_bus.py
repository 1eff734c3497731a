"""The message bus: topics, JSON values, bounded subscriber queues; in-process and through Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from nestor.bus import Bus, MemoryBus, bus_for, forward
from nestor.bus_redis import RedisBus
from nestor.config import ConfigError

from ..conftest import MakeApp
from ..fixtures.redis import RedisServer, redis_server  # noqa: F401 (a fixture)

WAIT = 10.0
MakeBus = Callable[[str], Awaitable[RedisBus]]


async def test_every_subscriber_of_a_topic_gets_each_message_in_order() -> None:
    bus = MemoryBus()
    async with bus.subscribe("room") as first, bus.subscribe("room") as second, bus.subscribe("other") as other:
        assert await bus.publish("room", {"n": 1}) == 2
        await bus.publish("room", {"n": 2})
        for sub in (first, second):
            assert [await sub.get(), await sub.get()] == [{"n": 1}, {"n": 2}]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(other.get(), 0.05)


async def test_messages_are_copies_as_across_processes() -> None:
    bus = MemoryBus()
    message = {"items": [1, 2]}
    async with bus.subscribe("t") as sub:
        await bus.publish("t", message)
        received = await sub.get()
    received["items"].append(3)
    assert message == {"items": [1, 2]}


async def test_publishing_a_non_json_value_fails_for_the_publisher() -> None:
    with pytest.raises(TypeError):
        await MemoryBus().publish("t", {"when": object()})


async def test_a_slow_subscriber_loses_its_oldest_messages_not_memory() -> None:
    bus = MemoryBus()
    async with bus.subscribe("t", maxsize=3) as sub:
        for n in range(10):
            await bus.publish("t", n)
        assert sub.dropped == 7
        assert [await sub.get() for _ in range(3)] == [7, 8, 9]


async def test_closed_subscription_receives_nothing_more() -> None:
    bus = MemoryBus()
    sub = bus.subscribe("t")
    sub.close()
    assert await bus.publish("t", 1) == 0


async def test_one_subscription_can_follow_topics_as_they_come_and_go() -> None:
    bus = MemoryBus()
    async with bus.subscribe() as sub:
        await sub.add("a")
        await sub.add("b")
        sub.discard("a")
        assert (await bus.publish("a", "for a"), await bus.publish("b", "for b")) == (0, 1)
        assert await sub.get() == "for b"
        assert sub.topics == {"b"}


async def test_stats_count_messages_and_open_subscriptions() -> None:
    bus = MemoryBus()
    async with bus.subscribe("t", maxsize=1) as sub, bus.subscribe("t", "u"):
        await bus.publish("t", 1)
        await bus.publish("t", 2)  # the first subscriber keeps only the last one
        await bus.publish("nobody", 3)
        assert bus.stats() == {"published": 3, "delivered": 4, "dropped": 1, "subscriptions": 2}
        assert await sub.get() == 2
    assert bus.stats()["subscriptions"] == 0


@pytest.mark.parametrize("url", ["kafka://localhost", "localhost:6379", ""])
def test_unknown_bus_scheme_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="unsupported scheme"):
        bus_for(url)


@pytest.mark.parametrize(
    ("url", "says"),
    [("redis://localhost:port/0", "port"), ("redis://localhost:6379/zero", "database number")],
)
def test_malformed_redis_url_is_a_config_error(url: str, says: str) -> None:
    pytest.importorskip("redis")
    with pytest.raises(ConfigError, match=says):
        bus_for(url)


def test_unknown_bus_scheme_in_config_stops_create_app(make_app: MakeApp) -> None:
    with pytest.raises(ConfigError, match="bus_url.*unsupported scheme"):
        make_app({"nestor": {"bus_url": "amqp://localhost"}})


def test_bus_url_picks_the_backend() -> None:
    pytest.importorskip("redis")
    assert isinstance(bus_for("memory://"), MemoryBus)
    assert isinstance(bus_for("redis://127.0.0.1:6379/0"), RedisBus)


# -- Redis ------------------------------------------------------------------------------------


@pytest.fixture
async def make_bus() -> AsyncIterator[MakeBus]:
    """Return `make_bus(url)`: a started Redis bus (one per process it stands for), closed after the test."""
    buses: list[RedisBus] = []

    async def make(url: str) -> RedisBus:
        bus = bus_for(url)
        assert isinstance(bus, RedisBus)
        await bus.start()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close()


async def until(predicate: Callable[[], Awaitable[bool]]) -> bool:
    """Poll `predicate` every 50 ms for up to WAIT seconds; return its last value."""
    for _ in range(int(WAIT / 0.05)):
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return await predicate()


async def crossing(sender: Bus, receiver_sub: Any, topic: str, message: Any) -> bool:
    """Publish until the message reaches the other process (it only says it is back when it is)."""

    async def arrived() -> bool:
        await sender.publish(topic, message)
        try:
            return await asyncio.wait_for(receiver_sub.get(), 0.1) == message
        except TimeoutError:
            return False

    return await until(arrived)


async def test_redis_message_reaches_a_subscriber_in_another_process(redis_server: RedisServer, make_bus: MakeBus) -> None:
    here, there = await make_bus(redis_server.url()), await make_bus(redis_server.url())
    async with there.subscribe("room") as sub:
        await here.publish("room", {"text": "hello"})
        assert await asyncio.wait_for(sub.get(), WAIT) == {"text": "hello"}


async def test_redis_subscriber_in_the_publishing_process_gets_the_message_once(
    redis_server: RedisServer, make_bus: MakeBus
) -> None:
    bus, other = await make_bus(redis_server.url()), await make_bus(redis_server.url())
    async with bus.subscribe("room") as sub, other.subscribe("room") as other_sub:
        assert await bus.publish("room", 1) == 1
        await bus.publish("room", 2)
        assert [await asyncio.wait_for(other_sub.get(), WAIT) for _ in range(2)] == [1, 2]  # both went round Redis
        await other.publish("room", 3)  # comes back through Redis after any echo of 1 and 2 would
        assert [await asyncio.wait_for(sub.get(), WAIT) for _ in range(3)] == [1, 2, 3]


async def test_redis_databases_do_not_share_messages(redis_server: RedisServer, make_bus: MakeBus) -> None:
    one, two = await make_bus(redis_server.url(1)), await make_bus(redis_server.url(2))
    listener = await make_bus(redis_server.url(2))
    async with listener.subscribe("room") as sub:
        await one.publish("room", "from database 1")
        await two.publish("room", "from database 2")
        assert await asyncio.wait_for(sub.get(), WAIT) == "from database 2"


async def test_redis_message_from_a_foreign_publisher_is_ignored(redis_server: RedisServer, make_bus: MakeBus) -> None:
    import redis.asyncio

    bus, other = await make_bus(redis_server.url()), await make_bus(redis_server.url())
    async with bus.subscribe("room") as sub, redis.asyncio.Redis.from_url(redis_server.url()) as raw:
        await raw.publish("nestor:0:room", "not json {")
        await other.publish("room", "from nestor")
        assert await asyncio.wait_for(sub.get(), WAIT) == "from nestor"


async def test_redis_down_keeps_local_delivery_and_logs_one_warning(
    redis_server: RedisServer, make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await make_bus(redis_server.url())
    async with bus.subscribe("room") as sub:
        assert await bus.ready()
        redis_server.stop()
        assert await until(lambda: _not(bus.ready()))
        for n in range(5):
            assert await bus.publish("room", n) == 1
        assert [await sub.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    warnings = [r for r in caplog.records if r.name == "nestor.bus" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unavailable" in warnings[0].getMessage()


async def test_redis_back_resubscribes_without_a_restart(redis_server: RedisServer, make_bus: MakeBus) -> None:
    here, there = await make_bus(redis_server.url()), await make_bus(redis_server.url())
    async with there.subscribe("room") as sub:
        redis_server.stop()
        assert await until(lambda: _not(there.ready()))
        redis_server.start()
        assert await until(there.ready)
        assert await crossing(here, sub, "room", "after the restart")


async def test_redis_down_at_start_up_is_not_fatal(redis_server: RedisServer, make_bus: MakeBus) -> None:
    redis_server.stop()
    bus = await make_bus(redis_server.url())
    async with bus.subscribe("room") as sub:
        assert not await bus.ready()
        assert await bus.publish("room", "local") == 1
        assert await sub.get() == "local"
        redis_server.start()
        other = await make_bus(redis_server.url())
        assert await until(bus.ready)
        assert await crossing(other, sub, "room", "across")


async def test_a_publishing_loop_stops_when_cancelled(redis_server: RedisServer, make_bus: MakeBus) -> None:
    bus = await make_bus(redis_server.url())

    async def publish_forever() -> None:
        while True:
            await bus.publish("t", "again")

    for attempt in range(300):  # cancel at many points of a publish, some as its write completes
        task = asyncio.create_task(publish_forever())
        for _ in range(1 + attempt % 30):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=WAIT)
        assert done == {task}, f"attempt {attempt}: the cancelled publisher went on"
        assert task.cancelled()


async def test_health_says_the_bus_is_not_ready_while_redis_is_down(
    aiohttp_client: AiohttpClient, make_app: MakeApp, redis_server: RedisServer
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"bus_url": redis_server.url()}}, specs=[]))

    async def health() -> tuple[int, list[str]]:
        async with client.get("/health") as resp:
            return resp.status, (await resp.json())["not_ready"]

    async def ready() -> tuple[int, list[str], list[str]]:
        async with client.get("/health/ready") as resp:
            body = await resp.json()
            return resp.status, body["not_ready"], body["degraded"]

    assert await health() == (200, [])
    redis_server.stop()
    assert await until(lambda: _equal(health(), (503, ["bus"])))
    # A load balancer keeps the instance: its pages work, messages reach this process's clients.
    assert await ready() == (200, [], ["bus"])
    redis_server.start()
    assert await until(lambda: _equal(health(), (200, [])))
    assert await ready() == (200, [], [])


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def _equal(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


def test_topic_that_is_not_a_string_is_refused_at_once() -> None:
    # A queue size passed where maxsize= was meant once made a Redis subscription fail later.
    with pytest.raises(TypeError, match="a bus topic is a str"):
        MemoryBus().subscribe("monitor.checks", 100)  # type: ignore[arg-type]


async def test_forward_sends_kept_messages_until_the_client_closes(aiohttp_client: AiohttpClient) -> None:
    bus = MemoryBus()
    done = asyncio.Event()

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            async with bus.subscribe("t") as subscription:
                await forward(ws, subscription, keep=lambda m: m["n"] % 2 == 0)
        finally:  # aiohttp cancels the handler once the closed connection is gone
            done.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", socket)
    client = await aiohttp_client(app)
    async with client.ws_connect("/ws") as ws:
        for n in range(4):
            while await bus.publish("t", {"n": n}) == 0:  # the handler subscribes once connected
                await asyncio.sleep(0.01)
        assert [(await ws.receive_json())["n"] for _ in range(2)] == [0, 2]
    await asyncio.wait_for(done.wait(), 5)
    assert bus.stats()["subscriptions"] == 0
