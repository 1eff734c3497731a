"""The in-process message bus: topics, JSON values, bounded subscriber queues."""

from __future__ import annotations

import asyncio

import pytest

from nestor.bus import MemoryBus, bus_for
from nestor.config import ConfigError


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


def test_unknown_bus_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported scheme"):
        bus_for("kafka://localhost")
