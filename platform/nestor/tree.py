"""The tree of app levels: read back from the built app, checked, and configured.

`walk()` reads every mounted app through public router API (`resource.get_info()`) and
refuses what aiohttp would accept and then route wrongly; `apply_config()` checks every
configured table and key against the tree and places each value on its level's app.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import ChainMapProxy, web

from .config import DEFAULT, Config, ConfigError, LevelPath, Setting, Source, Value, closest, label, resolve
from .subapp import SPEC, SubApp


@dataclass(eq=False)
class Level:
    """One app in the mounted tree: its table path, full prefix and the values set on it."""

    path: LevelPath
    app: web.Application
    prefix: str
    spec: SubApp | None = None
    parent: Level | None = None
    children: list[Level] = field(default_factory=list)
    values: dict[str, Value] = field(default_factory=dict)  # set at exactly this level
    error_format: str = "html"  # the effective setting, fixed once the tree is built
    settings: dict[str, Setting[Any]] = field(default_factory=dict)  # the names valid in its table

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

    def effective(self) -> list[tuple[Setting[Any], Value]]:
        """Return every setting of this level's table, by name, with its value and where it was set."""
        chain = self.chain()
        found = []
        for setting in sorted(self.settings.values(), key=lambda s: s.name):
            if setting.root_only and self.path:
                continue  # server-wide values are shown once, at the root
            value = next(
                (lvl.values[setting.name] for lvl in reversed(chain) if setting.name in lvl.values),
                Value(setting.default, DEFAULT),
            )
            found.append((setting, value))
        return found

    def described(self) -> list[dict[str, Any]]:
        """Return `effective()` as JSON-ready records, secrets redacted: what pages and commands show."""
        return [value.describe(setting, self.path) for setting, value in self.effective()]


@dataclass(eq=False)
class Tree:
    """The built tree: every level (root first), every declared setting, start-up warnings."""

    levels: list[Level]
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


# -- the tree ------------------------------------------------------------------------------


def walk(root: web.Application) -> list[Level]:
    """Return every app level of a built tree, root first then by path, through public router API only."""
    top = Level(path=(), app=root, prefix="")
    levels, pending = [top], [top]
    mounted_at = {id(root): ("/", "nestor")}  # id -> (prefix, mounting level); an app inside itself too
    while pending:
        level = pending.pop()
        siblings: dict[str, Level] = {}
        for prefix, app in _mounted(level):
            first = mounted_at.get(id(app))
            if first is not None:
                raise ConfigError(
                    f"the same web.Application is mounted twice: at {first[0]!r} by [{first[1]}] and at "
                    f"{prefix!r} by [{level.label}]; aiohttp accepts this and then routes one of them "
                    "wrongly. Create a new application for each mount."
                )
            mounted_at[id(app)] = (prefix, level.label)
            child = _child_level(level, prefix, app, siblings)
            level.children.append(child)
            levels.append(child)
            pending.append(child)
    levels.sort(key=lambda lvl: lvl.path)
    return levels


def _mounted(level: Level) -> Iterator[tuple[str, web.Application]]:
    for resource in level.app.router.resources():
        info = resource.get_info()
        if "app" not in info:
            continue
        prefix = str(info.get("prefix", ""))
        # aiohttp percent-encodes the braces of a prefix it was given, so look at the decoded form.
        if "{" in unquote(prefix):
            raise ConfigError(
                f"[{level.label}] mounts a sub-app at {unquote(prefix)!r}, a prefix with a {{variable}} "
                "that aiohttp never matches. Use a fixed prefix and put variables in the sub-app's routes."
            )
        yield prefix, info["app"]


def _child_level(parent: Level, prefix: str, app: web.Application, seen: dict[str, Level]) -> Level:
    # `seen` holds the siblings so far by prefix and by name (prefixes start with '/', names never).
    spec = app.get(SPEC)
    name = spec.name if spec else _name_from_prefix(prefix)
    child = Level(path=(*parent.path, name), app=app, prefix=prefix, spec=spec, parent=parent)
    if prefix in seen:
        raise ConfigError(
            f"[{parent.label}] mounts two apps at {prefix!r} ([{seen[prefix].label}] and [{child.label}]); "
            "aiohttp routes every request to the first. Give one of them another prefix."
        )
    if child.path[-1] in seen:
        sibling = seen[child.path[-1]]
        raise ConfigError(
            f"two apps under [{parent.label}] would both be level {child.label!r} "
            f"(at {sibling.prefix!r} and {prefix!r}): give the sub-app a different name or prefix"
        )
    seen[prefix] = seen[child.path[-1]] = child
    return child


def _name_from_prefix(prefix: str) -> str:
    last = prefix.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"\W", "_", last.lower()) or "app"


# -- configuration of the levels -------------------------------------------------------------


def apply_config(levels: Sequence[Level], config: Config, kernel: Sequence[Setting[Any]]) -> None:
    """Check every configured table and key against the tree, and place values on their apps.

    A level's table accepts the kernel's settings and those declared by the sub-apps on its
    chain; two sub-apps may each declare a setting of the same name (each its own AppKey).
    """
    scope_settings(levels, kernel)
    by_path = {level.path: level for level in levels}
    for level in levels:
        _apply_spec_defaults(level)
    for path, values in config.tables.items():
        level = by_path.get(path)
        if level is None:
            source = next(iter(values.values())).source if values else config.origin
            raise ConfigError(
                f"{source}: unknown table [{label(path)}]: no sub-app is mounted there."
                + closest(label(path), [lvl.label for lvl in levels])
            )
        _apply_table(level, values)
    root = levels[0]
    for level in levels:
        for setting in level.settings.values():
            if setting not in root.app:
                root.app[setting] = setting.default
    for level in levels:
        for key, value in level.values.items():
            level.app[level.settings[key]] = value.value
    # Each level also holds the value it inherits of every setting in its scope, so that
    # `request.config_dict[SETTING]` is found in the first app it looks at: each app it passes
    # costs a KeyError raised and caught (about a microsecond), on every lookup. The values
    # still say where they were set (`Level.effective`); only a level's own are in its table.
    for level in levels[1:]:
        inherited = level.config()
        for setting in level.settings.values():
            if setting not in level.app:
                level.app[setting] = inherited[setting]


def scope_settings(levels: Sequence[Level], kernel: Sequence[Setting[Any]]) -> None:
    """Give each level the settings its table accepts: the kernel's plus its chain's sub-apps'."""
    by_name = {s.name: s for s in kernel}
    declared: dict[str, list[Setting[Any]]] = {}
    for level in levels[1:]:  # parents come before children: levels are sorted by path
        parent = level.parent
        level.settings = dict(parent.settings if parent is not None and parent.path else by_name)
        for setting in level.spec.settings if level.spec else ():
            known = level.settings.setdefault(setting.name, setting)
            if known is not setting:
                raise ConfigError(
                    f"sub-app {level.label!r} declares a setting {setting.name!r}, which its own chain "
                    "(or the kernel) already declares: rename it, or import and reuse that Setting"
                )
            declared.setdefault(setting.name, []).append(setting)
    root = levels[0]
    root.settings = dict(by_name)
    for name, found in declared.items():
        if len({id(s) for s in found}) == 1:  # unambiguous: may be set for everyone at [nestor]
            root.settings.setdefault(name, found[0])


def _apply_spec_defaults(level: Level) -> None:
    for key, value in (level.spec.defaults if level.spec else {}).items():
        setting = level.settings.get(key)
        if setting is None:
            raise ConfigError(
                f"sub-app {level.label!r} declares a default for unknown setting {key!r}."
                + closest(key, level.settings)
            )
        try:
            source = Source("sub-app default", level.label, level.path)
            level.values[key] = Value(setting.coerce(value), source)
        except ValueError as e:
            raise ConfigError(f"sub-app {level.label!r}: default {key!r}: {e}") from None


def _apply_table(level: Level, values: Mapping[str, Value]) -> None:
    for key, raw in values.items():
        if key == "prefix":
            _check_prefix_key(level, raw.source)  # already used when mounting
            continue
        setting = level.settings.get(key)
        if setting is None:
            raise ConfigError(f"{raw.source}: unknown key {key!r}." + REMOVED.get(key, _hint(level, key)))
        if setting.root_only and level.path:
            raise ConfigError(f"{raw.source}: {key!r} applies to the whole server; set it under [nestor]")
        level.values[key] = resolve(setting, raw)


REMOVED = {
    "entry_points": " Installed sub-apps are no longer mounted by themselves: list the sub-apps to "
    "mount by name in subapps (subapps = [\"polls\", \"notes\"]) and delete entry_points.",
}


def _hint(level: Level, key: str) -> str:
    owners = [lvl.label for lvl in _subtree(level) if key in lvl.settings and lvl.spec is not None
              and any(s.name == key for s in lvl.spec.settings)]
    if owners:
        return (f" Sub-apps {', '.join(owners)} each declare their own {key!r}: "
                "set it in their tables instead.")
    return closest(key, level.settings)


def _subtree(level: Level) -> Iterator[Level]:
    yield level
    for child in level.children:
        yield from _subtree(child)


def _check_prefix_key(level: Level, source: Source) -> None:
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
