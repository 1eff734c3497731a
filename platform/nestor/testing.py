"""The test kit: pytest fixtures for testing sub-apps, on top of pytest-aiohttp.

Installed with Nestor as a pytest plugin (the `pytest11` entry point), so a project's tests
use the fixtures without importing anything; `pip install 'nestor[test]'` brings pytest and
pytest-aiohttp. Each app gets its own SQLite file in the test's temporary folder and the
in-process bus, in development mode:

    async def test_index(nestor_client):
        client = await nestor_client("notes", config={"notes": {"page_size": 5}})
        async with client.get("/notes/") as resp:
            assert resp.status == 200

`nestor_app(*subapps, config=None)` returns the `web.Application` itself (for tests that
serve it their own way); a sub-app is named as in `[nestor] subapps` (an entry-point name
or an import path) or given as a `SubApp`. `form_token(client, path)` returns the CSRF
token of the form on a page, for posting it back.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from .app import create_app
from .config import ROOT_TABLE, from_mapping
from .subapp import SubApp

try:  # pytest-aiohttp runs on pytest-asyncio; its strict mode wants async fixtures marked
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # the test extra is not installed: the async fixture cannot run anyway
    async_fixture = pytest.fixture

MakeApp = Callable[..., web.Application]
MakeClient = Callable[..., Awaitable[Any]]
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def build_app(
    folder: Path, *subapps: str | SubApp, config: Mapping[str, Mapping[str, Any]] | None = None
) -> web.Application:
    """Return `create_app` of `subapps` with `config` (tables shaped like nestor.toml) and a SQLite file in `folder`."""
    tables = {name: dict(table) for name, table in (config or {}).items()}
    root = tables.setdefault(ROOT_TABLE, {})
    root.setdefault("database_url", f"sqlite+aiosqlite:///{folder / 'nestor.sqlite3'}")
    root.setdefault("bus_url", "memory://")
    root["subapps"] = [*root.get("subapps", []), *subapps]
    return create_app(from_mapping(tables, origin="nestor.testing", base_dir=folder))


@pytest.fixture
def nestor_app(tmp_path: Path) -> MakeApp:
    """Return `nestor_app(*subapps, config=None)`: a Nestor app on this test's own SQLite file."""

    def make(*subapps: str | SubApp, config: Mapping[str, Mapping[str, Any]] | None = None) -> web.Application:
        return build_app(tmp_path, *subapps, config=config)

    return make


@async_fixture
async def nestor_client(aiohttp_client: Any, nestor_app: MakeApp) -> MakeClient:
    """Return `await nestor_client(*subapps, config=None)`: a pytest-aiohttp client of a Nestor app."""

    async def make(*subapps: str | SubApp, config: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
        return await aiohttp_client(nestor_app(*subapps, config=config))

    return make


async def form_token(client: Any, path: str) -> str:
    """Return the CSRF token of the form on the page at `path` (the client keeps the session cookie)."""
    async with client.get(path) as resp:
        if resp.status != 200:
            raise AssertionError(f"GET {path} answered {resp.status}, not a page with a form")
        found = _TOKEN.search(await resp.text())
    if found is None:
        raise AssertionError(f"the page at {path} has no csrf_token field")
    return found.group(1)
