"""Shared fixtures: build Nestor apps with the real factory, each test with its own SQLite file."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from nestor import create_app, migrations
from nestor.config import from_mapping
from nestor.db import engine_for

from .fixtures.tree import sample_specs


MakeApp = Callable[..., web.Application]


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    """Return `make_app(tables=None, specs=None)`: create_app with a private SQLite file.

    `tables` is shaped like nestor.toml ({"nestor": {...}, "a": {"api": {...}}});
    `specs` defaults to the sample three-level tree.
    """

    def build(tables: dict[str, Any] | None = None, specs: list[Any] | None = None) -> web.Application:
        tables = {key: dict(value) for key, value in (tables or {}).items()}
        root = tables.setdefault("nestor", {})
        root.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'nestor.sqlite3'}")
        root["subapps"] = list(root.get("subapps", [])) + list(sample_specs() if specs is None else specs)
        config = from_mapping(tables, origin="test config", base_dir=tmp_path)
        app = create_app(config)
        if root.get("mode") == "production":  # production never migrates at start-up: do it first
            migrate_kernel(root["database_url"], tmp_path)
        return app

    return build


def migrate_kernel(url: str, base_dir: Path) -> None:
    """Apply the kernel's own migrations (its login table), as `nestor db upgrade` does before a deploy."""

    async def upgrade() -> None:
        engine = engine_for(url, base_dir)
        try:
            await migrations.upgrade(engine, [migrations.KERNEL])
        finally:
            await engine.dispose()

    # Tests build apps inside a running event loop: migrate in a thread with a loop of its own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, upgrade()).result()

