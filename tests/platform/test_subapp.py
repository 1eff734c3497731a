"""Sub-app mounting: nesting, discovery, refusing bad trees, warnings, factory-mounted children."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from aiohttp import web

from nestor import ConfigError, SubApp
from nestor.introspect import middleware_chain, routes
from nestor.subapp import not_mounted
from nestor.tree import TREE

from ..conftest import MakeApp
from ..fixtures import mount_errors, mount_factory, mount_shadow
from ..fixtures.mount_errors import spec

REPO = Path(__file__).resolve().parents[2]
KERNEL = "nestor.middleware.kernel_middleware"
CLI_ENV = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `nestor` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "nestor.cli", *args],
        cwd=REPO,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_config(tmp_path: Path, subapps: list[str]) -> Path:
    """Write a nestor.toml mounting `subapps` with a private SQLite file; return its path."""
    path = tmp_path / "nestor.toml"
    listed = ", ".join(f'"{s}"' for s in subapps)
    path.write_text(
        f"[nestor]\nsubapps = [{listed}]\n"
        f'database_url = "sqlite+aiosqlite:///{tmp_path / "nestor.sqlite3"}"\n'
    )
    return path


# -- nesting -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/a/", "/a/api/", "/b/"])
async def test_every_level_of_three_level_tree_answers(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get(path) as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    ("path", "seen"), [("/a/", ["a"]), ("/a/api/", ["a", "api"]), ("/b/", [])]
)
async def test_level_middlewares_run_only_under_their_prefix_after_parents(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str, seen: list[str]
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get(path) as resp:
        assert resp.status == 200
        assert (await resp.json())["middlewares"] == seen


def test_kernel_middleware_comes_first_in_every_chain(make_app: MakeApp) -> None:
    tree = make_app()[TREE]
    assert middleware_chain(tree.find("a.api")) == (
        KERNEL,
        "tests.fixtures.tree.record_a",
        "tests.fixtures.tree.record_api",
    )


@pytest.mark.parametrize(
    ("path", "chain"),
    [
        ("/", (KERNEL,)),
        ("/a/", (KERNEL, "tests.fixtures.tree.record_a")),
        ("/a/api/", (KERNEL, "tests.fixtures.tree.record_a", "tests.fixtures.tree.record_api")),
        ("/b/", (KERNEL, "nestor.auth.require_token(api_token)")),
    ],
)
def test_route_record_lists_its_middleware_chain_kernel_first(
    make_app: MakeApp, path: str, chain: tuple[str, ...]
) -> None:
    records = [r for r in routes(make_app()[TREE]) if r.path == path and r.method == "GET"]
    assert [r.middlewares for r in records] == [chain]


# -- discovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("import_path", "url"),
    [("tests.fixtures.mount_x", "/x/"), ("tests.fixtures.mount_x:other", "/other/")],
)
async def test_subapp_is_mounted_from_its_import_path(
    aiohttp_client: AiohttpClient, make_app: MakeApp, import_path: str, url: str
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"subapps": [import_path]}}, specs=[]))
    async with client.get(url) as resp:
        assert resp.status == 200


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Install a distribution whose `nestor.subapps` entry point names mount_x's `plugin` spec."""
    site = tmp_path / "site"
    dist_info = site / "nestor_test_plugin-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: nestor-test-plugin\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[nestor.subapps]\nplugin = tests.fixtures.mount_x:plugin\n"
    )
    monkeypatch.syspath_prepend(str(site))


@pytest.mark.usefixtures("installed_plugin")
async def test_installed_subapp_is_mounted_by_its_entry_point_name(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"subapps": ["plugin"]}}, specs=[]))
    async with client.get("/plugin/") as resp:
        assert resp.status == 200


@pytest.mark.usefixtures("installed_plugin")
async def test_installed_subapp_not_named_in_config_is_not_mounted(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app({"nestor": {}}, specs=[]))
    async with client.get("/plugin/") as resp:
        assert resp.status == 404


@pytest.mark.usefixtures("installed_plugin")
def test_check_lists_installed_subapps_that_are_not_mounted(make_app: MakeApp) -> None:
    assert "plugin" in not_mounted(["polls"])
    assert "plugin" not in not_mounted(["plugin"])
    assert "plugin" not in not_mounted(["tests.fixtures.mount_x:plugin"])


def test_unknown_subapp_name_says_where_it_was_looked_for(make_app: MakeApp) -> None:
    with pytest.raises(ConfigError, match="'nope' is neither an installed sub-app .*polls.* nor a module"):
        make_app({"nestor": {"subapps": ["nope"]}}, specs=[])


def test_removed_entry_points_setting_says_what_replaced_it(make_app: MakeApp) -> None:
    with pytest.raises(ConfigError, match="entry_points.*list the sub-apps to mount by name"):
        make_app({"nestor": {"entry_points": True}}, specs=[])


async def test_prefix_set_in_config_moves_the_subapp(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app({"a": {"prefix": "/moved"}}))
    async with client.get("/moved/api/") as resp:
        assert resp.status == 200
    async with client.get("/a/api/") as resp:
        assert resp.status == 404


# -- refusing bad trees ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("import_path", "expected"),
    [
        (
            "tests.fixtures.mount_import_error",
            r"sub-app 'tests\.fixtures\.mount_import_error' could not be imported: "
            r"ModuleNotFoundError: No module named 'nestor_test_missing_dependency'.*installed",
        ),
        (
            "tests.fixtures.mount_not_there",
            r"sub-app 'tests\.fixtures\.mount_not_there' could not be imported.*\[nestor\] subapps",
        ),
        (
            "tests.fixtures.mount_x:missing",
            r"sub-app 'tests\.fixtures\.mount_x:missing' does not expose a nestor\.SubApp: define",
        ),
    ],
)
def test_subapp_that_cannot_be_imported_stops_startup(
    make_app: MakeApp, import_path: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        make_app({"nestor": {"subapps": [import_path]}}, specs=[])


def test_duplicate_name_stops_startup(make_app: MakeApp) -> None:
    with pytest.raises(ConfigError, match=r"two sub-apps are named 'dup' under \[nestor\].*name="):
        make_app(specs=[spec("dup", "/one"), spec("dup", "/two")])


def test_duplicate_prefix_stops_startup(make_app: MakeApp) -> None:
    with pytest.raises(
        ConfigError,
        match=r"sub-apps 'one' and 'two' both use prefix '/same'.*\[two\] prefix = \"/two\"",
    ):
        make_app(specs=[spec("one", "/same"), spec("two", "/same/")])


def test_duplicate_prefix_from_config_stops_startup(make_app: MakeApp) -> None:
    with pytest.raises(ConfigError, match=r"sub-apps 'a' and 'b' both use prefix '/a'"):
        make_app({"b": {"prefix": "/a"}})


def test_factory_that_raises_stops_startup(make_app: MakeApp) -> None:
    with pytest.raises(
        ConfigError,
        match=r"sub-app 'broken': its factory tests\.fixtures\.mount_errors\.create_broken "
        r"raised KeyError: 'missing_service'",
    ):
        make_app(specs=[spec("broken", factory=mount_errors.create_broken)])


def test_factory_returning_something_else_stops_startup(make_app: MakeApp) -> None:
    with pytest.raises(
        ConfigError,
        match=r"sub-app 'wrong': its factory tests\.fixtures\.mount_errors\.create_dict returned "
        r"dict, not an aiohttp web\.Application",
    ):
        make_app(specs=[spec("wrong", factory=mount_errors.create_dict)])


def test_one_app_returned_for_two_specs_stops_startup(make_app: MakeApp) -> None:
    with pytest.raises(
        ConfigError, match=r"sub-app 'second'.*already mounted.*Return a new web\.Application"
    ):
        make_app(
            specs=[
                spec("first", factory=mount_errors.create_singleton),
                spec("second", factory=mount_errors.create_singleton),
            ]
        )


def test_factory_mounting_one_app_twice_stops_startup(make_app: MakeApp) -> None:
    with pytest.raises(
        ConfigError,
        match=r"the same web\.Application is mounted twice: at '/twice/left' by \[twice\] and at "
        r"'/twice/right' by \[twice\].*Create a new application for each mount",
    ):
        make_app(specs=[spec("twice", factory=mount_errors.create_mounts_one_app_twice)])


@pytest.mark.parametrize("prefix", ["/{org}", "/orgs/{org}/repos"])
def test_prefix_with_variable_stops_startup(make_app: MakeApp, prefix: str) -> None:
    with pytest.raises(
        ConfigError, match=r"sub-app 'v': prefix .* contains a \{variable\}.*Use a fixed prefix"
    ):
        make_app(specs=[spec("v", prefix)])


def test_prefix_with_variable_from_config_stops_startup(make_app: MakeApp) -> None:
    with pytest.raises(ConfigError, match=r"\[a\].*contains a \{variable\}.*Use a fixed prefix"):
        make_app({"a": {"prefix": "/{org}"}})


def test_factory_mounting_at_prefix_with_variable_stops_startup(make_app: MakeApp) -> None:
    with pytest.raises(
        ConfigError,
        match=r"\[v\] mounts a sub-app at '/v/\{org\}', a prefix with a \{variable\}.*Use a fixed prefix",
    ):
        make_app(specs=[spec("v", factory=mount_errors.create_mounts_variable_prefix)])


def test_factory_child_and_declared_child_at_one_prefix_stop_startup(make_app: MakeApp) -> None:
    declared = spec("v1", "/api")
    parent = mount_errors.SubApp(
        name="p", prefix="/p", factory=mount_errors.create_mounts_api, children=[declared]
    )
    with pytest.raises(
        ConfigError,
        match=r"\[p\] mounts two apps at '/p/api' \(\[p\.api\] and \[p\.v1\]\).*another prefix",
    ):
        make_app(specs=[parent])


@pytest.mark.parametrize("prefix", ["v", "v/api", ""])
def test_prefix_not_starting_with_slash_stops_startup(make_app: MakeApp, prefix: str) -> None:
    with pytest.raises(ConfigError, match=r"sub-app 'v': prefix .* must start with '/' \(for example"):
        make_app(specs=[mount_errors.SubApp(name="v", prefix=prefix, factory=mount_errors.create_ok)])


def test_bad_subapp_is_one_message_from_the_cli(tmp_path: Path) -> None:
    result = run_cli("check", "--config", str(write_config(tmp_path, ["tests.fixtures.mount_import_error"])))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "nestor: error: sub-app 'tests.fixtures.mount_import_error' could not be imported: "
        "ModuleNotFoundError: No module named 'nestor_test_missing_dependency'. "
        "Check that the packages it needs are installed."
    ]


# -- warnings ----------------------------------------------------------------------------------

SHADOW_WARNING = (
    "route /s/api/x of [s] shadows the route /s/api/x of [s.api]: requests never reach the "
    "sub-app. Move or rename one of them."
)
COLLISION_WARNING = (
    "route name 'c:api:x' is used by [c] and [c.api]: url() can reverse only one of them. Rename one."
)


@pytest.mark.parametrize(
    ("specs", "warning"),
    [(mount_shadow.shadow_specs, SHADOW_WARNING), (mount_shadow.collision_specs, COLLISION_WARNING)],
)
def test_tree_problem_is_a_startup_warning(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, specs: object, warning: str
) -> None:
    caplog.set_level(logging.WARNING, logger="nestor")
    app = make_app(specs=specs())  # type: ignore[operator]
    assert app[TREE].warnings == [warning]
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("nestor", logging.WARNING, warning)
    ]


async def test_shadowed_child_route_is_never_reached(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=mount_shadow.shadow_specs()))
    async with client.get("/s/api/x") as resp:
        assert resp.status == 200
        assert (await resp.json())["middlewares"] == []  # the parent's handler, not the child's


def test_sample_tree_has_no_warnings(make_app: MakeApp) -> None:
    assert make_app()[TREE].warnings == []


@pytest.mark.parametrize(
    ("import_path", "warning"),
    [
        ("tests.fixtures.mount_shadow:shadow", SHADOW_WARNING),
        ("tests.fixtures.mount_shadow:collision", COLLISION_WARNING),
    ],
)
def test_nestor_check_reports_tree_problem(tmp_path: Path, import_path: str, warning: str) -> None:
    result = run_cli("check", "--config", str(write_config(tmp_path, [import_path])))
    assert result.returncode == 1
    assert f"  - {warning}" in result.stdout.splitlines()


# -- factory-mounted children ------------------------------------------------------------------


def test_factory_mounted_child_is_a_level_named_after_its_prefix(make_app: MakeApp) -> None:
    tree = make_app(specs=[mount_factory.subapp])[TREE]
    assert [(level.label, level.prefix) for level in tree.levels] == [
        ("nestor", ""),
        ("f", "/f"),
        ("f.api", "/f/api"),
    ]


@pytest.mark.parametrize(("path", "size"), [("/f/", 7), ("/f/api/", 3)])
async def test_factory_mounted_child_reads_config_from_its_table(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str, size: int
) -> None:
    app = make_app({"f": {"page_size": 7, "api": {"page_size": 3}}}, specs=[mount_factory.subapp])
    client = await aiohttp_client(app)
    async with client.get(path) as resp:
        assert resp.status == 200
        assert (await resp.json())["page_size"] == size


def test_factory_mounted_child_is_listed_in_routes(make_app: MakeApp) -> None:
    records = routes(make_app(specs=[mount_factory.subapp])[TREE])
    api = [r.as_dict() for r in records if r.path == "/f/api/"]
    assert [(r["method"], r["name"], r["apps"], r["middlewares"]) for r in api] == [
        (
            "GET",
            "f:api:index",
            ["nestor", "f", "f.api"],
            [KERNEL, "tests.fixtures.tree.record_f", "tests.fixtures.tree.record_api"],
        )
    ]


def test_factory_mounted_child_prefix_cannot_be_set_in_config(make_app: MakeApp) -> None:
    with pytest.raises(
        ConfigError, match=r"\[f\.api\] is mounted by its parent's factory.*SubApp\(children="
    ):
        make_app({"f": {"api": {"prefix": "/v2"}}}, specs=[mount_factory.subapp])


@pytest.mark.parametrize("name", ["nestor", "a__b", "Polls", "9lives", "trailing_"])
def test_sub_app_names_that_break_tables_or_env_vars_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="give the sub-app another name|not valid"):
        SubApp(name=name, prefix="/x", factory=web.Application)
