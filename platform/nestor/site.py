"""The whole site as data, for sub-apps that show it (the admin) and for tools.

`get_site(request)` returns a `Site`: every mounted level, the routes with their handlers
and middlewares, each level's effective configuration (secrets redacted), readiness and
request counts. It reads what the kernel built once at start-up; nothing here walks the
tree per request except what a page asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from . import introspect
from .checks import MODE
from .db import BASE_DIR
from .metrics import METRICS
from .pages import Results, readiness
from .tree import TREE, Level, Tree, config_of


class Site:
    """The mounted tree of one server, read through public API only."""

    def __init__(self, tree: Tree) -> None:
        self._tree = tree
        self._root = tree.root.app

    @property
    def levels(self) -> list[Level]:
        """Every app level, root first: `label`, `title`, `prefix`, `parent`, `children`, `described()`."""
        return self._tree.levels

    @property
    def warnings(self) -> list[str]:
        """What start-up found aiohttp would route wrongly (shadowed routes, repeated names)."""
        return self._tree.warnings

    @property
    def mode(self) -> str:
        """`development` or `production`."""
        return self._root.get(MODE, MODE.default)

    def routes(self, *, include_head: bool = False) -> list[introspect.Route]:
        """Every route: method, path, namespaced name, handler, source file:line, apps, middlewares."""
        return introspect.routes(self._tree, include_head=include_head, base=self._root[BASE_DIR])

    def middlewares(self, level: Level) -> tuple[str, ...]:
        """The middlewares a request served by `level` meets, outermost first."""
        return introspect.middleware_chain(level)

    async def readiness(self) -> tuple[Results, Results]:
        """Return the kernel's checks (database, bus) and each sub-app's readiness, as /health does."""
        return await readiness(self._root)

    def requests_by_subapp(self) -> dict[str, int] | None:
        """Responses each level has started in this process, or None when metrics are off."""
        metrics = self._root.get(METRICS)
        return metrics.requests_by_subapp() if metrics is not None else None


def get_site(request: web.Request | web.Application) -> Site:
    """Return the `Site` of the server handling `request` (or of an app `create_app` built)."""
    if isinstance(request, web.Request):
        config: Mapping[Any, Any] = request.config_dict
    else:  # an app at start-up has no request: read its level's chain (the root holds the tree)
        config = request if TREE in request else config_of(request)
    tree = config.get(TREE)
    if tree is None:
        raise RuntimeError("get_site() needs an app built by nestor.create_app()")
    return Site(tree)

