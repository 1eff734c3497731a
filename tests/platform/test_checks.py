"""`nestor check`: the deploy checks, and the mistakes it finds in sub-app code."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import pytest
from aiohttp import web

from nestor import ConfigError, Setting, SubApp, checks, create_app, guards, introspect
from nestor.checks import deploy_problems, is_production
from nestor.config import add_environment, from_mapping, load
from nestor.tree import TREE, Tree

from ..conftest import MakeApp
from ..fixtures import mount_other, mount_sources
from ..fixtures.tree import sample_specs

REPO = Path(__file__).resolve().parents[2]
SAFE_ENV = {
    "NESTOR_SECRET_KEY": "k" * 48,
    "NESTOR_ADMIN_TOKEN": "t" * 32,
    "NESTOR_METRICS_TOKEN": "m" * 32,
    "NESTOR_TRUSTED_PROXIES": "127.0.0.1",
}
DEBUG = Setting("debug", bool, False, help="A sample sub-app's debug switch")
BuildTree = Callable[..., Tree]


def create_debuggable() -> web.Application:
    return web.Application()


@pytest.fixture
def build(tmp_path: Path) -> BuildTree:
    """Return `build(tables=None, environ=SAFE_ENV, specs=None)`: the built tree, production mode."""

    def tree(
        tables: dict[str, Any] | None = None,
        environ: dict[str, str] | None = None,
        specs: list[SubApp] | None = None,
    ) -> Tree:
        tables = {key: dict(value) for key, value in (tables or {}).items()}
        root = tables.setdefault("nestor", {})
        root.setdefault("mode", "production")
        root.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'nestor.sqlite3'}")
        root["subapps"] = sample_specs() if specs is None else specs
        config = from_mapping(tables, origin="nestor.toml", base_dir=tmp_path)
        add_environment(config, SAFE_ENV if environ is None else environ)
        return create_app(config)[TREE]

    return tree


def test_safe_production_settings_give_no_warnings(build: BuildTree) -> None:
    assert deploy_problems(build()) == []


def test_missing_admin_token_is_reported(build: BuildTree) -> None:
    [problem] = deploy_problems(build(environ={**SAFE_ENV, "NESTOR_ADMIN_TOKEN": ""}))
    assert problem.startswith("admin_token is not set")
    assert "NESTOR_ADMIN_TOKEN" in problem


def test_missing_secret_key_is_reported(build: BuildTree) -> None:
    [problem] = deploy_problems(build(environ={**SAFE_ENV, "NESTOR_SECRET_KEY": ""}))
    assert problem.startswith("secret_key is not set")
    assert "NESTOR_SECRET_KEY" in problem


@pytest.mark.parametrize(
    ("variable", "setting"), [("NESTOR_SECRET_KEY", "secret_key"), ("NESTOR_ADMIN_TOKEN", "admin_token")]
)
def test_production_refuses_to_start_with_short_secrets(build: BuildTree, variable: str, setting: str) -> None:
    with pytest.raises(ConfigError) as refused:
        build(environ={**SAFE_ENV, variable: "short-one"})
    message = str(refused.value)
    assert message.startswith(f"production mode: {setting} has 9 characters: use at least 32 random ones")
    assert f"{variable}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')" in message
    assert "short-one" not in message


def test_production_without_trusted_proxies_is_reported(build: BuildTree) -> None:
    [problem] = deploy_problems(build(environ={**SAFE_ENV, "NESTOR_TRUSTED_PROXIES": ""}))
    assert problem.startswith("trusted_proxies is empty: Nestor serves plain http")
    assert "NESTOR_TRUSTED_PROXIES=127.0.0.1" in problem


@pytest.mark.parametrize(("level", "table"), [("nestor", {"nestor": {}}), ("b", {"b": {}})])
def test_secret_written_in_the_config_file_is_reported(build: BuildTree, level: str, table: dict) -> None:
    table[level]["api_token"] = "an-api-token-in-the-file"
    [problem] = deploy_problems(build(table))
    variable = "NESTOR_API_TOKEN" if level == "nestor" else "NESTOR_B__API_TOKEN"
    assert problem.startswith(f"[{level}] api_token is written in nestor.toml [{level}]")
    assert variable in problem
    assert "an-api-token-in-the-file" not in problem


def test_debug_on_is_reported_where_it_is_set(build: BuildTree) -> None:
    spec = SubApp(name="dbg", prefix="/dbg", factory=create_debuggable, settings=[DEBUG])
    [problem] = deploy_problems(build({"dbg": {"debug": True}}, specs=[spec]))
    assert problem == "[dbg] debug is on (nestor.toml [dbg]): turn it off in production."


def test_debug_off_is_not_reported(build: BuildTree) -> None:
    spec = SubApp(name="dbg", prefix="/dbg", factory=create_debuggable, settings=[DEBUG])
    assert deploy_problems(build({"dbg": {"debug": False}}, specs=[spec])) == []


@pytest.mark.parametrize(("workers", "warned"), [(1, False), (2, True), (8, True)])
def test_sqlite_with_several_workers_is_reported(build: BuildTree, workers: int, warned: bool) -> None:
    problems = deploy_problems(build(), workers=workers)
    assert [p for p in problems if p.startswith(f"database_url is SQLite with {workers} workers")] == (
        [problems[0]] if warned else []
    )


def test_postgresql_with_several_workers_is_not_reported(build: BuildTree) -> None:
    # The engine connects at start-up, not when the app is built, so no server is needed here.
    tree = build({"nestor": {"database_url": "postgresql+asyncpg://nestor@127.0.0.1:1/nestor"}})
    assert deploy_problems(tree, workers=4) == []


@pytest.mark.parametrize(("mode", "production"), [("production", True), ("development", False)])
def test_mode_says_whether_the_app_is_in_production(build: BuildTree, mode: str, production: bool) -> None:
    assert is_production(build({"nestor": {"mode": mode}}).root.app) is production


def test_mode_defaults_to_development(tmp_path: Path) -> None:
    tree = create_app(from_mapping({"nestor": {}}, base_dir=tmp_path))[TREE]
    assert is_production(tree.root.app) is False


# -- the command -------------------------------------------------------------------------------


def nestor_check(tmp_path: Path, toml: str, *args: str, command: str = "check", **env: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "nestor.toml"
    config.write_text(toml + f'database_url = "sqlite+aiosqlite:///{tmp_path / "db.sqlite3"}"\n')
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    clean["PYTHONPATH"] = os.pathsep.join([str(REPO / "platform"), str(REPO)])
    return subprocess.run(
        [sys.executable, "-m", "nestor.cli", *command.split(), "--config", str(config), *args],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_command_reports_deploy_problems_in_production(tmp_path: Path) -> None:
    result = nestor_check(tmp_path, '[nestor]\nmode = "production"\nsubapps = []\n')
    assert result.returncode == 1, result.stdout + result.stderr
    assert "admin_token is not set" in result.stdout
    assert "secret_key is not set" in result.stdout


def test_check_command_passes_safe_production_settings(tmp_path: Path) -> None:
    toml = '[nestor]\nmode = "production"\nsubapps = []\n'
    migrated = nestor_check(tmp_path, toml, command="db upgrade", **SAFE_ENV)  # the deploy guide's order
    assert migrated.returncode == 0, migrated.stderr
    result = nestor_check(tmp_path, toml, **SAFE_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems found" in result.stdout


def test_check_command_skips_deploy_checks_in_development(tmp_path: Path) -> None:
    result = nestor_check(tmp_path, "[nestor]\nsubapps = []\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "admin_token" not in result.stdout


def test_check_deploy_runs_the_deploy_checks_in_development(tmp_path: Path) -> None:
    result = nestor_check(tmp_path, "[nestor]\nsubapps = []\n", "--deploy")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "admin_token is not set" in result.stdout


# -- mistakes in sub-app code --------------------------------------------------------------------


def source_problems_of(make_app: MakeApp, specs: list[SubApp]) -> list[str]:
    app = make_app(specs=specs)
    return checks.source_problems(app[TREE], app[aiohttp_jinja2.APP_KEY])


def test_check_finds_a_template_no_folder_has(make_app: MakeApp) -> None:
    problems = source_problems_of(make_app, [mount_sources.spec, mount_other.spec])
    [missing] = [p for p in problems if "sources/missing.html" in p]
    assert missing.startswith("sub-app 'sources' renders template 'sources/missing.html' (tests.fixtures.mount_sources:")
    assert "which no template folder has (searched, in order:" in missing
    assert str(mount_sources.FOLDER) in missing


def test_check_finds_a_missing_template_a_template_includes(make_app: MakeApp) -> None:
    problems = source_problems_of(make_app, [mount_sources.spec, mount_other.spec])
    assert any(p.startswith("template 'sources/page.html' uses 'sources/part.html', which no template folder") for p in problems)


def test_check_finds_a_setting_the_subapp_never_declared(make_app: MakeApp) -> None:
    problems = source_problems_of(make_app, [mount_sources.spec, mount_other.spec])
    [undeclared] = [p for p in problems if "'undeclared'" in p]
    assert "sub-app 'sources' reads setting 'undeclared' (tests.fixtures.mount_sources:" in undeclared
    assert undeclared.endswith("add it to its SubApp(settings=[...]), or requests that read it fail.")


def test_check_finds_a_setting_of_another_subapp(make_app: MakeApp) -> None:
    problems = source_problems_of(make_app, [mount_sources.spec, mount_other.spec])
    [foreign] = [p for p in problems if "'others'" in p]
    assert "it belongs to sub-app 'other'" in foreign


def test_declared_and_kernel_settings_and_found_templates_pass(make_app: MakeApp) -> None:
    problems = source_problems_of(make_app, [mount_sources.spec, mount_other.spec])
    assert not [p for p in problems if "'declared'" in p or "page_size" in p or "base.html" in p]


def test_the_default_configuration_has_no_code_problems() -> None:
    app = create_app(load(REPO / "nestor.toml"))
    assert checks.source_problems(app[TREE], app[aiohttp_jinja2.APP_KEY]) == []


def test_check_command_fails_on_a_missing_template(tmp_path: Path) -> None:
    result = nestor_check(tmp_path, '[nestor]\nsubapps = ["tests.fixtures.mount_sources:spec"]\n')
    assert result.returncode == 1, result.stdout + result.stderr
    assert "renders template 'sources/missing.html'" in result.stdout


# -- deploy checks that check ---------------------------------------------------------------------


def test_development_mode_fails_the_deploy_checks(build: BuildTree) -> None:
    [problem] = deploy_problems(build({"nestor": {"mode": "development"}}))
    assert problem.startswith("mode is development: /routes, /routes.json and /routes/explain show every handler")


def test_open_write_apis_are_reported_where_the_token_is_missing(build: BuildTree) -> None:
    import nestor_subapps.chat

    problems = deploy_problems(build(specs=[nestor_subapps.chat.subapp]))
    [problem] = [p for p in problems if p.startswith("api_token")]
    assert problem.startswith("api_token is empty at [chat.api]: anyone may call POST /chat/api/rooms/{room}/messages.")
    assert deploy_problems(build(specs=[nestor_subapps.chat.subapp], environ={**SAFE_ENV, "NESTOR_API_TOKEN": "a" * 32})) == []


def test_a_write_guarded_by_any_of_two_tokens_is_open_only_while_both_are_empty(build: BuildTree) -> None:
    # The monitor's check trigger (its own middleware, declared with nestor.guards) takes the admin
    # token or the api token: with the admin token alone it is not open.
    import nestor_subapps.monitor

    specs = [nestor_subapps.monitor.subapp]
    assert [p for p in deploy_problems(build(specs=specs)) if "anyone may call" in p] == []
    both_empty = deploy_problems(build(specs=specs, environ={**SAFE_ENV, "NESTOR_ADMIN_TOKEN": ""}))
    [problem] = [p for p in both_empty if "anyone may call" in p]
    assert problem.startswith(
        "admin_token and api_token are empty at [monitor.api]: anyone may call POST /monitor/api/targets/{target}/check."
    )
    assert "Set NESTOR_ADMIN_TOKEN or NESTOR_API_TOKEN (or the level's own, NESTOR_MONITOR__API__API_TOKEN)" in problem


def create_guarded() -> web.Application:
    app = web.Application(middlewares=[_only_posts_guarded])
    app.add_routes([web.post("/open", _ok), web.post("/guarded", _guarded)])
    return app


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _guarded(request: web.Request) -> web.Response:
    return web.Response(text="guarded")


SHARED = Setting("shared_token", str, "", secret=True, help="A sample sub-app's token")


@guards(SHARED, handlers=[_guarded])
@web.middleware
async def _only_posts_guarded(request: web.Request, handler: Any) -> web.StreamResponse:
    return await handler(request)


def test_a_declared_guard_covers_only_its_handlers(build: BuildTree) -> None:
    spec = SubApp(name="guarded", prefix="/guarded", factory=create_guarded, settings=[SHARED])
    open_tree = build(specs=[spec])
    [problem] = [p for p in deploy_problems(open_tree) if "anyone may call" in p]
    [note] = introspect.explain(open_tree, "POST", "/guarded/guarded").notes
    assert note == "demands a bearer token: shared_token; none is set, so it is open to anyone"
    assert problem.startswith("shared_token is empty at [guarded]: anyone may call POST /guarded/guarded. Set")
    tree = build(specs=[spec], tables={"guarded": {"shared_token": "s" * 32}})
    assert [p for p in deploy_problems(tree) if "anyone may call" in p] == []
    [note] = introspect.explain(tree, "POST", "/guarded/guarded").notes
    assert note == "demands a bearer token: shared_token"
    assert introspect.explain(tree, "POST", "/guarded/open").notes == []


def test_public_metrics_are_reported(build: BuildTree) -> None:
    [problem] = deploy_problems(build(environ={**SAFE_ENV, "NESTOR_METRICS_TOKEN": ""}))
    assert problem.startswith("metrics_token is empty: anyone may read /metrics")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('database_url = "postgresql+asyncpg://u:pw@127.0.0.1:1/x"\n', "database_url postgresql+asyncpg://u:***@127.0.0.1:1/x does not answer within 3 s"),
        ('bus_url = "redis://127.0.0.1:1/0"\n', "bus_url redis://127.0.0.1:1/0 does not answer: is Redis running there?"),
    ],
)
def test_check_deploy_connects_to_the_database_and_the_bus(tmp_path: Path, toml: str, expected: str) -> None:
    config = tmp_path / "nestor.toml"
    config.write_text('[nestor]\nmode = "production"\nsubapps = []\n' + toml)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    clean["PYTHONPATH"] = os.pathsep.join([str(REPO / "platform"), str(REPO)])
    result = subprocess.run(
        [sys.executable, "-m", "nestor.cli", "check", "--config", str(config)],
        cwd=tmp_path, env={**clean, **SAFE_ENV}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert [line for line in result.stdout.splitlines() if expected in line], result.stdout
    assert "pw" not in result.stdout  # the password is never printed


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://u:pw@h/db", "postgres:// is not an async driver Nestor runs on: use postgresql+asyncpg://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql:// is not an async driver Nestor runs on: use postgresql+asyncpg://u@h/db"),
        ("sqlite:///x.db", "sqlite:// is not an async driver Nestor runs on: use sqlite+aiosqlite:///x.db"),
        ("mysql+aiomysql://h/db", "'mysql' databases are not supported: use SQLite or PostgreSQL"),
    ],
)
def test_a_database_url_nestor_cannot_use_is_one_line_at_start(tmp_path: Path, url: str, message: str) -> None:
    result = nestor_check(tmp_path, "[nestor]\nsubapps = []\n", **{**SAFE_ENV, "NESTOR_DATABASE_URL": url})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"nestor: error: env NESTOR_DATABASE_URL: database_url: {message}"]


def test_several_workers_on_sqlite_or_the_memory_bus_are_errors_in_production(tmp_path: Path) -> None:
    toml = '[nestor]\nmode = "production"\nsubapps = []\n'
    result = nestor_check(tmp_path, toml, "--workers", "2", "--allow-memory-bus", **SAFE_ENV)
    assert result.returncode == 1
    assert "--workers 2: bus_url is 'memory://', which is private to each process" in result.stdout
    assert "--workers 2: database_url is SQLite, which lets one writer in at a time" in result.stdout
    assert "warning:" not in result.stdout
