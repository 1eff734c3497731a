"""Publish/subscribe by topic: in-process (`memory://`, the default) or Redis (`redis://host:port/db`).

Messages are JSON values: the in-process backend encodes and decodes them as a networked
backend would, so code that works here works across processes. Each subscription has a
bounded queue; a subscriber that falls behind loses its oldest messages (counted in
`dropped`), never the publisher's time or the server's memory.

With Redis, a message reaches this process's subscribers directly and the other processes
through Redis pub/sub. If Redis goes away, local subscribers keep getting local messages,
one warning is logged, `ready()` is False, and the bus reconnects and resubscribes by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from yarl import URL

from . import jsonenc
from .config import ConfigError, Setting

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

logger = logging.getLogger("nestor.bus")
T = TypeVar("T")

SCHEMES = ("memory", "redis", "rediss", "unix")


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
CONNECT_TIMEOUT = 2.0  # seconds to reach Redis before it counts as down
COMMAND_TIMEOUT = 2.0  # seconds for one PUBLISH or PING
CONFIRM_TIMEOUT = 2.0  # seconds `async with subscribe(...)` waits for Redis to confirm
RECONNECT_DELAYS = (0.1, 5.0)  # first and longest pause between attempts to reach Redis again


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


class RedisBus(Bus):
    """Redis pub/sub between processes; subscribers of this process get its messages directly."""

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError:
            raise ConfigError(
                f"bus_url {url!r} needs the redis package: pip install 'nestor[redis]'"
            ) from None
        self.shown_url = _without_password(url)
        options: dict[str, Any] = {"decode_responses": True, "socket_connect_timeout": CONNECT_TIMEOUT}
        try:
            _check_database(url)
            # One retry, for a pooled connection that went stale while Redis restarted.
            self._commands = Redis.from_url(
                url, socket_timeout=COMMAND_TIMEOUT, retry=Retry(NoBackoff(), 1), **options
            )
            # No retry and no read timeout: the listener sees every outage and handles it itself.
            self._listener = Redis.from_url(
                url, socket_keepalive=True, retry=Retry(NoBackoff(), 0), **options
            )
        except ValueError as e:
            raise ConfigError(f"bus_url {self.shown_url!r}: {e}") from None
        self._errors = (RedisError, OSError)
        # Redis pub/sub ignores the database number; the channel prefix keeps databases apart.
        self._channel_prefix = f"nestor:{self._commands.connection_pool.connection_kwargs.get('db', 0)}:"
        self._origin = os.urandom(8).hex()
        self._control = f"{self._channel_prefix}bus:{self._origin}"  # keeps the listener subscribed to something
        self._pubsub: PubSub | None = None  # set while the listener is connected
        self._confirmed: dict[str, asyncio.Future[None]] = {}  # topics subscribed in Redis
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener_task: asyncio.Task[None] | None = None
        self._warned = False

    async def start(self) -> None:
        """Connect once (a Redis that is down is not fatal), then listen in a background task."""
        try:
            await self._connect()
        except self._errors as e:
            self._lost(e)
        self._listener_task = asyncio.create_task(self._run(), name="nestor.bus listener")

    async def publish(self, topic: str, message: Any) -> int:
        """Send a JSON value to every subscriber of `topic`; return how many in this process got it."""
        payload = jsonenc.dumps(message)
        self.counts["published"] += 1
        delivered = self._deliver(topic, payload)
        if self._pubsub is not None:  # while Redis is down, skip it rather than wait for it
            envelope = f'{{"origin": "{self._origin}", "message": {payload}}}'
            try:
                await _cancellable(self._commands.publish(self._channel_prefix + topic, envelope))
            except self._errors as e:
                self._lost(e)
            else:
                self._recovered()
        return delivered

    async def listening(self, topics: Iterable[str]) -> None:
        """Return once Redis confirmed `topics` (at once while Redis is down)."""
        waiting = [self._confirmed[t] for t in topics if t in self._confirmed]
        if waiting:
            await asyncio.wait(waiting, timeout=CONFIRM_TIMEOUT)

    async def ready(self) -> bool:
        """Whether Redis is reachable and this process listens to it."""
        if self._pubsub is None:
            return False
        try:
            await _cancellable(self._commands.ping())
        except self._errors as e:
            self._lost(e)
            return False
        self._recovered()
        return True

    async def close(self) -> None:
        """Stop listening and close the connections to Redis."""
        tasks = [t for t in (self._listener_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self._disconnect()
        await self._listener.aclose()
        await self._commands.aclose()
        await super().close()

    # -- the listener ------------------------------------------------------------------------

    def _attach(self, subscription: Subscription, topic: str) -> None:
        super()._attach(subscription, topic)
        self._request(topic)

    def _request(self, topic: str) -> None:
        """Subscribe to `topic` in Redis, in the background, unless it is (being) done."""
        if self._pubsub is None or topic in self._confirmed:
            return  # while Redis is down, reconnecting subscribes to every local topic
        self._confirmed[topic] = asyncio.get_running_loop().create_future()
        self._spawn(self._pubsub.subscribe, self._channel_prefix + topic)

    def _spawn(self, command: Callable[[str], Awaitable[None]], channel: str) -> None:
        # SUBSCRIBE and UNSUBSCRIBE run in their own tasks, so the listener only ever reads.
        task = asyncio.create_task(self._send(command, channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, command: Callable[[str], Awaitable[None]], channel: str) -> None:
        try:
            await _cancellable(command(channel))
        except self._errors as e:
            self._lost(e)  # the listener notices too, reconnects and subscribes again

    async def _connect(self) -> None:
        pubsub = self._listener.pubsub()
        topics = list(self._topics)
        try:
            await _cancellable(pubsub.subscribe(self._control, *(self._channel_prefix + t for t in topics)))
        except BaseException:
            await pubsub.aclose()
            raise
        loop = asyncio.get_running_loop()
        self._confirmed = {topic: loop.create_future() for topic in topics}
        self._pubsub = pubsub
        for topic in list(self._topics):  # those that came while SUBSCRIBE was on its way
            self._request(topic)
        self._recovered()

    async def _disconnect(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        for future in self._confirmed.values():
            if not future.done():
                future.set_result(None)  # nobody waits for a confirmation that cannot come
        self._confirmed = {}
        if pubsub is not None:
            await pubsub.aclose()

    async def _run(self) -> None:
        delay = RECONNECT_DELAYS[0]
        while True:
            if self._pubsub is not None:
                try:
                    await self._listen(self._pubsub)
                except self._errors as e:
                    self._lost(e)
                except Exception:
                    logger.exception("bus: the Redis listener failed; connecting again")
                await self._disconnect()
                delay = RECONNECT_DELAYS[0]
            await asyncio.sleep(delay)
            try:
                await self._connect()
            except self._errors as e:
                self._lost(e)
                delay = min(delay * 2, RECONNECT_DELAYS[1])

    async def _listen(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None or message["channel"] == self._control:
                continue
            topic = message["channel"][len(self._channel_prefix) :]
            if message["type"] == "subscribe":
                future = self._confirmed.get(topic)
                if future is not None and not future.done():
                    future.set_result(None)
            elif message["type"] == "message":
                if topic in self._topics:
                    self._receive(topic, message["data"])
                elif self._confirmed.pop(topic, None) is not None:
                    self._spawn(pubsub.unsubscribe, message["channel"])  # nobody here listens any more

    def _receive(self, topic: str, data: str) -> None:
        try:
            envelope = json.loads(data)
            origin, message = envelope["origin"], envelope["message"]
        except (ValueError, TypeError, KeyError):
            logger.debug("bus: ignored a message on %s that no Nestor bus published", topic)
            return
        if origin != self._origin:  # this process's own messages were delivered when published
            self._deliver(topic, jsonenc.dumps(message))

    def _recovered(self) -> None:
        if self._warned:
            self._warned = False
            logger.info("bus: Redis at %s is back; listening to %d topics", self.shown_url, len(self._topics))

    def _lost(self, error: BaseException) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "bus: Redis at %s is unavailable (%s: %s); messages reach this process only "
                "until it is back",
                self.shown_url,
                type(error).__name__,
                error,
            )


async def _cancellable(command: Awaitable[T]) -> T:
    """Await a redis-py command, and raise a cancellation that arrived meanwhile.

    redis-py writes through `asyncio.wait_for`, which on Python 3.11 returns the result
    instead of raising when the task is cancelled as the write completes: a listener or
    a publishing loop would then never stop.
    """
    task = asyncio.current_task()
    requested = task.cancelling() if task is not None else 0
    result = await command
    if task is not None and task.cancelling() > requested:
        raise asyncio.CancelledError
    return result


def _without_password(url: str) -> str:
    try:
        parsed = URL(url)
        return str(parsed.with_password("***")) if parsed.password else url
    except ValueError:
        return url.partition("://")[0] + "://…"  # not even a URL: show nothing that may be secret


def _check_database(url: str) -> None:
    # redis-py quietly takes database 0 for a path that is not a number.
    path = URL(url).path if url.startswith(("redis:", "rediss:")) else "/"
    if path.strip("/") and not path.strip("/").isdigit():
        raise ValueError(f"the path {path!r} must be a database number, as in redis://host:6379/0")


BUS = web.AppKey("nestor.bus", Bus)


def bus_for(url: str) -> Bus:
    """Return the backend named by `bus_url`."""
    try:
        _check_scheme(url)
    except ValueError as e:
        raise ConfigError(f"bus_url {e}") from None
    return MemoryBus() if url.startswith("memory:") else RedisBus(url)


async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the bus under `BUS`, connected at start-up and closed at teardown."""
    bus = bus_for(app[BUS_URL])
    await bus.start()
    app[BUS] = bus
    yield
    await bus.close()
