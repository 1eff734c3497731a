"""Monitor fixtures: real local target servers, and a database per test.

Targets are aiohttp servers on 127.0.0.1 (`upstream`): each path answers one way (200,
500, a hang, redirects, an endless body). Tests give targets a long interval, so only the
check at start-up runs by itself, and drive further checks through the API.

Tests run on SQLite; the storage tests (modules with `pytestmark = ON_BOTH_DATABASES`)
run on PostgreSQL too. What the HTTP client does does not depend on the database.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpServer

import nestor_subapps.monitor

from ...conftest import MakeApp
from ...fixtures.postgres import empty_database, free_port, postgres_server  # noqa: F401 (a fixture)
from ...fixtures.tls import self_signed

BuildMonitor = Callable[..., web.Application]
Client = TestClient[web.Request, web.Application]
T = TypeVar("T")
HANG = 60.0  # seconds /hang would take; the monitor gives up long before
SLOW = 0.3  # seconds /slow takes to answer


ON_BOTH_DATABASES = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(params=["sqlite"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database the monitor runs on: a private SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'monitor.sqlite3'}"
    return await empty_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def make_monitor(make_app: MakeApp, database_url: str) -> BuildMonitor:
    """Return `make_monitor(targets=None, tables=None, **monitor)`: Nestor with only the monitor.

    `targets` and `monitor` go to the [monitor] table; `tables` adds other tables. Manual checks
    are not rate-limited (`manual_check_interval = 0`) unless a test sets the interval.
    """

    def build(
        targets: list[dict[str, Any]] | None = None, tables: dict[str, Any] | None = None, **monitor: Any
    ) -> web.Application:
        tables = {key: dict(value) for key, value in (tables or {}).items()}
        tables.setdefault("nestor", {}).setdefault("database_url", database_url)
        section = tables.setdefault("monitor", {})
        section.setdefault("manual_check_interval", 0)
        section.update(monitor)
        if targets is not None:
            section["targets"] = targets
        return make_app(tables, specs=[nestor_subapps.monitor.subapp])

    return build


def target(name: str, url: str, **fields: Any) -> dict[str, Any]:
    """Return a target table; by default checked at start-up and then only when asked."""
    return {"name": name, "url": url, "interval": 3600, "timeout": 2, **fields}


@dataclass
class Upstream:
    """A local server the monitor checks. `flaky` is what /flaky answers, `redirects` where
    /redirect/{name} sends: tests change them."""

    flaky: int = 200
    hits: Counter[str] = field(default_factory=Counter)
    redirects: dict[str, str] = field(default_factory=dict)  # /redirect/{name} answers 302 to redirects[name]
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    server: TestServer | None = None  # set once it runs

    def url(self, path: str) -> str:
        """Return the absolute URL of a path on this server."""
        if self.server is None:
            raise RuntimeError("the upstream server is not running")
        return str(self.server.make_url(path))


def upstream_app(upstream: Upstream) -> web.Application:
    """Return the target server's application: one behaviour per path."""

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        upstream.hits[request.path] += 1
        return await handler(request)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="broken")

    async def flaky(request: web.Request) -> web.Response:
        return web.Response(status=upstream.flaky, text="it depends")

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(HANG)  # cancelled when the monitor hangs up: test servers cancel handlers
        return web.Response(text="too late")

    async def slow(request: web.Request) -> web.Response:
        upstream.slow_started.set()
        await asyncio.sleep(SLOW)
        return web.Response(text="slow but fine")

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * 16384
        for _ in range(10**6):  # 16 GB: far more than the monitor reads in its timeout
            await response.write(chunk)
        return response

    def redirect(location: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            raise web.HTTPFound(location)

        return handler

    async def redirect_to(request: web.Request) -> web.Response:
        raise web.HTTPFound(upstream.redirects[request.match_info["name"]])

    app = web.Application(middlewares=[count])
    app.add_routes(
        [
            web.get("/ok", ok),
            web.get("/fail", fail),
            web.get("/flaky", flaky),
            web.get("/hang", hang),
            web.get("/slow", slow),
            web.get("/endless", endless),
            web.get("/to-ok", redirect("/ok")),
            web.get("/to-ftp", redirect("ftp://127.0.0.1/file.txt")),
            web.get("/loop", redirect("/loop")),
            web.get("/redirect/{name}", redirect_to),
        ]
    )
    return app


@pytest.fixture
async def upstream(aiohttp_server: AiohttpServer) -> Upstream:
    """A running target server on 127.0.0.1."""
    upstream = Upstream()
    upstream.server = await aiohttp_server(upstream_app(upstream), shutdown_timeout=0.1)
    return upstream


@pytest.fixture
async def other_upstream(aiohttp_server: AiohttpServer) -> Upstream:
    """A second target server on 127.0.0.1, on another port: another host to the redirect policy."""
    other = Upstream()
    other.server = await aiohttp_server(upstream_app(other), shutdown_timeout=0.1)
    return other


@pytest.fixture
async def tls_upstream(aiohttp_server: AiohttpServer, tmp_path: Path) -> TestServer:
    """A target server on https://127.0.0.1 with a self-signed certificate (which no client trusts)."""
    context, _ = self_signed(tmp_path)
    async def secret(request: web.Request) -> web.Response:
        return web.Response(text="secret")

    app = web.Application()
    app.router.add_get("/", secret)
    return await aiohttp_server(app, ssl=context)


def closed_port_url() -> str:
    """Return a URL on 127.0.0.1 where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/"


async def eventually(read: Callable[[], Awaitable[T]], done: Callable[[T], bool], seconds: float = 10.0) -> T:
    """Return `read()` once `done` holds for it (tried every 20 ms, up to `seconds`), else its last value."""
    value = await read()
    for _ in range(int(seconds / 0.02)):
        if done(value):
            break
        await asyncio.sleep(0.02)
        value = await read()
    return value


async def status_of(client: Client, name: str) -> dict[str, Any]:
    """Return a target as GET /monitor/api/targets/{name} shows it."""
    async with client.get(f"/monitor/api/targets/{name}") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def checks_of(client: Client, name: str) -> list[dict[str, Any]]:
    """Return a target's stored checks, newest first."""
    async with client.get(f"/monitor/api/targets/{name}/checks", params={"limit": "1000"}) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["items"]


async def first_check(client: Client, name: str) -> dict[str, Any]:
    """Wait for a target's check at start-up and return the target's status after it."""
    status = await eventually(lambda: status_of(client, name), lambda s: s["last_check"] is not None)
    assert status["last_check"] is not None, f"{name} was never checked"
    return status


async def check_now(client: Client, name: str) -> dict[str, Any]:
    """Ask for a check through the API and return its answer."""
    async with client.post(f"/monitor/api/targets/{name}/check") as resp:
        assert resp.status == 202, await resp.text()
        return await resp.json()
