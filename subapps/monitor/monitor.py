"""The scheduler: checks each target at its interval, records the checks, announces changes.

One `Monitor` per monitor sub-app, created in its cleanup context with one aiohttp
`ClientSession`. Each target has its own loop, so a slow target never delays another;
a semaphore bounds how many checks are in flight at once. Every check is stored and
published on the bus (`monitor.checks`); a state change (`up` -> `down`, `down` -> `up`) is
stored too and published on `monitor.changes`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from nestor import BUS, DB, Bus, Lease, config_of, leader, served_url

from . import db, probe
from .settings import KEEP_CHECKS, MAX_CONCURRENT, TARGETS
from .targets import SELF_NAME, Target, UnknownTarget, from_setting, self_target

CHECKS_TOPIC = "monitor.checks"
CHANGES_TOPIC = "monitor.changes"
FOLLOW_QUEUE = 1000  # check messages a busy process may fall behind before it loses the oldest
# Start-up runs before the server listens: the first check of its own /health waits this long.
SELF_GRACE = 1.0
logger = logging.getLogger("monitor")


class MonitorClosed(RuntimeError):
    """The monitor is shutting down and takes no new checks."""


@dataclass(frozen=True)
class Status:
    """A target as pages and the API show it: its state, last check and uptime."""

    target: Target
    state: str  # up, down, or unknown before the first check
    last: db.Check | None
    uptime: db.Uptime

    def as_dict(self) -> dict[str, Any]:
        """Return the status as JSON."""
        return {
            **self.target.as_dict(),
            "state": self.state,
            "last_check": self.last.as_dict() if self.last else None,
            "uptime": self.uptime.as_dict(),
        }


class Monitor:
    """The targets, their current state, and the task that checks them."""

    def __init__(
        self,
        targets: Iterable[Target],
        session: aiohttp.ClientSession,
        engine: AsyncEngine,
        bus: Bus,
        *,
        concurrency: int,
        keep: int,
        first_delay: float = 0.0,
        locate: Callable[[], URL] | None = None,
    ) -> None:
        self.targets = {t.name: t for t in targets}
        self.latest: dict[str, db.Check] = {}
        self._session, self._engine, self._bus = session, engine, bus
        self._keep, self._first_delay = keep, first_delay
        self._slots = asyncio.Semaphore(concurrency)
        self._locks = {name: asyncio.Lock() for name in self.targets}
        self._manual: set[asyncio.Task[db.Check]] = set()
        self._locate = locate  # where this server listens, for the default target (its own /health)
        self.lease: Lease | None = None  # the site-wide lease the schedule runs under
        self._follower: asyncio.Task[None] | None = None
        self._closed = False

    def target(self, name: str) -> Target:
        """Return the target named `name`; raise UnknownTarget."""
        self._relocate()
        try:
            return self.targets[name]
        except KeyError:
            raise UnknownTarget(name) from None

    def state(self, name: str) -> str:
        """Return `up`, `down`, or `unknown` when the target was never checked."""
        last = self.latest.get(name)
        return last.state if last else "unknown"

    def _relocate(self) -> None:
        # The server binds its port after start-up: its own /health is found once it listens.
        if self._locate is not None and SELF_NAME in self.targets:
            url = self._locate().with_path("/health")
            if url != self.targets[SELF_NAME].url:
                self.targets[SELF_NAME] = replace(self.targets[SELF_NAME], url=url)

    @property
    def running(self) -> bool:
        """True while this process follows the checks and takes part in the schedule's lease."""
        lease_ok = self.lease is None or self.lease.running
        return self._follower is not None and not self._follower.done() and lease_ok

    async def start(self) -> None:
        """Load each target's last check (so a restart sees changes across it), then follow the checks.

        Every process follows the checks made anywhere in the site (through the bus), so its
        pages and its next change show the latest state; `run` is the schedule, which runs in
        one process of the site (see `monitor_ctx`).
        """
        self.latest.update(await db.latest_checks(self._engine, list(self.targets)))
        self._follower = asyncio.create_task(self._follow(), name="monitor follower")

    async def _follow(self) -> None:
        async with self._bus.subscribe(CHECKS_TOPIC, maxsize=FOLLOW_QUEUE) as checks:
            async for message in checks:
                self._learn(message)

    def _learn(self, message: dict[str, Any]) -> None:
        name = message.get("target")
        if name not in self.targets:
            return
        check = db.Check.from_dict(name, message["check"])
        known = self.latest.get(name)
        if known is None or check.id > known.id:  # a process's own checks arrive too: no-op
            self.latest[name] = check

    async def close(self) -> None:
        """Stop checking; wait for checks asked for through the API, which complete."""
        self._closed = True
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.wait({self._follower})
        if self._manual:
            await asyncio.wait(self._manual)  # each is bounded by its target's timeout

    async def run(self) -> None:
        """Check every target at its interval, until cancelled."""
        logger.info("monitor: this process checks the %d target(s) on schedule", len(self.targets))
        async with asyncio.TaskGroup() as group:
            for target in self.targets.values():
                group.create_task(self._every(target), name=f"monitor {target.name}")
            group.create_task(self._forget_removed(), name="monitor forget removed targets")

    async def _forget_removed(self) -> None:
        """Once a day (and at start), delete what is stored of targets removed from the configuration."""
        while True:
            try:
                gone = await db.forget_removed(self._engine, list(self.targets))
            except Exception:  # a database hiccup: try again tomorrow
                logger.exception("monitor: the history of removed targets could not be deleted")
            else:
                if gone:
                    logger.info("monitor: deleted the history of %d removed target(s): %s", len(gone), ", ".join(gone))
            await asyncio.sleep(db.DAY.total_seconds())

    async def _every(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self._first_delay)
        due = loop.time()
        while True:
            try:
                await self.check(target)
            except Exception:  # a database hiccup must not end this target's checks
                logger.exception("the check of %s could not be recorded", target.name)
            # A check that overran its interval is followed at once: missed slots are not made up.
            due = max(due + target.interval, loop.time())
            await asyncio.sleep(due - loop.time())

    async def check_now(self, name: str) -> db.Check:
        """Check a target now, outside its schedule, and return the recorded check."""
        target = self.target(name)
        if self._closed:
            raise MonitorClosed("the monitor is shutting down")
        task = asyncio.create_task(self.check(target))
        self._manual.add(task)
        task.add_done_callback(self._forget)
        return await asyncio.shield(task)  # close() waits for it even if our caller is cancelled

    def _forget(self, task: asyncio.Task[db.Check]) -> None:
        self._manual.discard(task)
        # The caller may have left: the failure would otherwise go unreported.
        if not task.cancelled() and task.exception() is not None:
            logger.error("a check asked for through the API failed", exc_info=task.exception())

    async def check(self, target: Target) -> db.Check:
        """Check a target once: record the check, and the change if its state changed; publish both."""
        if target.name == SELF_NAME:
            self._relocate()
            target = self.targets[SELF_NAME]
        async with self._slots:
            outcome = await probe.probe(self._session, target)
        # One writer per target, so checks and changes are recorded in the order they are decided.
        async with self._locks[target.name]:
            check = await db.record_check(self._engine, outcome, self._keep)
            previous = self.state(target.name)
            change = None
            if previous != "unknown" and previous != check.state:
                decided = db.Change(
                    target.name, check.checked_at, previous, check.state, check.error, check.detail
                )
                change = await db.record_change(self._engine, decided)
            self.latest[target.name] = check
        uptimes = await db.uptime(self._engine, [target.name], datetime.now(UTC))
        uptime = uptimes.get(target.name, db.Uptime())
        if change is not None:
            await self._publish(CHANGES_TOPIC, {"type": "change", **change.as_dict()})
        await self._publish(CHECKS_TOPIC, check_message(target.name, check, uptime))
        return check

    async def _publish(self, topic: str, message: dict[str, Any]) -> None:
        try:
            await self._bus.publish(topic, message)
        except Exception:  # the check is stored; live pages miss one update, the next one fixes it
            logger.exception("could not publish on %s", topic)

    async def statuses(self, names: Iterable[str] | None = None) -> list[Status]:
        """Return the status of the named targets (all of them by default), in configuration order."""
        self._relocate()
        chosen = [self.target(n) for n in names] if names is not None else list(self.targets.values())
        uptimes = await db.uptime(self._engine, [t.name for t in chosen], datetime.now(UTC))
        return [
            Status(t, self.state(t.name), self.latest.get(t.name), uptimes.get(t.name, db.Uptime()))
            for t in chosen
        ]


def check_message(name: str, check: db.Check, uptime: db.Uptime | None) -> dict[str, Any]:
    """Return the bus message announcing a check (`uptime` None when not computed)."""
    return {
        "type": "check",
        "target": name,
        "state": check.state,
        "check": check.as_dict(),
        "uptime": uptime.as_dict() if uptime else None,
    }


MONITOR = web.AppKey("monitor.monitor", Monitor)


def configured_targets(app: web.Application) -> list[Target]:
    """Return the configured targets, or this server's own /health when there are none."""
    config = config_of(app)
    if config[TARGETS]:
        return from_setting(config[TARGETS])
    return [self_target(served_url(app))]


async def monitor_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the client session and the monitor under MONITOR, both closed at teardown."""
    config = config_of(app)
    targets = configured_targets(app)
    watching_self = not config[TARGETS]
    session = probe.new_session(config[MAX_CONCURRENT])
    monitor = Monitor(
        targets,
        session,
        config[DB],
        config[BUS],
        concurrency=config[MAX_CONCURRENT],
        keep=config[KEEP_CHECKS],
        first_delay=SELF_GRACE if watching_self else 0.0,
        locate=(lambda: served_url(app)) if watching_self else None,
    )
    try:
        await monitor.start()
        # One schedule for the whole site, however many processes and hosts serve it.
        async with leader(app, "monitor.schedule", monitor.run) as lease:
            monitor.lease = lease
            app[MONITOR] = monitor
            yield
    finally:
        await monitor.close()
        await session.close()
