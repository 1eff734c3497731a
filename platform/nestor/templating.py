"""One Jinja2 environment on the root, and `url()` that reverses any route in the tree.

Loader order: the project's `templates/` first (so a project overrides any template), then
the folders shipped by sub-app packages. Sub-apps find the environment through
`request.config_dict`, as aiohttp-jinja2 does. Autoescaping stays on.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from yarl import URL

from .config import Setting, closest
from .tree import Tree

TEMPLATES_DIR = Setting(
    "templates_dir",
    str,
    "templates",
    help="The project's template folder (relative to the config file); searched first",
    root_only=True,
)
# The kernel's own pages and error pages, used when the project has no override.
KERNEL_TEMPLATES = Path(__file__).resolve().parent / "templates"


def setup(
    root: web.Application, tree: Tree, folders: Iterable[Path], *, auto_reload: bool = True
) -> jinja2.Environment:
    """Set up aiohttp-jinja2 on the root with the given folders, in order, and the tree's `url()`.

    `auto_reload` (development) checks each template's file for changes at every render;
    in production templates are read once.
    """
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(f)) for f in dict.fromkeys(folders)])
    env = aiohttp_jinja2.setup(
        root, loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, auto_reload=auto_reload
    )
    env.globals["url"] = functools.partial(cached_url_for, tree)
    env.globals["nav"] = [
        lvl for lvl in tree.levels if lvl.parent is tree.root and (lvl.spec is None or lvl.spec.nav)
    ]
    return env


def names(tree: Tree) -> dict[str, web.AbstractResource]:
    """Return every named resource by namespaced name (`polls:api:vote`); cached once frozen."""
    cached = tree.cache.get("names")
    if cached is not None:
        return cached
    found = {}
    for level in tree.levels:
        for name, resource in level.app.router.named_resources().items():
            found[f"{level.namespace}:{name}" if level.namespace else name] = resource
    if tree.root.app.router.frozen:
        tree.cache["names"] = found
    return found


MAX_CACHED_URLS = 4096


def cached_url_for(tree: Tree, name: str, /, query_: dict[str, Any] | None = None, **parts: Any) -> URL:
    """`url_for`, remembering what it built: a page's navigation and links cost a lookup, not a reversal."""
    try:
        key = (name, tuple(parts.items()), tuple(query_.items()) if query_ else ())
        cache = tree.cache.setdefault("urls", {})
        found = cache.get(key)
    except TypeError:  # an unhashable value: build it every time
        return url_for(tree, name, query_, **parts)
    if found is None:
        found = url_for(tree, name, query_, **parts)
        if len(cache) >= MAX_CACHED_URLS:
            cache.clear()
        cache[key] = found
    return found


def url_for(tree: Tree, name: str, /, query_: dict[str, Any] | None = None, **parts: Any) -> URL:
    """Return the URL of the route `name` anywhere in the tree, e.g. `url_for(tree, "polls:detail", id=3)`."""
    resources = names(tree)
    resource = resources.get(name)
    if resource is None:
        raise LookupError(f"no route is named {name!r}." + closest(name, resources))
    try:
        url = resource.url_for(**{k: str(v) for k, v in parts.items()})
    except KeyError as e:
        raise LookupError(f"route {name!r} needs the parameter {e.args[0]!r}") from None
    except TypeError:  # a fixed path given parameters, or a static route without filename=
        raise LookupError(
            f"route {name!r} ({resource.canonical}) cannot be built from {sorted(parts)}"
        ) from None
    return url.with_query(query_) if query_ else url
