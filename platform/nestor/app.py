"""`create_app(config=None)`: the root application factory.

Also usable as `gunicorn 'nestor.app:create_app()' --worker-class aiohttp.GunicornWebWorker`;
`nestor serve --reload` is the development loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Generator, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from . import bus, checks, db, hostmetrics, introspect, jobs, limits, metrics, migrations, pages, proxies, templating
from .config import PAGE_SIZE, Config, ConfigError, Setting, from_mapping, load, positive, resolve
from .auth import ADMIN_TOKEN, API_TOKEN
from .errors import ERROR_FORMAT
from .instance import gunicorn_workers, listening_addresses
from .logs import LOG_FORMAT, quiet_bad_request_logs
from .middleware import BODY_TIMEOUT, guard_expect, kernel_middleware, prepare_headers
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
    proxies.TRUSTED_PROXIES,
    LOG_FORMAT,
    metrics.METRICS_TOKEN,
)


def served_url(app: web.Application) -> URL:
    """Return the URL a client on this machine reaches this process's server at (`http://host:port`).

    The port is the one actually bound, whoever bound it (`nestor serve`, gunicorn, a test
    server), once the server listens; before that, and when this process listens on the
    configured port, the `host` and `port` settings. A wildcard host becomes the loopback one.
    """
    config = config_of(app)
    host, port = config[HOST], config[PORT]
    bound = listening_addresses()
    if bound and (host, port) not in bound and not any(p == port for _, p in bound):
        host, port = bound[0]
    if host in ("", "0.0.0.0", "::"):
        host = "::1" if host == "::" else "127.0.0.1"
    return URL.build(scheme="http", host=host, port=port)


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


class Done:
    """An awaitable already done: what a signal handler with nothing to wait for returns."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


DONE = Done()


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

    production = root_value(config, checks.MODE) == "production"

    def on_response_prepare(request: web.Request, response: web.StreamResponse) -> Awaitable[None]:
        # One signal handler, not one per concern; and a plain function returning an awaitable
        # that is already done (the signal awaits what its handlers return): an async def
        # would cost a coroutine per response for work that never waits.
        prepare_headers(request, response, production)
        observe(request, response)
        return DONE

    root.on_response_prepare.append(on_response_prepare)
    # Start-up order; teardown is the exact reverse: jobs finish their writes before the bus
    # and the database close, and sub-apps (started after these) are torn down before them.
    root.cleanup_ctx.append(db.engine_ctx)
    root.cleanup_ctx.append(migrations.migrate_ctx)  # needs the engine; sub-apps (started later) need the tables
    root.cleanup_ctx.append(bus.bus_ctx)
    root.cleanup_ctx.append(limits.limits_ctx)  # failed token checks, counted through the bus
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
    proxies.setup(root)
    guard_expect(root)  # routes all exist now: aiohttp answers Expect before any middleware
    checks.refuse_weak_secrets(root)
    tree.warnings = introspect.problems(tree)
    for warning in tree.warnings:
        logger.warning("%s", warning)
    templating.setup(root, tree, _template_folders(config, specs), auto_reload=not production)
    _under_gunicorn(root)
    return root


def _under_gunicorn(root: web.Application) -> None:
    """Refuse what `nestor serve --workers N` refuses when gunicorn runs the workers instead."""
    if not os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        return
    from .serve import worker_problems

    workers = gunicorn_workers()
    if workers is None:  # gunicorn, but not how many workers: say what would go wrong
        if root[bus.BUS_URL].startswith("memory://"):
            logger.warning(
                "under gunicorn with bus_url = %r: with more than one worker (-w), bus messages (live "
                "results, chat) reach only the clients of the worker that published them; set "
                "bus_url to a redis:// URL",
                root[bus.BUS_URL],
            )
        return
    errors, warnings = worker_problems(root, workers, where=f"gunicorn -w {workers}")
    for warning in warnings:
        logger.warning("%s", warning)
    if errors:
        raise ConfigError("\n".join(errors))


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
