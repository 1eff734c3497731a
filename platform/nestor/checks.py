"""What `nestor check` reports: production mode and deploy checks, and mistakes in sub-app code.

`[nestor] mode = "production"` hides the internals of `/routes` from anyone without the
admin token. `deploy_problems(tree, workers)` lists unsafe settings, in the spirit of
Django's `check --deploy`: no admin token, a missing or short secret key, a sub-app's
`debug` setting on, secrets written in a config file, SQLite shared by several workers.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import jinja2
import jinja2.meta
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from . import errors, introspect
from .config import ENV_PREFIX, ConfigError, Setting, Value, one_of
from .tree import Level, Tree

MODE = Setting(
    "mode",
    str,
    "development",
    validate=one_of("development", "production"),
    root_only=True,
    help="'production' hides handler sources and middlewares on /routes (unless the request "
    "carries the admin token) and makes `nestor check` run the deploy checks",
)
MIN_SECRET_LENGTH = 32  # characters of admin_token and secret_key, below which production refuses to start


def is_production(config: Mapping[Any, Any]) -> bool:
    """True when `mode` is production in this view of the config (`request.config_dict`)."""
    return config.get(MODE, MODE.default) == "production"


def deploy_problems(tree: Tree, workers: int = 1) -> list[str]:
    """Return warnings about settings that are unsafe in production, each naming the fix."""
    root = {setting.name: value for setting, value in tree.root.effective()}
    found = _development(root.get("mode"))
    found += [*_admin_token(root.get("admin_token")), *_secret_key(root.get("secret_key"))]
    found += _open_writes(tree) + _public_metrics(root.get("metrics_token"))
    found += _plain_http(root.get("trusted_proxies"))
    for level in tree.levels:
        for setting, value in level.effective():
            if value.source.level == level.path:  # inherited values are reported where they were set
                found += _debug(level, setting, value) + _secret_in_file(level, setting, value)
    found += _sqlite_workers(root.get("database_url"), workers)
    return found


REACH_TIMEOUT = 3.0  # seconds the deploy checks give the database and the bus to answer


def connection_problems(root: Any) -> list[str]:
    """Whether the database and the bus (Redis) answer within REACH_TIMEOUT seconds: one line each if not."""
    from .bus import BUS_URL, bus_for
    from .db import BASE_DIR, DATABASE_URL, engine_for, ping, unavailable

    async def probe() -> list[str]:
        found = []
        engine = engine_for(root[DATABASE_URL], root[BASE_DIR])
        shown = engine.url.render_as_string(hide_password=True)
        try:
            await asyncio.wait_for(ping(engine), REACH_TIMEOUT)
        except Exception as e:  # noqa: BLE001 (every failure is the answer: it does not connect)
            reason = unavailable(e) or f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            found.append(f"database_url {shown} does not answer within {REACH_TIMEOUT:g} s: {reason}")
        finally:
            await engine.dispose()
        if not root[BUS_URL].startswith("memory:"):
            bus = bus_for(root[BUS_URL])
            try:
                await bus.start()
                if not await bus.ready():
                    found.append(f"bus_url {getattr(bus, 'shown_url', '')} does not answer: is Redis running there?")
            finally:
                await bus.close()
        return found

    return asyncio.run(probe())


def _development(entry: Value | None) -> list[str]:
    if entry is not None and entry.value == "production":
        return []
    return [
        "mode is development: /routes, /routes.json and /routes/explain show every handler, its file and "
        "line, the middlewares and the configuration to anyone, and templates are re-read at every render. "
        "Set [nestor] mode = \"production\" (or NESTOR_MODE=production)."
    ]


def _open_writes(tree: Tree) -> list[str]:
    """Write routes whose guards (`require_token`, `nestor.auth.guards`) are all empty: open to anyone."""
    found: dict[tuple[Level, tuple[Setting[str], ...]], list[str]] = {}
    for route in introspect.routes(tree):
        if route.method not in ("POST", "PUT", "PATCH", "DELETE"):
            continue
        settings, state = route.guards()
        if state == "open":
            found.setdefault((route.level, tuple(settings)), []).append(f"{route.method} {route.path}")
    problems = []
    for (level, settings), writes in found.items():
        names = " and ".join(s.name for s in settings)
        problems.append(
            f"{names} {'is' if len(settings) == 1 else 'are'} empty at [{level.label}]: anyone may call "
            f"{', '.join(writes[:3])}{' and more' if len(writes) > 3 else ''}. Set "
            f"{' or '.join(_variables(level, s) for s in settings)} to a long random value."
        )
    return problems


def _variables(level: Level, setting: Setting[str]) -> str:
    name = ENV_PREFIX + setting.name.upper()
    if setting.root_only or not level.path:
        return name
    return f"{name} (or the level's own, {ENV_PREFIX}{'__'.join([*level.path, setting.name]).upper()})"


def _public_metrics(entry: Value | None) -> list[str]:
    if entry is not None and entry.value:
        return []
    return [
        "metrics_token is empty: anyone may read /metrics (requests by route, latencies, pool and bus "
        "figures). Set NESTOR_METRICS_TOKEN and give your Prometheus the token (bearer_token)."
    ]


def _admin_token(entry: Value | None) -> list[str]:
    if entry is None or not entry.value:
        return [
            "admin_token is not set: /admin is disabled and nobody can see the details of /routes. "
            "Set NESTOR_ADMIN_TOKEN to a long random value (python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')."
        ]
    return _short("admin_token", entry.value)


def _secret_key(entry: Value | None) -> list[str]:
    if entry is None or not entry.value:
        return [
            "secret_key is not set: each worker signs sessions with its own random key, so logins "
            "and form tokens break between workers and end at every restart. Set NESTOR_SECRET_KEY "
            "to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(48))')."
        ]
    return _short("secret_key", entry.value)


def _short(name: str, value: str) -> list[str]:
    if not value or len(value) >= MIN_SECRET_LENGTH:
        return []
    return [
        f"{name} has {len(value)} characters: use at least {MIN_SECRET_LENGTH} random ones "
        f"(NESTOR_{name.upper()}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))'))."
    ]


def refuse_weak_secrets(root: Mapping[Any, Any]) -> None:
    """In production, refuse to start with an admin_token or secret_key shorter than MIN_SECRET_LENGTH."""
    from .auth import ADMIN_TOKEN
    from .sessions import SECRET_KEY

    if is_production(root):
        found = _short("admin_token", root[ADMIN_TOKEN]) + _short("secret_key", root[SECRET_KEY])
        if found:
            raise ConfigError("production mode: " + " ".join(found))


def _plain_http(entry: Value | None) -> list[str]:
    if entry is not None and entry.value:
        return []
    return [
        "trusted_proxies is empty: Nestor serves plain http, so without a TLS proxy in front of it "
        "logins and tokens cross the network readable, and with one (not listed) cookies are never "
        "Secure, no HSTS is sent and logs show the proxy's address. Put it behind a proxy that "
        "terminates TLS and list the proxy's address: NESTOR_TRUSTED_PROXIES=127.0.0.1."
    ]


def _debug(level: Level, setting: Setting[Any], entry: Value) -> list[str]:
    # The kernel declares no `debug`; a sub-app that declares one must not ship with it on.
    if setting.name != "debug" or not entry.value:
        return []
    return [f"[{level.label}] debug is on ({entry.source}): turn it off in production."]


def _secret_in_file(level: Level, setting: Setting[Any], entry: Value) -> list[str]:
    if not setting.secret or not entry.value or entry.source.kind != "file":
        return []
    var = ENV_PREFIX + "__".join([*level.path, setting.name]).upper()
    return [
        f"[{level.label}] {setting.name} is written in {entry.source}: in production read "
        f"secrets from the environment ({var}) and keep them out of files."
    ]


def _sqlite_workers(entry: Value | None, workers: int) -> list[str]:
    if entry is None or workers <= 1:
        return []
    try:
        backend = make_url(entry.value).get_backend_name()
    except ArgumentError:
        return []  # start-up reports a malformed URL
    if backend != "sqlite":
        return []
    return [
        f"database_url is SQLite with {workers} workers: SQLite has one writer at a time, so "
        "workers wait on each other's writes. Use PostgreSQL (postgresql+asyncpg://...) or one worker."
    ]


# -- what sub-app code uses ------------------------------------------------------------------
# `nestor check` reads the source of each level's code (its factory, handlers and cleanup
# contexts, and the modules of its package they import) for two mistakes that otherwise show
# only at request time, as 500s: a template no folder has, and a setting the level does not
# declare (a bare KeyError).

RENDER_CALLS = frozenset({"template", "render_template", "render_string", "get_template", "select_template"})


def source_problems(tree: Tree, env: jinja2.Environment) -> list[str]:
    """Return templates that code renders but no folder has, and settings it reads but does not declare."""
    found: list[str] = []
    checked: set[str] = set()
    for level in tree.levels:
        who = f"sub-app {level.label!r}" if level.path else "the kernel"
        for module in _modules_of(level):
            templates, settings = _uses(module)
            for name, where in templates:
                found += _template_problems(env, name, f"{who} renders template {name!r} ({where})", checked)
            if level.path:
                found += [_undeclared(tree, level, s, where) for s, where in settings if not _declared(level, s)]
    return list(dict.fromkeys(found))


def _declared(level: Level, setting: Setting[Any]) -> bool:
    return any(known is setting for known in level.settings.values())


def _undeclared(tree: Tree, level: Level, setting: Setting[Any], where: str) -> str:
    owners = [lvl.label for lvl in tree.levels if lvl.spec and any(s is setting for s in lvl.spec.settings)]
    text = f"sub-app {level.label!r} reads setting {setting.name!r} ({where}), which it does not declare"
    if owners:
        return f"{text}: it belongs to sub-app {owners[0]!r}. Declare a setting of its own instead."
    return f"{text}: add it to its SubApp(settings=[...]), or requests that read it fail."


def _template_problems(env: jinja2.Environment, name: str, what: str, checked: set[str]) -> list[str]:
    if name in checked:
        return []
    checked.add(name)
    try:
        source, _, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        parsed = env.parse(source)
    except jinja2.TemplateNotFound:
        return [f"{what}, which no template folder has (searched, in order: {_folders(env)})"]
    except jinja2.TemplateSyntaxError as e:
        return [f"{what}: the template has a syntax error at line {e.lineno}: {e.message}"]
    found = []
    for inner in jinja2.meta.find_referenced_templates(parsed):
        if inner is not None:
            found += _template_problems(env, inner, f"template {name!r} uses {inner!r}", checked)
    return found


def _folders(env: jinja2.Environment) -> str:
    loaders = getattr(env.loader, "loaders", [env.loader])
    return ", ".join(path for loader in loaders for path in getattr(loader, "searchpath", []))


def _modules_of(level: Level) -> list[ModuleType]:
    """The modules of a level's own code, and those of its package they import."""
    seeds: list[Any] = [level.spec.factory] if level.spec else [errors.respond]
    for resource in level.app.router.resources():
        seeds += [route.handler for route in resource if "app" not in resource.get_info()]
    seeds += list(level.app.cleanup_ctx)
    found: dict[str, ModuleType] = {}
    for seed in seeds:
        module = sys.modules.get(getattr(inspect.unwrap(seed), "__module__", None) or "")
        if module is not None:
            found.setdefault(module.__name__, module)
    for module in list(found.values()):
        package = module.__name__.rpartition(".")[0] or module.__name__
        for value in vars(module).values():
            if isinstance(value, ModuleType) and value.__name__.startswith(package + "."):
                found.setdefault(value.__name__, value)
    return list(found.values())


@functools.cache
def _uses(module: ModuleType) -> tuple[list[tuple[str, str]], list[tuple[Setting[Any], str]]]:
    """Return the template names a module renders and the settings it reads, each with `module:line`."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return [], []
    templates: list[tuple[str, str]] = []
    settings: list[tuple[Setting[Any], str]] = []
    for node in ast.walk(tree):
        where = f"{module.__name__}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call) and _called(node) in RENDER_CALLS and node.args:
            first = node.args[0]
            names = first.elts if isinstance(first, ast.List | ast.Tuple) else [first]
            templates += [(n.value, where) for n in names if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        key = node.slice if isinstance(node, ast.Subscript) else None
        if isinstance(node, ast.Call) and _called(node) == "get" and node.args:
            key = node.args[0]
        setting = _resolve(module, key) if key is not None else None
        if isinstance(setting, Setting):
            settings.append((setting, where))
    return templates, settings


def _called(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _resolve(module: ModuleType, node: ast.expr) -> Any:
    """Return the object a name (`MAX_BODY`) or attribute chain (`settings.MAX_BODY`) names in a module."""
    if isinstance(node, ast.Name):
        return vars(module).get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(module, node.value)
        return getattr(owner, node.attr, None) if isinstance(owner, ModuleType) else None
    return None
