"""Failed token checks and logins, limited per client address.

Each wrong token (a bearer token, or the login form) counts against the client's address (the
one trusted proxies give, see `nestor.proxies`) in a counter the bus keeps: in Redis for every
worker and host of the site when the bus is Redis, in the process otherwise. The check that
makes MAX_FAILURES within WINDOW seconds blocks the address until that window ends: its token
checks then get 429 with Retry-After, right token or wrong (else the answers would still tell
them apart). The block is announced on the bus, so every process refuses the address at
once; a process checks its own table of blocked addresses, so a correct token costs a dict
lookup, never a round trip. Every failure is logged at WARNING with the address and request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .bus import BUS, Bus
from .middleware import REQUEST_ID
from .proxies import client_address

MAX_FAILURES = 10  # wrong tokens an address may send in WINDOW seconds; the next try gets 429
WINDOW = 300.0  # seconds
MAX_BLOCKED = 10_000  # blocked addresses a process keeps before it forgets expired ones
TOPIC = "nestor.limits.blocked"
logger = logging.getLogger("nestor.auth")


class Failures:
    """This process's view of the blocked addresses, and the failures counted through the bus."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._blocked: dict[str, float] = {}  # address -> time.monotonic() when the block ends

    def refuse_if_blocked(self, request: web.Request) -> None:
        """Raise 429 (with Retry-After) when the request's client is blocked."""
        if not self._blocked:
            return
        address = client_address(request) or "-"
        ends = self._blocked.get(address)
        if ends is None:
            return
        left = ends - time.monotonic()
        if left <= 0:
            del self._blocked[address]
            return
        wait = math.ceil(left)
        raise web.HTTPTooManyRequests(
            text=f"Too many wrong tokens from {address}: try again in {wait} s.", headers={"Retry-After": str(wait)}
        )

    async def failed(self, request: web.Request, setting: str) -> None:
        """Count a wrong token from the request's client; block it when that makes MAX_FAILURES."""
        address = client_address(request) or "-"
        count, left = await self._bus.count(f"failures:{address}", WINDOW)
        logger.warning(
            "a wrong %s from %s on %s %s (%d of %d allowed in %g s; rid=%s)",
            setting, address, request.method, request.path, count, MAX_FAILURES, WINDOW, request.get(REQUEST_ID, "-"),
        )  # fmt: skip
        if count >= MAX_FAILURES:
            self.block(address, left)
            if count == MAX_FAILURES:  # announced once; later counts come from tries already in flight
                logger.warning("%s is refused for %d s after %d wrong tokens", address, math.ceil(left), count)
                with contextlib.suppress(Exception):  # the bus being down leaves the block local
                    await self._bus.publish(TOPIC, {"address": address, "seconds": left})

    def block(self, address: str, seconds: float) -> None:
        """Refuse the address's token checks in this process for `seconds`."""
        if len(self._blocked) > MAX_BLOCKED:
            now = time.monotonic()
            self._blocked = {a: ends for a, ends in self._blocked.items() if ends > now}
        self._blocked[address] = time.monotonic() + seconds

    async def follow(self) -> None:
        """Learn the blocks other processes announce (this process's own arrive too: no harm)."""
        async with self._bus.subscribe(TOPIC) as blocks:
            async for message in blocks:
                if _valid(message):
                    self.block(message["address"], float(message["seconds"]))


def _valid(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and isinstance(message.get("address"), str)
        and isinstance(message.get("seconds"), int | float)
        and 0 < message["seconds"] <= WINDOW
    )


FAILURES = web.AppKey("nestor.failures", Failures)


async def limits_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context (after the bus's): FAILURES, following the blocks announced on the bus."""
    failures = Failures(app[BUS])
    app[FAILURES] = failures
    follower = asyncio.create_task(failures.follow(), name="nestor.limits follower")
    yield
    follower.cancel()
    await asyncio.wait({follower})
