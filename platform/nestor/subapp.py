"""The sub-app contract, discovery, mounting and the tree of app levels.

A sub-app is a package exposing `subapp = SubApp(...)`. The kernel imports it from the
`[nestor] subapps` list (or a `nestor.subapps` entry point), calls its factory, mounts its
declared children first (mounting freezes them), then mounts it under the root.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import web
from aiohttp import ChainMapProxy

from .config import Config, ConfigError, LevelPath, Setting, closest, label, resolve

ENTRY_POINT_GROUP = "nestor.subapps"
SUBAPPS = Setting(
    "subapps",
    list,
    [],
    help="Import paths of the sub-apps to mount, in order (package.module or package.module:attr)",
    root_only=True,
)
ENTRY_POINTS = Setting(
    "entry_points",
    bool,
    True,
    help="Also mount sub-apps installed with a 'nestor.subapps' entry point",
    root_only=True,
)
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
Readiness = Callable[[web.Application], Awaitable[bool]]


@dataclass(frozen=True, eq=False)
class SubApp:
    """The declarative spec of a sub-app: what the kernel needs to mount, configure and list it."""

    name: str
    prefix: str
    factory: Callable[[], web.Application]
    settings: Sequence[Setting[Any]] = ()
    children: Sequence[SubApp] = ()
    templates: str | Path | None = None
    ready: Readiness | None = None
    title: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)  # this level's own defaults

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ConfigError(
                f"sub-app name {self.name!r} is not valid: use lower-case letters, digits and '_'"
            )


@dataclass(eq=False)
class Level:
    """One app in the mounted tree: its table path, full prefix and the values set on it."""

    path: LevelPath
    app: web.Application
    prefix: str
    spec: SubApp | None = None
    parent: Level | None = None
    children: list[Level] = field(default_factory=list)
    values: dict[str, tuple[Any, str]] = field(default_factory=dict)
    error_format: str = "html"  # the effective setting, fixed once the tree is built

    @property
    def label(self) -> str:
        """The config table of this level: `nestor`, `polls`, `polls.api`."""
        return label(self.path)

    @property
    def namespace(self) -> str:
        """The route-name namespace: `polls:api` (empty for the root)."""
        return ":".join(self.path)

    @property
    def title(self) -> str:
        """A human name for navigation."""
        return (self.spec.title if self.spec else "") or self.label

    def chain(self) -> list[Level]:
        """Return the levels from the root down to this one."""
        chain, level = [], self
        while level is not None:
            chain.append(level)
            level = level.parent
        return chain[::-1]

    def config(self) -> ChainMapProxy:
        """Return this level's view of app state with parent fallback (config_dict outside a request)."""
        return ChainMapProxy([lvl.app for lvl in reversed(self.chain())])


@dataclass(eq=False)
class Tree:
    """The built tree: every level (root first), every declared setting, start-up warnings."""

    levels: list[Level]
    settings: dict[str, Setting[Any]]
    warnings: list[str] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # derived once the router is frozen

    @property
    def root(self) -> Level:
        """The root level."""
        return self.levels[0]

    def find(self, table: str) -> Level:
        """Return the level of a config table name (`polls.api`); ConfigError if there is none."""
        for level in self.levels:
            if level.label == table:
                return level
        raise ConfigError(
            f"no app level {table!r}." + closest(table, [lvl.label for lvl in self.levels])
        )


LEVEL = web.AppKey("nestor.level", Level)
TREE = web.AppKey("nestor.tree", Tree)
SPEC = web.AppKey("nestor.spec", SubApp)


def level_of(apps: Sequence[web.Application]) -> Level:
    """Return the level serving a request, from `request.match_info.apps` (root first)."""
    for app in reversed(apps):
        level = app.get(LEVEL)
        if level is not None:
            return level
    raise RuntimeError("this application was not built by nestor.app.create_app()")


def config_of(app: web.Application) -> ChainMapProxy:
    """Return the config view of a sub-app at start-up, where there is no request yet."""
    level = app.get(LEVEL)
    if level is None:
        raise RuntimeError(
            "config_of() needs an app mounted by nestor.app.create_app(); "
            "call it from a cleanup_ctx or signal, not from the factory"
        )
    return level.config()


# -- discovery -----------------------------------------------------------------------------


def load_spec(path: str) -> SubApp:
    """Import `package.module` (its `subapp` attribute) or `package.module:attr` and return the spec."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ConfigError(
            f"sub-app {path!r} could not be imported: {type(e).__name__}: {e}. "
            "Check the [nestor] subapps list and that the package is installed."
        ) from e
    return _spec_from(getattr(module, attr or "subapp", None), path)


def _spec_from(obj: object, where: str) -> SubApp:
    if isinstance(obj, ModuleType):
        obj = getattr(obj, "subapp", None)
    if not isinstance(obj, SubApp):
        raise ConfigError(
            f"sub-app {where!r} does not expose a nestor.SubApp: "
            "define `subapp = SubApp(name=..., prefix=..., factory=...)` in it"
        )
    return obj


def discover(paths: Iterable[str], extra: Iterable[SubApp] = (), entry_points: bool = True) -> list[SubApp]:
    """Return the specs named in config, given as objects, and installed as entry points, once each."""
    specs = [load_spec(p) for p in paths] + list(extra)
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                spec = _spec_from(ep.load(), f"entry point {ep.name} = {ep.value}")
            except ConfigError:
                raise
            except Exception as e:
                raise ConfigError(
                    f"sub-app entry point {ep.name!r} ({ep.value}) could not be loaded: "
                    f"{type(e).__name__}: {e}"
                ) from e
            if all(spec is not s for s in specs):
                specs.append(spec)
    return specs


def declared_settings(specs: Iterable[SubApp], kernel: Iterable[Setting[Any]]) -> dict[str, Setting[Any]]:
    """Return every declared setting by name; refuse two different settings with one name."""
    found: dict[str, tuple[Setting[Any], str]] = {s.name: (s, "the kernel") for s in kernel}

    def visit(spec: SubApp, where: str) -> None:
        for setting in spec.settings:
            known = found.setdefault(setting.name, (setting, where))
            if known[0] is not setting:
                raise ConfigError(
                    f"setting {setting.name!r} is declared by {known[1]} and by sub-app {where!r}: "
                    "rename one, or import and reuse the same Setting object"
                )
        for child in spec.children:
            visit(child, f"{where}.{child.name}")

    for spec in specs:
        visit(spec, spec.name)
    return {name: setting for name, (setting, _) in found.items()}


# -- mounting ------------------------------------------------------------------------------


def check_prefix(prefix: object, where: str) -> str:
    """Return a valid mount prefix or raise ConfigError saying the fix."""
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        raise ConfigError(f"{where}: prefix {prefix!r} must start with '/' (for example '/polls')")
    if "{" in prefix or "}" in prefix:
        raise ConfigError(
            f"{where}: prefix {prefix!r} contains a {{variable}}; aiohttp accepts it and then never "
            "matches it. Use a fixed prefix and put variables in the sub-app's routes."
        )
    if prefix.rstrip("/") == "":
        raise ConfigError(f"{where}: prefix '/' would hide the root; give the sub-app its own prefix")
    return prefix.rstrip("/")


def prefix_of(spec: SubApp, path: LevelPath, config: Config) -> str:
    """Return the prefix a spec is mounted at: `[name] prefix` in config, else the spec's default."""
    raw = config.get(path, "prefix")
    if raw is None:
        return check_prefix(spec.prefix, f"sub-app {label(path)!r}")
    return check_prefix(raw.value, f"{raw.source}: prefix")


def build(spec: SubApp, path: LevelPath, config: Config) -> web.Application:
    """Return the sub-app's application with its declared children mounted."""
    where = f"sub-app {label(path)!r}"
    try:
        app = spec.factory()
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"{where}: its factory {_qualname(spec.factory)} raised {type(e).__name__}: {e}"
        ) from e
    if not isinstance(app, web.Application):
        raise ConfigError(
            f"{where}: its factory {_qualname(spec.factory)} returned "
            f"{type(app).__name__}, not an aiohttp web.Application"
        )
    if app.on_startup.frozen:
        raise ConfigError(
            f"{where}: its factory returned an application that is already mounted or started. "
            "Return a new web.Application on every call: aiohttp routes a twice-mounted app wrongly."
        )
    app[SPEC] = spec
    mount_all(app, spec.children, path, config)
    return app


def mount_all(parent: web.Application, specs: Sequence[SubApp], path: LevelPath, config: Config) -> None:
    """Build and mount `specs` under `parent`, refusing duplicate names and prefixes."""
    names: dict[str, SubApp] = {}
    prefixes: dict[str, str] = {}
    for spec in specs:
        child_path = (*path, spec.name)
        if spec.name in names:
            raise ConfigError(
                f"two sub-apps are named {spec.name!r} under [{label(path)}] "
                f"({_qualname(names[spec.name].factory)} and {_qualname(spec.factory)}): names must be unique"
            )
        names[spec.name] = spec
        prefix = prefix_of(spec, child_path, config)
        if prefix in prefixes:
            raise ConfigError(
                f"sub-apps {prefixes[prefix]!r} and {label(child_path)!r} both use prefix {prefix!r}: "
                f"set a different one, e.g. [{label(child_path)}] prefix = \"/{spec.name}\""
            )
        prefixes[prefix] = label(child_path)
        mount(parent, prefix, build(spec, child_path, config))


def mount(parent: web.Application, prefix: str, child: web.Application) -> None:
    """`add_subapp`, then order teardown as the exact reverse of start-up.

    aiohttp runs a parent's cleanup contexts before its sub-apps' and, when start-up fails,
    never tears down sub-apps that had started. Here a child's cleanup runs before the
    parent's own (latest mounted first) and only if the child's start-up began.
    """
    starts, cleanups = list(parent.on_startup), list(parent.on_cleanup)
    parent.add_subapp(prefix, child)
    new_start = [h for h in parent.on_startup if h not in starts]
    new_cleanup = [h for h in parent.on_cleanup if h not in cleanups]
    if len(new_start) != 1 or len(new_cleanup) != 1:
        return  # aiohttp changed how it chains sub-app signals; keep its order
    start, cleanup = new_start[0], new_cleanup[0]
    started = False

    async def start_child(app: web.Application) -> None:
        nonlocal started
        started = True
        await start(app)

    async def cleanup_child(app: web.Application) -> None:
        nonlocal started
        if started:
            started = False
            await cleanup(app)

    parent.on_startup[parent.on_startup.index(start)] = start_child
    parent.on_cleanup.remove(cleanup)
    parent.on_cleanup.insert(0, cleanup_child)
    parent[CHILD_CLEANUPS] = [cleanup_child, *parent.get(CHILD_CLEANUPS, [])]


CHILD_CLEANUPS = web.AppKey("nestor.child_cleanups", list)


async def tree_guard(app: web.Application) -> Any:
    """Root cleanup context, registered last: if start-up failed, tear down the sub-apps that started.

    aiohttp then runs only the root's own contexts, so sub-apps' would leak.
    """
    yield
    if not app.on_cleanup.frozen:  # start-up did not finish: aiohttp skips the sub-apps
        for cleanup_child in app.get(CHILD_CLEANUPS, []):
            await cleanup_child(app)


def _qualname(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}.{name}" if module else name


# -- the tree ------------------------------------------------------------------------------


def walk(root: web.Application) -> list[Level]:
    """Return every app level of a built tree, depth first, through public router API only."""
    top = Level(path=(), app=root, prefix="")
    levels, seen = [top], {id(root): "/"}
    stack = [top]
    while stack:
        level = stack.pop()
        found = []
        for resource in level.app.router.resources():
            info = resource.get_info()
            child = info.get("app")
            if child is None:
                continue
            prefix = str(info.get("prefix", ""))
            if id(child) in seen:
                raise ConfigError(
                    f"the same web.Application is mounted twice, at {seen[id(child)]!r} and {prefix!r}; "
                    "aiohttp accepts this and then routes one of them wrongly. "
                    "Create a new application for each mount."
                )
            seen[id(child)] = prefix
            if "{" in prefix:
                raise ConfigError(
                    f"a sub-app is mounted at {prefix!r}, a prefix with a {{variable}} that aiohttp never "
                    "matches. Use a fixed prefix."
                )
            spec = child.get(SPEC)
            name = spec.name if spec else _name_from_prefix(prefix)
            sub = Level(path=(*level.path, name), app=child, prefix=prefix, spec=spec, parent=level)
            if any(c.path == sub.path for c in level.children):
                raise ConfigError(
                    f"two apps under [{level.label}] would both be level {sub.label!r}: "
                    "give the sub-app a different name or prefix"
                )
            level.children.append(sub)
            found.append(sub)
        levels.extend(found)
        stack.extend(reversed(found))
    levels.sort(key=lambda lvl: lvl.path)
    return levels


def _name_from_prefix(prefix: str) -> str:
    last = prefix.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"\W", "_", last.lower()) or "app"


def apply_config(levels: Sequence[Level], config: Config, settings: dict[str, Setting[Any]]) -> None:
    """Check every configured table and key against the tree, and place values on their apps."""
    by_path = {level.path: level for level in levels}
    for level in levels:
        for key, value in (level.spec.defaults if level.spec else {}).items():
            setting = settings.get(key)
            if setting is None:
                raise ConfigError(
                    f"sub-app {level.label!r} declares a default for unknown setting {key!r}."
                    + closest(key, settings)
                )
            try:
                level.values[key] = (setting.coerce(value), f"default of sub-app {level.label}")
            except ValueError as e:
                raise ConfigError(f"sub-app {level.label!r}: default {key!r}: {e}") from None
    for path, values in config.tables.items():
        level = by_path.get(path)
        if level is None:
            source = next(iter(values.values())).source if values else config.origin
            known = [lvl.label for lvl in levels]
            raise ConfigError(
                f"{source}: unknown table [{label(path)}]: no sub-app is mounted there."
                + closest(label(path), known)
            )
        for key, raw in values.items():
            if key == "prefix":
                _check_prefix_key(level, raw.source)
                continue
            setting = settings.get(key)
            if setting is None:
                raise ConfigError(f"{raw.source}: unknown key {key!r}." + closest(key, settings))
            if setting.root_only and path:
                raise ConfigError(
                    f"{raw.source}: {key!r} applies to the whole server; set it under [nestor]"
                )
            level.values[key] = (resolve(setting, raw), raw.source)
    root = levels[0]
    for setting in settings.values():
        root.app[setting] = setting.default
    for level in levels:
        for key, (value, _) in level.values.items():
            level.app[settings[key]] = value


def _check_prefix_key(level: Level, source: str) -> None:
    if level.parent is None:
        raise ConfigError(f"{source}: the root has no prefix; 'prefix' belongs in a sub-app's table")
    parent = level.parent
    declared = level.spec is not None and (
        parent.parent is None or (parent.spec is not None and level.spec in parent.spec.children)
    )
    if not declared:
        raise ConfigError(
            f"{source}: [{level.label}] is mounted by its parent's factory, so its prefix is fixed "
            "in code; declare it in the parent's SubApp(children=...) to make it configurable"
        )
