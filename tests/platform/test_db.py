"""The kernel database engine: embedded SQLite by default, created and disposed in cleanup_ctx."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web

import pytest

from nestor import DB, ConfigError, create_app
from nestor.config import from_mapping
from nestor.db import engine_for

from ..fixtures.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)


async def test_relative_sqlite_file_is_created_beside_the_config(tmp_path: Path) -> None:
    config = from_mapping(
        {"nestor": {"database_url": "sqlite+aiosqlite:///var/data.sqlite3"}},
        base_dir=tmp_path,
    )
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    try:
        async with runner.app[DB].connect() as conn:
            assert await conn.scalar(sa.text("SELECT 1")) == 1
    finally:
        await runner.cleanup()
    assert (tmp_path / "var" / "data.sqlite3").is_file()


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}", tmp_path)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(sa.text("PRAGMA foreign_keys")) == 1
    finally:
        await engine.dispose()


async def test_unreachable_database_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    config = from_mapping(
        {"nestor": {"database_url": f"postgresql+asyncpg://nestor:s3cret@127.0.0.1:{closed_port()}/x"}},
        base_dir=tmp_path,
    )
    runner = web.AppRunner(create_app(config))
    with pytest.raises(ConfigError, match="database_url postgresql.*cannot connect") as raised:
        await runner.setup()
    await runner.cleanup()
    assert "s3cret" not in str(raised.value)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


async def test_pool_settings_bound_the_connections_a_worker_opens(postgres_url: str, tmp_path: Path) -> None:
    app = create_app(from_mapping(
        {"nestor": {"database_url": postgres_url, "pool_size": 1, "max_overflow": 1, "pool_timeout": 0.3}},
        base_dir=tmp_path,
    ))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        engine = app[DB]
        assert engine.pool.size() == 1
        async with engine.connect(), engine.connect():  # pool_size + max_overflow
            with pytest.raises(sa.exc.TimeoutError):  # the third waits pool_timeout, then gives up
                async with engine.connect():
                    pass
    finally:
        await runner.cleanup()


async def test_steady_load_opens_no_new_postgresql_sessions(postgres_server: Any, tmp_path: Path) -> None:
    import asyncio

    import aiohttp
    import asyncpg

    from ..fixtures.postgres import empty_database
    from ..fixtures.served import serve

    url = await empty_database(postgres_server)
    served = await serve(tmp_path, f'subapps = ["polls"]\ndatabase_url = "{url}"', "--log-level", "WARNING")
    stats = await asyncpg.connect(host=postgres_server.host, port=postgres_server.port, user=postgres_server.user, database="postgres")
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

            async def read(seconds: float) -> int:
                done, deadline = 0, asyncio.get_running_loop().time() + seconds
                while asyncio.get_running_loop().time() < deadline:
                    async with session.get(served.url + "/polls/api/questions") as resp:
                        assert resp.status == 200
                        done += 1
                return done

            await asyncio.gather(*(read(1.0) for _ in range(64)))  # warm: the pool fills
            started = await stats.fetchval("SELECT now()")
            served_requests = sum(await asyncio.gather(*(read(3.0) for _ in range(64))))
        new_sessions = await stats.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_start > $2", url.rsplit("/", 1)[1], started
        )
    finally:
        await stats.close()
        await served.stop()
    assert served_requests > 100
    assert new_sessions == 0  # max_overflow = 0: requests wait for a pooled connection, none is opened and closed
