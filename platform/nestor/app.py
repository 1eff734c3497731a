"""`create_app(config=None)`: the root application factory.

Also usable as `gunicorn 'nestor.app:create_app()' --worker-class aiohttp.GunicornWebWorker`;
`nestor serve --reload` is the development loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from . import bus, checks, db, hostmetrics, introspect, jobs, metrics, migrations, pages, templating
from .config import PAGE_SIZE, Config, ConfigError, Setting, from_mapping, load, positive, resolve
from .auth import ADMIN_TOKEN, API_TOKEN
from .errors import ERROR_FORMAT
from .logs import LOG_FORMAT, quiet_bad_request_logs
from .middleware import BODY_TIMEOUT, kernel_middleware, prepare_headers
from .sessions import SECRET_KEY
from .lifecycle import tree_guard
from .subapp import SUBAPPS, SubApp, discover, importable, mount_all, template_folder
from .tree import LEVEL, TREE, Tree, apply_config, config_of, walk

logger = logging.getLogger("nestor")

CLIENT_MAX_SIZE = Setting(
    "client_max_size",
    int,
    1024**2,
    validate=positive,
    help="Largest request body in bytes; larger ones get 413",
    root_only=True,
)
WORKER = metrics.WORKER  # which worker this process is under `nestor serve --workers N`
HOST = Setting("host", str, "127.0.0.1", help="Address `nestor serve` listens on", root_only=True)
PORT = Setting("port", int, 8080, help="Port `nestor serve` listens on", root_only=True)
SHUTDOWN_TIMEOUT = Setting(
    "shutdown_timeout",
    float,
    30.0,
    help="Seconds graceful shutdown waits for in-flight requests",
    root_only=True,
)
KEEPALIVE_TIMEOUT = Setting(
    "keepalive_timeout",
    float,
    15.0,
    validate=positive,
    help=(
        "Seconds an idle connection stays open; also the most a client may take to send a "
        "complete request head after connecting (a slow-header client is closed then)"
    ),
    root_only=True,
)
KERNEL_SETTINGS: tuple[Setting[Any], ...] = (
    SUBAPPS,
    PAGE_SIZE,
    ERROR_FORMAT,
    CLIENT_MAX_SIZE,
    db.DATABASE_URL,
    *db.POOL_SETTINGS,
    bus.BUS_URL,
    templating.TEMPLATES_DIR,
    HOST,
    PORT,
    SHUTDOWN_TIMEOUT,
    KEEPALIVE_TIMEOUT,
    BODY_TIMEOUT,
    SECRET_KEY,
    API_TOKEN,
    ADMIN_TOKEN,
    checks.MODE,
    LOG_FORMAT,
    metrics.METRICS_TOKEN,
)


def first_worker(app: web.Application) -> bool:
    """True in one process per site: a single process, or worker 0 of `nestor serve --workers N`.

    Work that must happen once per site, not once per worker (scheduled checks, say), runs
    where this is true. Call it at start-up (a cleanup context) of an app create_app built.
    """
    return config_of(app).get(WORKER, 0) == 0


def as_config(config: Config | Mapping[str, Any] | str | Path | None) -> Config:
    """Return a Config from an object, nested tables (tests), a file path, or None (file and env)."""
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return from_mapping(config)
    return load(config)


def root_value(config: Config, setting: Setting[Any]) -> Any:
    """Return a root-level value before the tree exists (needed to build it)."""
    raw = config.get((), setting.name)
    return setting.default if raw is None else resolve(setting, raw).value


def create_app(config: Config | Mapping[str, Any] | str | Path | None = None) -> web.Application:
    """Return the root application with every sub-app mounted and configured.

    Raises ConfigError with one message naming the sub-app, table or key and the fix.
    """
    config = as_config(config)
    quiet_bad_request_logs()
    importable(config.base_dir)
    specs = discover(root_value(config, SUBAPPS), config.specs)
    root = web.Application(
        middlewares=[kernel_middleware], client_max_size=root_value(config, CLIENT_MAX_SIZE)
    )
    root[db.BASE_DIR] = config.base_dir
    observe = metrics.setup(root).observe
    hostmetrics.setup(root)

    async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
        # One signal handler, not one per concern: each costs a coroutine per response.
        prepare_headers(request, response)
        observe(request, response)

    root.on_response_prepare.append(on_response_prepare)
    # Start-up order; teardown is the exact reverse: jobs finish their writes before the bus
    # and the database close, and sub-apps (started after these) are torn down before them.
    root.cleanup_ctx.append(db.engine_ctx)
    root.cleanup_ctx.append(migrations.migrate_ctx)  # needs the engine; sub-apps (started later) need the tables
    root.cleanup_ctx.append(bus.bus_ctx)
    jobs.setup(root)
    pages.setup(root)
    mount_all(root, specs, (), config)
    root.cleanup_ctx.append(tree_guard)

    levels = walk(root)
    apply_config(levels, config, KERNEL_SETTINGS)
    root[migrations.HISTORIES] = migrations.histories(levels)
    for level in levels:
        level.app[LEVEL] = level
        level.error_format = level.config()[ERROR_FORMAT]
    tree = Tree(levels=levels)
    root[TREE] = tree
    tree.warnings = introspect.problems(tree)
    for warning in tree.warnings:
        logger.warning("%s", warning)
    production = root_value(config, checks.MODE) == "production"
    templating.setup(root, tree, _template_folders(config, specs), auto_reload=not production)
    return root


def _template_folders(config: Config, specs: list[SubApp]) -> list[Path]:
    """The project's folder first (it overrides any template by path), then each sub-app's, then the kernel's."""
    project = config.base_dir / root_value(config, templating.TEMPLATES_DIR)
    folders = [project] if project.is_dir() else []  # a project need not override anything
    stack = list(specs)
    while stack:
        spec = stack.pop(0)
        folder = template_folder(spec)
        if folder is not None:
            folders.append(folder)
        stack.extend(spec.children)
    folders.append(templating.KERNEL_TEMPLATES)
    return folders


__all__ = ["create_app", "ConfigError", "KERNEL_SETTINGS"]
