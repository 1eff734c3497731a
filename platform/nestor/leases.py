"""Once per site: work that runs in one process of the whole site, under a lease.

Every process that serves the site asks for the lease; one holds it and runs the work, the
others try again every second. Where the lease lives follows what the processes share:

- PostgreSQL as the database: a session advisory lock on a connection of its own. A holder
  that dies (or whose host drops off the network) loses its session, and with it the lock.
- else Redis as the bus: a key with a time to live (redis-py's `Lock`), renewed while held.
  A holder that stops renewing loses it when the key expires.
- else a SQLite file: an OS lock on a file beside it (SQLite lives on one machine).
- else (an in-memory database): the process itself.

A holder that cannot confirm its lease stops the work before another process may take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import db
from .bus import BUS
from .tree import config_of

TTL = 5.0  # seconds a lease outlives a holder that stopped renewing it (Redis)
RETRY = 1.0  # seconds between tries of a process that does not hold the lease
PG_NAMESPACE = 0x6E657374  # "nest": first key of every lease's advisory lock
HELD = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    " AND classid = :ns AND objid = :key AND objsubid = 2"
)
logger = logging.getLogger("nestor.leases")


class Backend:
    """Where a lease lives: `acquire` tries once, `renew` confirms it is still held."""

    kind = "this process"

    async def acquire(self) -> bool:
        return True

    async def renew(self) -> bool:
        return True

    async def release(self) -> None:
        pass

    async def close(self) -> None:
        pass


class PostgresLease(Backend):
    """A session advisory lock, on a connection held for it (not one of the request pool's)."""

    kind = "a PostgreSQL advisory lock"

    def __init__(self, engine: AsyncEngine, name: str) -> None:
        url = engine.url.render_as_string(hide_password=False)
        self._engine = db.engine_for(url, Path("."), {"poolclass": sa.NullPool})
        self._keys = {"ns": PG_NAMESPACE, "key": zlib.crc32(name.encode()) & 0x7FFFFFFF}
        self._conn: AsyncConnection | None = None

    async def _execute(self, sql: str) -> Any:
        if self._conn is None:
            conn = await self._engine.connect()
            # Commit each statement: an idle transaction would hold back vacuum for hours.
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            # A holder whose host vanished is noticed by the server in seconds, not hours.
            for option in ("tcp_keepalives_idle = 5", "tcp_keepalives_interval = 1", "tcp_keepalives_count = 3"):
                await self._conn.execute(sa.text(f"SET {option}"))
        try:
            async with asyncio.timeout(TTL / 2):
                return (await self._conn.execute(sa.text(sql), self._keys)).scalar()
        except BaseException:
            await self._drop()
            raise

    async def acquire(self) -> bool:
        return bool(await self._execute("SELECT pg_try_advisory_lock(:ns, :key)"))

    async def renew(self) -> bool:
        try:
            return bool(await self._execute(HELD))
        except Exception:  # the session is gone, and the lock with it
            return False

    async def release(self) -> None:
        await self._execute("SELECT pg_advisory_unlock(:ns, :key)")

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()

    async def close(self) -> None:
        await self._drop()  # the session ends, and any lock with it
        await self._engine.dispose()


class RedisLease(Backend):
    """A Redis key with a time to live, set only if absent and renewed by its holder's token."""

    kind = "a Redis lease"

    def __init__(self, bus: Any, name: str) -> None:
        self._lock = bus.lock(f"lease:{name}", TTL)

    async def acquire(self) -> bool:
        return bool(await self._lock.acquire(blocking=False))

    async def renew(self) -> bool:
        from redis.exceptions import LockError

        try:
            return bool(await self._lock.reacquire())  # back to the full time to live
        except LockError:
            return False

    async def release(self) -> None:
        from redis.exceptions import LockError

        with contextlib.suppress(LockError):  # expired meanwhile: nothing left to release
            await self._lock.release()


class FileLease(Backend):
    """An OS lock on a file beside the SQLite database."""

    kind = "a lock file beside the SQLite database"

    def __init__(self, path: str) -> None:
        self._path = path
        self._file: IO[str] | None = None

    async def acquire(self) -> bool:
        self._file = self._file or open(self._path, "a")  # noqa: ASYNC230 (no wait: a local file)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    async def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def backend_for(app: web.Application, name: str) -> Backend:
    """Return where the lease named `name` lives for this site (see the module's docstring)."""
    config = config_of(app)
    engine: AsyncEngine = config[db.DB]
    if engine.dialect.name == "postgresql":
        return PostgresLease(engine, name)
    bus = config[BUS]
    if hasattr(bus, "lock"):  # the Redis bus
        return RedisLease(bus, name)
    database = engine.url.database or ""
    if engine.dialect.name == "sqlite" and database not in ("", ":memory:") and not database.startswith("file:"):
        return FileLease(f"{database}.lease-{name}")
    return Backend()


class Lease:
    """A named lease: while this process holds it, `work` runs; see `leader`."""

    def __init__(self, name: str, backend: Backend, work: Callable[[], Awaitable[None]]) -> None:
        self.name, self.backend = name, backend
        self._work = work
        self._task: asyncio.Task[None] | None = None
        self.held = False  # this process holds the lease and runs the work

    @property
    def running(self) -> bool:
        """True while this process holds the lease or keeps asking for it."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lease {self.name}")

    async def close(self) -> None:
        """Stop the work, give the lease up, and stop asking for it."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
        await self.backend.close()

    async def _run(self) -> None:
        while True:
            try:
                if await self.backend.acquire():
                    await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the backend is down: the lease cannot be held, try again
                logger.warning("lease %s: %s unavailable (%s: %s)", self.name, self.backend.kind, type(e).__name__, e)
            await asyncio.sleep(RETRY)

    async def _lead(self) -> None:
        logger.info("lease %s: held by this process (%s); its work runs here", self.name, self.backend.kind)
        self.held = True
        work = asyncio.create_task(self._work(), name=f"lease {self.name} work")
        confirmed = time.monotonic()
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=TTL / 5)
                if work.done():
                    break
                try:
                    if not await self.backend.renew():
                        logger.warning("lease %s: lost to another process; the work stops here", self.name)
                        return
                    confirmed = time.monotonic()
                except Exception as e:
                    # Another process may take the lease once it expires: stop well before.
                    if time.monotonic() - confirmed > TTL / 2:
                        logger.warning("lease %s: cannot be renewed (%s); the work stops here", self.name, e)
                        return
            if not work.cancelled() and work.exception() is not None:
                logger.error("lease %s: the work failed; the lease is given up", self.name, exc_info=work.exception())
        finally:
            self.held = False
            work.cancel()
            await asyncio.wait({work})
            with contextlib.suppress(Exception):
                await asyncio.shield(self.backend.release())


@contextlib.asynccontextmanager
async def leader(app: web.Application, name: str, work: Callable[[], Awaitable[None]]) -> AsyncIterator[Lease]:
    """Run `work()` in one process of the whole site, for as long as the context is open.

    Use it in a cleanup context: every process asks for the lease named `name`; the one that
    gets it runs `work()` (cancelled when the lease is lost or the app stops), and another
    process takes over within seconds when that one dies. `work` returning or failing gives
    the lease up (a failure is logged), and it is asked for again a second later.
    """
    lease = Lease(name, backend_for(app, name), work)
    lease.start()
    try:
        yield lease
    finally:
        await lease.close()
