"""Publish/subscribe by topic. In-process by default (`bus_url = "memory://"`).

Messages are JSON values: the in-process backend encodes and decodes them as a networked
backend would, so code that works here works across processes. Each subscription has a
bounded queue; a subscriber that falls behind loses its oldest messages (counted in
`dropped`), never the publisher's time or the server's memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from aiohttp import web

from .config import ConfigError, Setting

BUS_URL = Setting(
    "bus_url", str, "memory://", help="Message bus: memory:// (one process)", root_only=True
)


class Subscription:
    """Messages of one topic for one subscriber: `async for message in subscription`."""

    def __init__(self, bus: MemoryBus, topic: str, maxsize: int) -> None:
        self.topic = topic
        self.dropped = 0
        self._bus = bus
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    def deliver(self, payload: str) -> None:
        """Queue a message; drop the oldest when the subscriber is behind."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(json.loads(payload))

    async def get(self) -> Any:
        """Return the next message, waiting for one."""
        return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            yield await self._queue.get()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving messages."""
        self._bus.unsubscribe(self)


class Bus(Protocol):
    """What every bus backend offers."""

    async def publish(self, topic: str, message: Any) -> int: ...

    def subscribe(self, topic: str, maxsize: int = 1000) -> Subscription: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryBus:
    """The in-process backend: one process, no server."""

    def __init__(self) -> None:
        self._topics: dict[str, set[Subscription]] = {}

    async def publish(self, topic: str, message: Any) -> int:
        """Send a JSON value to every subscriber of `topic`; return how many got it."""
        payload = json.dumps(message)
        subscribers = self._topics.get(topic, ())
        for subscription in subscribers:
            subscription.deliver(payload)
        return len(subscribers)

    def subscribe(self, topic: str, maxsize: int = 1000) -> Subscription:
        """Return a subscription to `topic` (use it as an async context manager)."""
        subscription = Subscription(self, topic, maxsize)
        self._topics.setdefault(topic, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Remove a subscription; unknown ones are ignored."""
        subscribers = self._topics.get(subscription.topic)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._topics[subscription.topic]

    async def ready(self) -> bool:
        """The in-process bus is always ready."""
        return True

    async def close(self) -> None:
        """Forget every subscription."""
        self._topics.clear()


BUS = web.AppKey("nestor.bus", MemoryBus)


def bus_for(url: str) -> MemoryBus:
    """Return the backend named by `bus_url`."""
    if url.startswith("memory://"):
        return MemoryBus()
    raise ConfigError(f"bus_url {url!r}: unsupported scheme; use memory://")


async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the bus under `BUS`, closed at teardown."""
    bus = bus_for(app[BUS_URL])
    app[BUS] = bus
    yield
    await bus.close()
