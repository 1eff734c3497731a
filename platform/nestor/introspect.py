"""The route tree as data, through public aiohttp API only.

`routes(tree)` gives one record per route: method, full path, namespaced name, handler,
source file:line, the chain of apps that own it and the middlewares that run for it, root
first. `explain(tree, method, path)` says what a request would meet. `problems(tree)` finds
what aiohttp accepts silently and routes wrongly: parent routes shadowing a child's, and
route names that collide across apps.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .auth import guards_of
from .config import Setting
from .tree import Level, Tree

_METHOD_ORDER = {m: i for i, m in enumerate(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"])}


@dataclass(frozen=True)
class Route:
    """One route of the tree."""

    method: str
    path: str
    name: str | None
    handler: str
    source: str | None
    apps: tuple[str, ...]
    middlewares: tuple[str, ...]
    level: Level = field(compare=False, repr=False)
    resource: web.AbstractResource = field(compare=False, repr=False)
    handler_object: Any = field(default=None, compare=False, repr=False)  # the callable itself

    def guards(self) -> tuple[list[Setting[str]], str]:
        """The token settings the route demands one of (`nestor.auth.guards`), and what a client
        with none meets: "public", "guarded", "open" or "hidden" (`nestor.auth.guards_of`)."""
        return guards_of(self.level, self.handler_object)

    @property
    def subapp(self) -> str:
        """The table name of the app that owns the route (`nestor` for the root)."""
        return self.apps[-1]

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready record (stable: no memory addresses)."""
        return {
            "method": self.method,
            "path": self.path,
            "name": self.name,
            "handler": self.handler,
            "source": self.source,
            "apps": list(self.apps),
            "middlewares": list(self.middlewares),
        }


def qualname(obj: Any) -> str:
    """Return `module.Qualified.name` of a handler or middleware."""
    obj = inspect.unwrap(obj) if callable(obj) else obj
    target = getattr(obj, "func", obj)  # functools.partial
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or type(target).__name__
    return f"{module}.{name}" if module else name


def source(obj: Any, base: Path | None = None) -> str | None:
    """Return `file:line` of a handler's definition, relative to `base` when inside it."""
    target = inspect.unwrap(obj) if callable(obj) else obj
    target = getattr(target, "func", target)
    target = getattr(target, "__func__", target)  # bound methods
    try:
        file = inspect.getsourcefile(target)
        line = inspect.getsourcelines(target)[1]
    except (TypeError, OSError):
        return None
    if file is None:
        return None
    path = Path(file)
    base = (base or Path.cwd()).resolve()
    if path.is_relative_to(base) and "site-packages" not in path.parts:
        return f"{path.relative_to(base)}:{line}"
    # Outside the project: a module path, stable across machines (no site-packages prefix).
    module = inspect.getmodule(target)
    return f"{module.__name__ if module else path.name}:{line}"


def middleware_chain(level: Level) -> tuple[str, ...]:
    """Return the middlewares that run for a request served by `level`, outermost first."""
    return tuple(qualname(m) for lvl in level.chain() for m in lvl.app.middlewares)


def _own_resources(level: Level) -> Iterator[web.AbstractResource]:
    for resource in level.app.router.resources():
        if "app" not in resource.get_info():
            yield resource


def _path_of(resource: web.AbstractResource) -> str:
    info = resource.get_info()
    if "directory" in info:  # a static folder
        return f"{info['prefix']}/{{filename}}"
    return resource.canonical


def routes(tree: Tree, *, include_head: bool = False, base: Path | None = None) -> list[Route]:
    """Return every route of the tree, sorted by path then method.

    HEAD routes that aiohttp adds beside each GET are folded into it unless `include_head`.
    Once the router is frozen the list cannot change, so it is built once (it reads source files).
    """
    key = f"routes head={include_head} base={base}"
    cached = tree.cache.get(key)
    if cached is None:
        cached = _build_routes(tree, include_head, base)
        if tree.root.app.router.frozen:
            tree.cache[key] = cached
    return list(cached)


def _build_routes(tree: Tree, include_head: bool, base: Path | None) -> list[Route]:
    found = []
    for level in tree.levels:
        apps = tuple(lvl.label for lvl in level.chain())
        chain = middleware_chain(level)
        for resource in _own_resources(level):
            methods = {route.method for route in resource}
            for route in resource:
                if route.method == "HEAD" and "GET" in methods and not include_head:
                    continue
                ns_name = route.name and (f"{level.namespace}:{route.name}" if level.namespace else route.name)
                found.append(
                    Route(
                        method=route.method,
                        path=_path_of(resource),
                        name=ns_name,
                        handler=qualname(route.handler),
                        source=source(route.handler, base),
                        apps=apps,
                        middlewares=chain,
                        level=level,
                        resource=resource,
                        handler_object=route.handler,
                    )
                )
    found.sort(key=lambda r: (r.path, _METHOD_ORDER.get(r.method, 99), r.method))
    return found


# -- explain ---------------------------------------------------------------------------------


@dataclass
class Explanation:
    """What a request for `method path` would meet."""

    method: str
    path: str
    status: int
    route: Route | None = None
    params: dict[str, str] = field(default_factory=dict)
    level: Level | None = None
    allowed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: list[dict[str, Any]] = field(default_factory=list)  # Level.described(): secrets redacted

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready record."""
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "route": self.route.as_dict() if self.route else None,
            "params": self.params,
            "apps": [lvl.label for lvl in self.level.chain()] if self.level else [],
            "middlewares": list(middleware_chain(self.level)) if self.level else [],
            "allowed": self.allowed,
            "notes": self.notes,
            "config": self.config,
        }


def explain(tree: Tree, method: str, path: str, *, base: Path | None = None) -> Explanation:
    """Resolve `method path` the way aiohttp's router would, and say why."""
    method = method.upper()
    path = "/" + path.split("?", 1)[0].split("#", 1)[0].lstrip("/")
    level, resource, params, allowed = _resolve(tree.root, method, path)
    result = Explanation(method=method, path=path, status=404, level=level)
    all_routes = routes(tree, include_head=True, base=base)
    if resource is not None:
        result.status = 200
        result.params = params
        result.route = next(
            (r for r in all_routes if r.resource is resource and r.method in (method, "*")), None
        )
        result.notes += _shadowed(level, path)
        if result.route is not None:
            result.notes += _guard_note(result.route)
    elif allowed:
        result.status = 405
        result.allowed = sorted(allowed)
        result.notes.append(f"{method} is not routed here; other methods are: {', '.join(result.allowed)}")
    else:
        alternative = path.rstrip("/") if path.endswith("/") and path != "/" else path + "/"
        if _resolve(tree.root, method, alternative)[1] is not None:
            if alternative.endswith("/"):  # the kernel redirects to the routed slash form
                result.status = 301 if method in ("GET", "HEAD") else 308
                result.notes.append(f"no route matches {path}: it redirects to {alternative}, which does")
            else:
                result.notes.append(f"no route matches {path}, but {alternative} does")
    result.config = level.described()
    return result


def _guard_note(route: Route) -> list[str]:
    settings, state = route.guards()
    if state == "public":
        return []
    note = f"demands a bearer token: {' or '.join(s.name for s in settings)}"
    if state == "guarded":
        return [note]
    return [f"{note}; none is set, so it is " + ("hidden (404)" if state == "hidden" else "open to anyone")]


def _index_key(resource: web.AbstractResource) -> str:
    # The same key aiohttp's router indexes resources by: the path up to the first variable.
    key = resource.canonical
    if "{" in key:
        key = key.partition("{")[0].rpartition("/")[0]
    return key.rstrip("/") or "/"


def _match(resource: web.AbstractResource, path: str) -> dict[str, str] | None:
    info = resource.get_info()
    if "path" in info:
        return {} if info["path"] == path else None
    if "pattern" in info:
        found = info["pattern"].fullmatch(path)
        return dict(found.groupdict()) if found else None
    if "directory" in info:
        prefix = info["prefix"]
        return {"filename": path[len(prefix) + 1 :]} if path.startswith(prefix + "/") else None
    return None


def _resolve(
    level: Level, method: str, path: str
) -> tuple[Level, web.AbstractResource | None, dict[str, str], set[str]]:
    children = {id(child.app): child for child in level.children}
    index: dict[str, list[web.AbstractResource]] = {}
    for resource in level.app.router.resources():
        index.setdefault(_index_key(resource), []).append(resource)
    allowed: set[str] = set()
    part = path
    while part:
        for resource in index.get(part, ()):
            info = resource.get_info()
            if "app" in info:
                if path == info["prefix"] or path.startswith(info["prefix"] + "/"):
                    return _resolve(children[id(info["app"])], method, path)
                continue
            params = _match(resource, path)
            if params is None:
                continue
            methods = {route.method for route in resource}
            if method in methods or "*" in methods:
                return level, resource, params, set()
            allowed |= methods
        if part == "/":
            break
        part = part.rpartition("/")[0] or "/"
    return level, None, {}, allowed


def _shadowed(level: Level, path: str) -> list[str]:
    child = _child_under({c.prefix: c for c in level.children}, path)
    if child is None or _match_in_subtree(child, path) is None:
        return []
    return [
        f"this [{level.label}] route shadows [{child.label}]'s route for {path}: "
        "aiohttp tries the parent's longer path first"
    ]


# -- problems aiohttp accepts silently ---------------------------------------------------------


def problems(tree: Tree) -> list[str]:
    """Return warnings: parent routes that shadow a child's, and namespaced names used twice."""
    found = []
    for level in tree.levels:
        children = {child.prefix: child for child in level.children}
        if not children:
            continue
        for resource in _own_resources(level):
            path = resource.canonical
            child = _child_under(children, path)
            if child is None:
                continue
            target = _match_in_subtree(child, path)
            if target is not None:
                found.append(
                    f"route {path} of [{level.label}] shadows the route {target.canonical} of "
                    f"[{child.label}]: requests never reach the sub-app. Move or rename one of them."
                )
    seen: dict[str, str] = {}
    for level in tree.levels:
        for name in level.app.router.named_resources():
            full = f"{level.namespace}:{name}" if level.namespace else name
            if full in seen:
                found.append(
                    f"route name {full!r} is used by [{seen[full]}] and [{level.label}]: "
                    "url() can reverse only one of them. Rename one."
                )
            seen.setdefault(full, level.label)
    return found


def _child_under(children: dict[str, Level], path: str) -> Level | None:
    """Return the child (by full prefix) whose prefix covers `path`, longest prefix first."""
    part = path
    while part:
        if part in children:
            return children[part]
        part = part.rpartition("/")[0]
    return None


def _match_in_subtree(level: Level, path: str) -> web.AbstractResource | None:
    for lvl in [level, *_descendants(level)]:
        for resource in _own_resources(lvl):
            if resource.canonical == path or _match(resource, path) is not None:
                return resource
    return None


def _descendants(level: Level) -> Iterator[Level]:
    for child in level.children:
        yield child
        yield from _descendants(child)
