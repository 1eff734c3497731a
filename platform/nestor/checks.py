"""Production mode and deploy checks: what `nestor check` warns about before going live.

`[nestor] mode = "production"` hides the internals of `/routes` from anyone without the
admin token. `deploy_problems(tree, workers)` lists unsafe settings, in the spirit of
Django's `check --deploy`: no admin token, a missing or short secret key, a sub-app's
`debug` setting on, secrets written in a config file, SQLite shared by several workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .config import ENV_PREFIX, Setting, Value, one_of
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
MIN_SECRET_LENGTH = 32
MIN_TOKEN_LENGTH = 24


def is_production(config: Mapping[Any, Any]) -> bool:
    """True when `mode` is production in this view of the config (`request.config_dict`)."""
    return config.get(MODE, MODE.default) == "production"


def deploy_problems(tree: Tree, workers: int = 1) -> list[str]:
    """Return warnings about settings that are unsafe in production, each naming the fix."""
    root = {setting.name: value for setting, value in tree.root.effective()}
    found = [*_admin_token(root.get("admin_token")), *_secret_key(root.get("secret_key"))]
    for level in tree.levels:
        for setting, value in level.effective():
            if value.source.level == level.path:  # inherited values are reported where they were set
                found += _debug(level, setting, value) + _secret_in_file(level, setting, value)
    found += _sqlite_workers(root.get("database_url"), workers)
    return found


def _admin_token(entry: Value | None) -> list[str]:
    if entry is None or not entry.value:
        return [
            "admin_token is not set: /admin is disabled and nobody can see the details of /routes. "
            "Set NESTOR_ADMIN_TOKEN to a long random value (python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')."
        ]
    if len(entry.value) < MIN_TOKEN_LENGTH:
        return [
            f"admin_token has {len(entry.value)} characters: use at least {MIN_TOKEN_LENGTH} "
            "random ones (python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        ]
    return []


def _secret_key(entry: Value | None) -> list[str]:
    if entry is None or not entry.value:
        return [
            "secret_key is not set: each worker signs sessions with its own random key, so logins "
            "and form tokens break between workers and end at every restart. Set NESTOR_SECRET_KEY "
            "to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(48))')."
        ]
    if len(entry.value) < MIN_SECRET_LENGTH:
        return [
            f"secret_key has {len(entry.value)} characters: use at least {MIN_SECRET_LENGTH} "
            "random ones (python -c 'import secrets; print(secrets.token_urlsafe(48))')."
        ]
    return []


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
