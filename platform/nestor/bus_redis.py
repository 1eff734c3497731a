"""The Redis bus backend (`bus_url = "redis://host:port/db"`, the `redis` extra).

A message reaches this process's subscribers directly and the other processes through Redis
pub/sub. If Redis goes away, local subscribers keep getting local messages, one warning is
logged, `ready()` is False, and the bus reconnects and resubscribes by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from yarl import URL

from . import jsonenc
from .bus import Bus, Subscription, logger
from .config import ConfigError

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub
    from redis.asyncio.lock import Lock

T = TypeVar("T")
CONNECT_TIMEOUT = 2.0  # seconds to reach Redis before it counts as down
COMMAND_TIMEOUT = 2.0  # seconds for one PUBLISH or PING
CONFIRM_TIMEOUT = 2.0  # seconds `async with subscribe(...)` waits for Redis to confirm
RECONNECT_DELAYS = (0.1, 5.0)  # first and longest pause between attempts to reach Redis again


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

    async def count(self, name: str, window: float) -> tuple[int, float]:
        """Count in Redis, for every process and host of the site (in this process while Redis is down)."""
        key = f"{self._channel_prefix}count:{name}"
        try:
            async with self._commands.pipeline(transaction=True) as pipe:
                pipe.incr(key).pexpire(key, int(window * 1000), nx=True).pttl(key)
                count, _, left = await _cancellable(pipe.execute())
        except self._errors as e:
            self._lost(e)
            return await super().count(name, window)
        self._recovered()
        return int(count), max(int(left), 0) / 1000

    def lock(self, name: str, ttl: float) -> Lock:
        """Return a redis-py lock named `name` (in this bus's database) that expires after `ttl` seconds."""
        return self._commands.lock(f"{self._channel_prefix}{name}", timeout=ttl, thread_local=False)

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
