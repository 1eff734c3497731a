"""The site: two hosts (`nestor serve --workers 2` on 127.0.0.2 and 127.0.0.3) behind nginx, on
one PostgreSQL database and one Redis, started once for the module (see parts.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..fixtures.postgres import PostgresServer, create_database, postgres_server  # noqa: F401 (a fixture)
from ..fixtures.postgres import unavailable as postgres_unavailable
from ..fixtures.redis import RedisServer
from ..fixtures.redis import unavailable as redis_unavailable
from ..fixtures.tls import self_signed
from .parts import Site, find_nginx, running_site, unavailable


@pytest.fixture(scope="module")
def redis_for_site() -> Iterator[RedisServer]:
    """A Redis server shared by the module's tests (the site's bus and leases)."""
    binary = shutil.which("redis-server")
    if binary is None:
        redis_unavailable("redis-server is not installed (apt-get install redis-server)")
    if importlib.util.find_spec("redis") is None:
        redis_unavailable("redis-py is not installed (pip install -e '.[redis]')")
    with tempfile.TemporaryDirectory(prefix="nestor-site-redis-") as folder:
        server = RedisServer(binary, Path(folder))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,  # noqa: F811 (the fixture imported above)
    redis_for_site: RedisServer,
) -> Iterator[Site]:
    """The running site; a test that stops or kills a host starts it again before it ends."""
    nginx = find_nginx()
    if nginx is None:
        unavailable("nginx is not installed (apt-get install nginx)")
    if importlib.util.find_spec("asyncpg") is None:
        postgres_unavailable("asyncpg is not installed (pip install -e '.[postgres]')")
    folder = tmp_path_factory.mktemp("site")
    _, certificate = self_signed(folder)
    database_url = asyncio.run(create_database(postgres_server))
    with running_site(folder, database_url, redis_for_site.url(), certificate, folder / "key.pem",
                      nginx_binary=nginx) as running:  # fmt: skip
        yield running
