"""Publish/subscribe by topic: in-process (`memory://`, the default) or Redis (`redis://host:port/db`).

Messages are JSON values: the in-process backend encodes and decodes them as a networked
backend would, so code that works here works across processes. Each subscription has a
bounded queue; a subscriber that falls behind loses its oldest messages (counted in
`dropped`), never the publisher's time or the server's memory.

The Redis backend is in `nestor.bus_redis`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiohttp import web

from . import jsonenc
from .config import ConfigError, Setting

logger = logging.getLogger("nestor.bus")

SCHEMES = ("memory", "redis", "rediss", "unix")
MAX_COUNTERS = 100_000  # counters an in-process count() keeps before it drops the expired ones


def _check_scheme(url: str) -> str:
    if url.partition("://")[0] not in SCHEMES:
        raise ValueError(f"{url!r}: unsupported scheme; use memory:// or redis://host:port/db")
    return url


BUS_URL = Setting(
    "bus_url",
    str,
    "memory://",
    validate=_check_scheme,
    help="Message bus: memory:// (one process) or redis://host:port/db (across processes)",
    root_only=True,
)


class Subscription:
    """Messages of some topics for one subscriber: `async for message in subscription`."""

    def __init__(self, bus: Bus, maxsize: int) -> None:
        self.dropped = 0
        self._bus = bus
        self._topics: set[str] = set()
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    @property
    def topics(self) -> frozenset[str]:
        """The topics this subscription receives."""
        return frozenset(self._topics)

    async def add(self, topic: str) -> None:
        """Also receive `topic`; once this returns, messages published anywhere on it arrive."""
        if topic not in self._topics:
            self._topics.add(topic)
            self._bus._attach(self, topic)
        await self._bus.listening([topic])

    def discard(self, topic: str) -> None:
        """Stop receiving `topic`; unknown topics are ignored."""
        if topic in self._topics:
            self._topics.discard(topic)
            self._bus._detach(self, topic)

    def deliver(self, payload: str) -> None:
        """Queue a message; drop the oldest when the subscriber is behind."""
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            self._bus.counts["dropped"] += 1
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
        await self._bus.listening(self._topics)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving messages."""
        for topic in list(self._topics):
            self.discard(topic)


class Bus:
    """What every backend offers; it keeps this process's subscriptions by topic."""

    def __init__(self) -> None:
        self._topics: dict[str, set[Subscription]] = {}
        self.counts = {"published": 0, "delivered": 0, "dropped": 0}  # since start, for metrics
        self._counters: dict[str, tuple[int, float]] = {}  # count(): name -> (count, monotonic end)

    async def publish(self, topic: str, message: Any) -> int:
        """Send a JSON value to every subscriber of `topic`; return how many in this process got it."""
        raise NotImplementedError

    def subscribe(self, *topics: str, maxsize: int = 1000) -> Subscription:
        """Return a subscription to `topics` (use it as an async context manager)."""
        for topic in topics:
            if not isinstance(topic, str):  # e.g. a queue size passed where maxsize= was meant
                raise TypeError(f"a bus topic is a str, not {type(topic).__name__} ({topic!r})")
        subscription = Subscription(self, maxsize)
        for topic in topics:
            subscription._topics.add(topic)
            self._attach(subscription, topic)
        return subscription

    async def listening(self, topics: Iterable[str]) -> None:
        """Return once messages published anywhere on `topics` reach this process."""

    async def count(self, name: str, window: float) -> tuple[int, float]:
        """Add one to the counter `name`, shared by every process of the site; return (count, seconds left).

        A counter starts at its first count and is gone `window` seconds later (a fixed window).
        This one counts in this process; the Redis bus counts in Redis for the whole site.
        """
        now = time.monotonic()
        if len(self._counters) > MAX_COUNTERS:  # forget the expired ones before growing further
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        count, ends = self._counters.get(name, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window
        self._counters[name] = (count + 1, ends)
        return count + 1, ends - now

    def stats(self) -> dict[str, int]:
        """Return the messages published, delivered and dropped here since start, and the open subscriptions."""
        subscriptions = {id(s) for subscribers in self._topics.values() for s in subscribers}
        return {**self.counts, "subscriptions": len(subscriptions)}

    async def start(self) -> None:
        """Connect, if the backend has anything to connect to."""

    async def ready(self) -> bool:
        """Whether messages reach every process."""
        return True

    async def close(self) -> None:
        """Forget every subscription."""
        self._topics.clear()

    def _attach(self, subscription: Subscription, topic: str) -> None:
        self._topics.setdefault(topic, set()).add(subscription)

    def _detach(self, subscription: Subscription, topic: str) -> None:
        subscribers = self._topics.get(topic)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._topics[topic]

    def _deliver(self, topic: str, payload: str) -> int:
        subscribers = self._topics.get(topic, ())
        for subscription in subscribers:
            subscription.deliver(payload)
        self.counts["delivered"] += len(subscribers)
        return len(subscribers)


class MemoryBus(Bus):
    """The in-process backend: one process, no server."""

    async def publish(self, topic: str, message: Any) -> int:
        """Send a JSON value to every subscriber of `topic`; return how many got it."""
        payload = jsonenc.dumps(message)
        self.counts["published"] += 1
        return self._deliver(topic, payload)


BUS = web.AppKey("nestor.bus", Bus)


async def forward(
    ws: web.WebSocketResponse, *subscriptions: Subscription, keep: Callable[[Any], bool] | None = None
) -> None:
    """Send the messages of `subscriptions` (those `keep` accepts) to `ws` until its client closes it.

    Reads the websocket meanwhile (a client that only watches sends nothing; reading is how
    its close is noticed) and returns when it is closed. Messages go out as JSON text frames.
    """

    async def send(subscription: Subscription) -> None:
        async for message in subscription:
            if ws.closed:
                return
            if keep is None or keep(message):
                try:
                    await ws.send_str(jsonenc.dumps(message))
                except ConnectionError:
                    return  # the client left while we were sending

    senders = [asyncio.create_task(send(s)) for s in subscriptions]
    try:
        async for _message in ws:
            pass
    finally:
        for task in senders:
            task.cancel()
        if senders:
            await asyncio.wait(senders)


def bus_for(url: str) -> Bus:
    """Return the backend named by `bus_url`."""
    try:
        _check_scheme(url)
    except ValueError as e:
        raise ConfigError(f"bus_url {e}") from None
    if url.startswith("memory:"):
        return MemoryBus()
    from .bus_redis import RedisBus  # only a redis:// bus needs the redis package

    return RedisBus(url)


async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the bus under `BUS`, connected at start-up and closed at teardown."""
    bus = bus_for(app[BUS_URL])
    await bus.start()
    app[BUS] = bus
    yield
    await bus.close()
