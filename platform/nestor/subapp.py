"""The sub-app contract, discovery and mounting.

A sub-app is a package exposing `subapp = SubApp(...)`. The `[nestor] subapps` list names
each one to mount: by the name of its `nestor.subapps` entry point (`"polls"`, for a sub-app
installed from a distribution), or by import path (`"greeter"`, `"pkg.module:attr"`), the
config file's folder being importable. Installed sub-apps are never mounted unless named, as
Django's INSTALLED_APPS. The kernel calls each factory, mounts its declared children first
(mounting freezes them), then mounts it under the root. Mounting
makes teardown the exact reverse of start-up (see `lifecycle`); `tree.walk()` then reads
the built tree back and refuses what aiohttp would accept and route wrongly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from .config import ROOT_TABLE, Config, ConfigError, LevelPath, Setting, label
from .lifecycle import mount

ENTRY_POINT_GROUP = "nestor.subapps"
SUBAPPS = Setting(
    "subapps",
    list,
    [],
    help="The sub-apps to mount, in order: installed ones by entry-point name ('polls'), others "
    "by import path ('greeter', 'package.module:attr'); the config file's folder is importable",
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
    migrations: str | Path | None = None  # its Alembic revision files (relative to its package)
    metadata: sa.MetaData | None = None  # its tables: compared with the database, and autogenerate's target
    openapi: bool | None = None  # serve /openapi.json and /docs here; None: when its errors are JSON
    public_api: bool = False  # its documents stay whole in production, without the admin token

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


def installed() -> dict[str, importlib.metadata.EntryPoint]:
    """Return the sub-apps installed with a `nestor.subapps` entry point, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_spec(name: str, entry_points: Mapping[str, importlib.metadata.EntryPoint] | None = None) -> SubApp:
    """Return the spec a `subapps` entry names: an entry-point name, else an import path.

    An import path is `package.module` (its `subapp` attribute) or `package.module:attr`; a
    bare name is looked up among installed entry points first, then imported.
    """
    found = installed() if entry_points is None else entry_points
    if ":" not in name and "." not in name and name in found:
        ep = found[name]
        try:
            obj = ep.load()
        except Exception as e:
            raise ConfigError(
                f"sub-app {name!r} (entry point {ep.value}) could not be loaded: "
                f"{type(e).__name__}: {e}. Reinstall the package that declares it."
            ) from e
        return _spec_from(obj, f"{name} (entry point {ep.value})")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if module_name != missing and not module_name.startswith(missing + "."):  # something it imports
            raise ConfigError(
                f"sub-app {name!r} could not be imported: {type(e).__name__}: {e}. "
                "Check that the packages it needs are installed."
            ) from e
        if "." in name or ":" in name:
            raise ConfigError(
                f"sub-app {name!r} could not be imported: {type(e).__name__}: {e}. "
                "Check the [nestor] subapps list and that the package is installed."
            ) from e
        known = ", ".join(sorted(found)) or "none"
        raise ConfigError(
            f"sub-app {name!r} is neither an installed sub-app (installed: {known}) nor a module "
            "importable from the config file's folder. Check the [nestor] subapps list, install "
            "the sub-app's distribution, or put its package next to nestor.toml."
        ) from e
    except Exception as e:
        raise ConfigError(
            f"sub-app {name!r} could not be imported: {type(e).__name__}: {e}. "
            "Check the [nestor] subapps list and that the package is installed."
        ) from e
    return _spec_from(getattr(module, attr or "subapp", None), name)


def _spec_from(obj: object, where: str) -> SubApp:
    if isinstance(obj, ModuleType):
        obj = getattr(obj, "subapp", None)
    if not isinstance(obj, SubApp):
        raise ConfigError(
            f"sub-app {where!r} does not expose a nestor.SubApp: "
            "define `subapp = SubApp(name=..., prefix=..., factory=...)` in it"
        )
    return obj


def discover(names: Iterable[str], extra: Iterable[SubApp] = ()) -> list[SubApp]:
    """Return the specs the config names (entry-point names or import paths), then those given as objects."""
    found = installed()
    return [load_spec(name, found) for name in names] + list(extra)


def importable(folder: Path) -> None:
    """Make a project folder importable, as `flask run` and Django's manage.py do: sub-app
    packages saved next to the config file are found by name."""
    path = str(folder.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def package_folder(spec: SubApp) -> Path:
    """Return the folder of the module defining the spec's factory: what relative folders are relative to."""
    module = sys.modules.get(getattr(spec.factory, "__module__", ""), None)
    file = getattr(module, "__file__", None)
    if file is None:
        raise ConfigError(
            f"sub-app {spec.name!r}: its folders are given relative to its package, but the package of its "
            "factory cannot be found; give absolute paths (Path(__file__).parent / 'templates')"
        )
    return Path(file).resolve().parent


def template_folder(spec: SubApp) -> Path | None:
    """Return the spec's template folder: a relative one is in its package (the folder of the
    module defining its factory). ConfigError naming the sub-app and path when it is missing."""
    if spec.templates is None:
        return None
    folder = Path(spec.templates)
    folder = folder if folder.is_absolute() else package_folder(spec) / folder
    if not folder.is_dir():
        raise ConfigError(
            f"sub-app {spec.name!r}: its template folder {str(folder)!r} does not exist. Create it, or fix "
            "SubApp(templates=...) (relative to the sub-app's package); an installed sub-app must ship "
            "its templates as package data."
        )
    return folder


def not_mounted(names: Iterable[str]) -> list[str]:
    """Return the installed sub-apps (entry-point names) a `subapps` list does not name."""
    named = set(names)
    return sorted(
        name for name, ep in installed().items() if name not in named and ep.value not in named
    )


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
    if spec.openapi or (spec.openapi is None and spec.defaults.get("error_format") == "json"):
        _add_documents(app)
    mount_all(app, spec.children, path, config)
    return app


def _add_documents(app: web.Application) -> None:
    """Serve the app's OpenAPI document and docs page (added before mounting: mounting freezes the router)."""
    from .pages import docs_page, openapi_json  # pages reads the tree, which is built from this module

    taken = {info.get("path") for info in (r.get_info() for r in app.router.resources())}
    if "/openapi.json" not in taken and "openapi" not in app.router.named_resources():
        app.router.add_get("/openapi.json", openapi_json, name="openapi")
    if "/docs" not in taken and "docs" not in app.router.named_resources():
        app.router.add_get("/docs", docs_page, name="docs")


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


