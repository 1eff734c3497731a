"""Shared fixtures: build Nestor apps with the real factory, each test with its own SQLite file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from nestor import create_app
from nestor.config import from_mapping

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
        return create_app(config)

    return build
