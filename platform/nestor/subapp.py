"""The sub-app contract, discovery and mounting.

A sub-app is a package exposing `subapp = SubApp(...)`. The kernel imports it from the
`[nestor] subapps` list (or a `nestor.subapps` entry point), calls its factory, mounts its
declared children first (mounting freezes them), then mounts it under the root. Mounting
makes teardown the exact reverse of start-up (see `lifecycle`); `tree.walk()` then reads
the built tree back and refuses what aiohttp would accept and route wrongly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import web

from .config import ROOT_TABLE, Config, ConfigError, LevelPath, Setting, label
from .lifecycle import mount

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
# No double underscore: it separates levels in NESTOR_<LEVEL>__<KEY> environment variables.
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
Readiness = Callable[[web.Application], Awaitable[bool]]


COMMAND_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Command:
    """A `nestor NAME ...` command a sub-app adds: `run(argv)` parses its own arguments, returns the exit status."""

    name: str
    run: Callable[[list[str]], int]
    help: str = ""  # one line for `nestor --help`

    def __post_init__(self) -> None:
        if not COMMAND_RE.match(self.name):
            raise ConfigError(
                f"command name {self.name!r} is not valid: use lower-case letters, digits and "
                "single hyphens (e.g. 'chat' or 'import-users')"
            )


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
    nav: bool = True  # listed in the site navigation (the admin is not: it is 404 until enabled)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # this level's own defaults
    commands: Sequence[Command] = ()  # `nestor <name>` commands this sub-app adds

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ConfigError(
                f"sub-app name {self.name!r} is not valid: use lower-case letters and digits, "
                "words joined by single underscores (e.g. 'polls' or 'user_admin')"
            )
        if self.name == ROOT_TABLE:
            raise ConfigError(
                f"sub-app name {self.name!r} is the root's table [{ROOT_TABLE}]; give the sub-app another name"
            )


SPEC = web.AppKey("nestor.spec", SubApp)


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


def _entry_point_specs() -> Iterator[SubApp]:
    # Sorted by name: the mount order must not depend on the order of folders on disk.
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for ep in sorted(found, key=lambda ep: ep.name):
        try:
            obj = ep.load()
        except Exception as e:
            raise ConfigError(
                f"sub-app entry point {ep.name!r} ({ep.value}) could not be loaded: "
                f"{type(e).__name__}: {e}. Reinstall or uninstall the package that declares it."
            ) from e
        yield _spec_from(obj, f"entry point {ep.name} = {ep.value}")


def discover(paths: Iterable[str], extra: Iterable[SubApp] = (), entry_points: bool = True) -> list[SubApp]:
    """Return the specs named in config, given as objects, and installed as entry points, once each."""
    specs = [load_spec(p) for p in paths] + list(extra)
    for spec in _entry_point_specs() if entry_points else ():
        if all(spec is not s for s in specs):
            specs.append(spec)
    return specs


# -- mounting ------------------------------------------------------------------------------


def check_prefix(prefix: object, where: str) -> str:
    """Return a valid mount prefix (no trailing '/') or raise ConfigError saying the fix."""
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
    where = f"sub-app {label(path)!r}: its factory {_qualname(spec.factory)}"
    try:
        app = spec.factory()
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{where} raised {type(e).__name__}: {e}") from e
    if not isinstance(app, web.Application):
        raise ConfigError(f"{where} returned {type(app).__name__}, not an aiohttp web.Application")
    if app.on_startup.frozen:
        raise ConfigError(
            f"{where} returned an application that is already mounted or started. "
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
                f"({_qualname(names[spec.name].factory)} and {_qualname(spec.factory)}): "
                "names must be unique; give one of them another name= in its SubApp"
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


def _qualname(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}.{name}" if module else name


