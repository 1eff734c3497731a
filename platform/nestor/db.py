"""The database engine: SQLAlchemy 2 async, created in the root's cleanup_ctx.

`sqlite+aiosqlite:///var/nestor.sqlite3` by default (relative paths resolve against the
directory of the config file), `postgresql+asyncpg://…` by URL. Each sub-app owns its
tables in its own `MetaData` and changes them with its migrations (`nestor.migrations`);
`tables(metadata)` remains for prototypes: it creates missing tables, never alters one.

While the database is down, a failed connection attempt raises `DatabaseUnavailable`;
`unavailable(exc)` tells such outages (and connections lost mid-query) from bugs, so the
error middleware answers 503. The pool pings a connection before lending it out, so the
first request after the database comes back already succeeds.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .config import ConfigError, Setting, not_negative, positive, seconds
from .redaction import hide_password
from .tree import config_of

DRIVERS = {"sqlite": ("aiosqlite", "aiosqlite", "nestor"), "postgresql": ("asyncpg", "asyncpg", "nestor[postgres]")}


def check_database_url(url: str) -> str:
    """Validate `database_url`: an async driver Nestor runs on, installed; ValueError saying the fix."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(f"{hide_password(url)!r} is not a database URL; use e.g. postgresql+asyncpg://user:password@host/db") from None
    backend = "postgresql" if parsed.get_backend_name() in ("postgres", "postgresql") else parsed.get_backend_name()
    if backend not in DRIVERS:
        raise ValueError(f"{parsed.get_backend_name()!r} databases are not supported: use SQLite or PostgreSQL")
    driver, module, extra = DRIVERS[backend]
    if parsed.drivername != f"{backend}+{driver}":
        fixed = parsed.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=True)
        raise ValueError(f"{parsed.drivername}:// is not an async driver Nestor runs on: use {fixed}")
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{backend} needs the {module} package: pip install '{extra}'")
    return url


DATABASE_URL = Setting(
    "database_url",
    str,
    "sqlite+aiosqlite:///var/nestor.sqlite3",
    validate=check_database_url,
    help="SQLAlchemy async URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db",
    root_only=True,
)
POOL_SIZE = Setting(
    "pool_size", int, 10, validate=positive, root_only=True,
    help="Database connections each worker process keeps open (PostgreSQL): the queries it runs at once",
)
MAX_OVERFLOW = Setting(
    "max_overflow", int, 0, validate=not_negative, root_only=True,
    help="Connections a worker may open beyond pool_size in a burst, each closed again when returned: "
    "every one is a new PostgreSQL session (0: requests wait for a pooled one instead)",
)
POOL_TIMEOUT = Setting(
    "pool_timeout", float, 10.0, validate=seconds, root_only=True,
    help="Seconds a request waits for a free connection before it fails (503)",
)
POOL_RECYCLE = Setting(
    "pool_recycle", float, 1800.0, validate=seconds, root_only=True,
    help="Seconds after which a pooled connection is replaced (below any idle timeout of a proxy or server)",
)
POOL_SETTINGS = (POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT, POOL_RECYCLE)
DB = web.AppKey("nestor.db", AsyncEngine)
# Levels whose live tables differ from their code (see nestor.migrations): level label -> the differences.
DRIFT = web.AppKey("nestor.drift", dict)
BASE_DIR = web.AppKey("nestor.base_dir", Path)
CONNECT_TIMEOUT = 10.0  # seconds to open a PostgreSQL connection


class DatabaseUnavailable(Exception):
    """A new connection to the database could not be opened (it is down, restarting or unreachable)."""


def unavailable(exc: BaseException) -> str | None:
    """Return why the database is out of reach if `exc` says so; None for any other error (a bug)."""
    if isinstance(exc, DatabaseUnavailable):
        return str(exc)
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return f"connection lost: {exc.orig}"  # the driver's own words, without the SQL
    return None


def _connect(dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    # Drivers fail to connect with anything from ConnectionRefusedError to asyncpg's
    # CannotConnectNowError, and SQLAlchemy passes most of them on unwrapped: name them once.
    try:
        return dialect.connect(*cargs, **cparams)
    except Exception as e:
        raise DatabaseUnavailable(f"cannot connect: {type(e).__name__}: {e}") from e


def engine_for(url: str, base_dir: Path, pool: Mapping[str, Any] | None = None) -> AsyncEngine:
    """Return an async engine; a relative SQLite file is placed under `base_dir`, its folder created.

    `pool` holds SQLAlchemy's pool options for PostgreSQL (pool_size, max_overflow, pool_timeout,
    pool_recycle), from the settings of the same names.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database)
            path = path if path.is_absolute() else base_dir / path
            path.parent.mkdir(parents=True, exist_ok=True)
            parsed = parsed.set(database=str(path))
        engine = create_async_engine(parsed, connect_args={"timeout": 30})
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        # Pre-ping: a pooled connection the server closed (a restart) is replaced before use,
        # not handed to a request that would fail on it.
        # asyncpg waits 60 s for a host that drops packets; a request should hear 503 sooner.
        engine = create_async_engine(
            parsed, pool_pre_ping=True, connect_args={"timeout": CONNECT_TIMEOUT}, **(pool or {})
        )
    sa.event.listen(engine.sync_engine, "do_connect", _connect)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: create the engine under `DB` (connecting once), dispose of it at teardown."""
    engine = engine_for(app[DATABASE_URL], app[BASE_DIR], pool_options(app))
    try:
        await ping(engine)  # fail at start-up with a clear message, and create the SQLite file
    except Exception as e:
        await engine.dispose()
        shown = engine.url.render_as_string(hide_password=True)
        reason = str(e) if isinstance(e, DatabaseUnavailable) else f"cannot connect: {type(e).__name__}: {e}"
        raise ConfigError(f"database_url {shown}: {reason}") from e
    app[DB] = engine
    yield
    await engine.dispose()


def pool_options(config: Mapping[Any, Any]) -> dict[str, Any]:
    """The pool options the pool settings give, for `engine_for`."""
    return {setting.name: config[setting] for setting in POOL_SETTINGS}


def tables(metadata: sa.MetaData) -> Callable[[web.Application], AsyncIterator[None]]:
    """Return a cleanup context creating `metadata`'s missing tables at start-up (never altering one).

    For a prototype: a sub-app that ships declares `SubApp(migrations=..., metadata=...)` instead,
    so that a second version can change its tables without losing data.
    """

    async def create_tables(app: web.Application) -> AsyncIterator[None]:
        async with config_of(app)[DB].begin() as conn:
            if conn.dialect.name == "postgresql":
                # Processes starting together would race on CREATE TABLE (a duplicate-key error):
                # one at a time, for the length of this transaction.
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7311957)"))
            await conn.run_sync(metadata.create_all)
        yield

    return create_tables


async def ping(engine: AsyncEngine) -> None:
    """Run `SELECT 1`; raise if the database cannot be reached."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
