"""Configuration levels: parent fallback, the environment scheme, precedence, prefixes from config."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from nestor import ConfigError, Setting, SubApp, create_app
from nestor.config import load

from ..conftest import MakeApp
from ..fixtures.cli_run import nestor, write_config

LoadApp = Callable[..., web.Application]


@pytest.fixture
def load_app(tmp_path: Path) -> LoadApp:
    """Return `load_app(body, environ, subapps=...)`: write nestor.toml, load it with `environ`, build the app."""

    def build(body: str = "", environ: dict[str, str] | None = None, **kwargs: Any) -> web.Application:
        path = write_config(tmp_path, body, **kwargs)
        return create_app(load(path, environ=environ or {}))

    return build


async def page_size(client: Any, path: str) -> int:
    async with client.get(path) as resp:
        assert resp.status == 200
        return (await resp.json())["page_size"]


# -- levels with parent fallback --------------------------------------------------------------

THREE_LEVELS = {"nestor": {"page_size": 20}, "a": {"page_size": 10, "api": {"page_size": 50}}}


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/a/", 10), ("/a/api/", 50), ("/b/", 20)],
    ids=["a-own-value", "a.api-own-value", "b-inherits-root"],
)
async def test_each_level_sees_its_nearest_page_size(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str, expected: int
) -> None:
    client = await aiohttp_client(make_app(THREE_LEVELS))
    assert await page_size(client, path) == expected


async def test_child_without_value_inherits_from_its_parent_not_the_root(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"page_size": 20}, "a": {"page_size": 10}}))
    assert await page_size(client, "/a/api/") == 10


async def test_level_without_any_value_sees_the_declared_default(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    assert await page_size(client, "/b/") == 20  # PAGE_SIZE's declared default


# -- a prefix from config ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [("/p/", 200), ("/p/api/", 200), ("/p/items/3", 200), ("/a/", 404), ("/a/api/", 404)],
)
async def test_prefix_in_config_moves_the_subapp_and_its_children(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str, status: int
) -> None:
    client = await aiohttp_client(make_app({"a": {"prefix": "/p"}}))
    async with client.get(path) as resp:
        assert resp.status == status


# -- the environment scheme -------------------------------------------------------------------


async def test_env_root_variable_sets_the_root_level(
    aiohttp_client: AiohttpClient, load_app: LoadApp
) -> None:
    client = await aiohttp_client(load_app(environ={"NESTOR_PAGE_SIZE": "5"}))
    assert await page_size(client, "/b/") == 5


@pytest.mark.parametrize(
    ("path", "expected"), [("/a/", 7), ("/a/api/", 9), ("/b/", 20)], ids=["a", "a.api", "b"]
)
async def test_env_double_underscore_sets_nested_levels(
    aiohttp_client: AiohttpClient, load_app: LoadApp, path: str, expected: int
) -> None:
    environ = {"NESTOR_A__PAGE_SIZE": "7", "NESTOR_A__API__PAGE_SIZE": "9"}
    client = await aiohttp_client(load_app(environ=environ))
    assert await page_size(client, path) == expected


@pytest.mark.parametrize(
    ("body", "environ", "expected"),
    [
        ("", {}, 20),
        ("[a]\npage_size = 10", {}, 10),
        ("[a]\npage_size = 10", {"NESTOR_A__PAGE_SIZE": "3"}, 3),
    ],
    ids=["default", "file-over-default", "env-over-file"],
)
async def test_env_wins_over_file_and_file_over_default(
    aiohttp_client: AiohttpClient, load_app: LoadApp, body: str, environ: dict[str, str], expected: int
) -> None:
    client = await aiohttp_client(load_app(body, environ))
    assert await page_size(client, "/a/") == expected


async def test_nestor_config_variable_names_the_file(
    aiohttp_client: AiohttpClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "[a]\npage_size = 12")
    monkeypatch.chdir(tmp_path.parent)  # no ./nestor.toml to fall back on
    client = await aiohttp_client(create_app(load(environ={"NESTOR_CONFIG": str(path)})))
    assert await page_size(client, "/a/") == 12


@pytest.mark.parametrize(
    "subapps",
    ['["tests.fixtures.cli_tree:b"]', "tests.fixtures.cli_tree:b", " tests.fixtures.cli_tree:b , "],
    ids=["toml-list", "one-name", "comma-separated"],
)
async def test_env_list_replaces_the_subapps_of_the_file(
    aiohttp_client: AiohttpClient, load_app: LoadApp, subapps: str
) -> None:
    client = await aiohttp_client(load_app(environ={"NESTOR_SUBAPPS": subapps}))
    async with client.get("/b/") as resp:
        assert resp.status == 200
    async with client.get("/a/") as resp:
        assert resp.status == 404


async def test_env_comma_separated_list_mounts_every_subapp(
    aiohttp_client: AiohttpClient, load_app: LoadApp
) -> None:
    environ = {"NESTOR_SUBAPPS": "tests.fixtures.cli_tree:a,tests.fixtures.cli_tree:b"}
    client = await aiohttp_client(load_app(environ=environ, subapps="[]"))
    for path in ("/a/", "/a/api/", "/b/"):
        async with client.get(path) as resp:
            assert resp.status == 200


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"NESTOR_PAGE_SIZE": "ten"}, ["NESTOR_PAGE_SIZE", "page_size", "expected int"]),
        ({"NESTOR_A__PAGE_SIZE": "0"}, ["NESTOR_A__PAGE_SIZE", "at least 1"]),
        ({"NESTOR_AA__PAGE_SIZE": "3"}, ["NESTOR_AA__PAGE_SIZE", "[aa]", "Did you mean 'a'?"]),
        ({"NESTOR_A__PAGE_SISE": "3"}, ["NESTOR_A__PAGE_SISE", "'page_sise'", "Did you mean 'page_size'?"]),
        ({"NESTOR_A____PAGE_SIZE": "3"}, ["NESTOR_A____PAGE_SIZE", "NESTOR_<LEVEL>__<KEY>"]),
    ],
    ids=["wrong-type", "invalid-value", "unknown-level", "unknown-key", "empty-level"],
)
def test_bad_env_variable_is_refused_naming_it(
    load_app: LoadApp, environ: dict[str, str], names: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_app(environ=environ)
    for name in names:
        assert name in str(caught.value)


def test_root_table_cannot_nest_a_subapp_table(tmp_path: Path) -> None:
    path = tmp_path / "nestor.toml"
    path.write_text("[nestor.a]\npage_size = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[nestor\.a\].*write \[a\] instead"):
        load(path, environ={})


def test_env_end_to_end_reaches_the_nested_level(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[a.api]\npage_size = 50")
    result = nestor("config", "a.api", "--json", cwd=tmp_path, env={
        "NESTOR_CONFIG": str(config), "NESTOR_A__API__PAGE_SIZE": "9",
    })
    assert result.returncode == 0, result.stderr
    [level] = json.loads(result.stdout)
    values = {v["name"]: v for v in level["values"]}
    assert (values["page_size"]["value"], values["page_size"]["source"]) == (
        9,
        "env NESTOR_A__API__PAGE_SIZE",
    )


# -- settings are scoped to the sub-apps that declare them ------------------------------------

LIMIT_A = Setting("max_body", int, 100, help="a's own limit")
LIMIT_B = Setting("max_body", int, 200, help="b's own limit")


async def show_limit(request: web.Request) -> web.Response:
    key = LIMIT_A if request.match_info.route.name == "a_limit" else LIMIT_B
    return web.json_response({"max_body": request.config_dict[key]})


def limit_app(name: str) -> web.Application:
    app = web.Application()
    app.router.add_get("/limit", show_limit, name=f"{name}_limit")
    return app


def limit_specs(b_settings: list[Setting[int]] | None = None) -> list[SubApp]:
    return [
        SubApp(name="la", prefix="/la", factory=lambda: limit_app("a"), settings=[LIMIT_A]),
        SubApp(name="lb", prefix="/lb", factory=lambda: limit_app("b"),
               settings=[LIMIT_B] if b_settings is None else b_settings),
    ]


async def test_two_sub_apps_may_declare_settings_of_the_same_name(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app({"la": {"max_body": 5}}, specs=limit_specs()))
    for path, expected in [("/la/limit", 5), ("/lb/limit", 200)]:
        async with client.get(path) as resp:
            assert resp.status == 200
            assert (await resp.json()) == {"max_body": expected}


def test_an_ambiguous_sub_app_setting_at_the_root_names_the_tables_to_use(make_app: MakeApp) -> None:
    with pytest.raises(ConfigError, match=r"Sub-apps la, lb each declare their own 'max_body'"):
        make_app({"nestor": {"max_body": 5}}, specs=limit_specs())


async def test_a_sub_app_setting_set_at_the_root_reaches_the_sub_app(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"max_body": 7}}, specs=limit_specs(b_settings=[])))
    async with client.get("/la/limit") as resp:
        assert resp.status == 200
        assert (await resp.json()) == {"max_body": 7}


def test_a_child_redeclaring_its_parents_setting_name_is_refused(make_app: MakeApp) -> None:
    child = SubApp(name="api", prefix="/api", factory=web.Application, settings=[LIMIT_B])
    parent = SubApp(name="la", prefix="/la", factory=web.Application, settings=[LIMIT_A], children=[child])
    with pytest.raises(ConfigError, match="'la.api' declares a setting 'max_body'.*rename it"):
        make_app(specs=[parent])


def test_a_sub_app_redeclaring_a_kernel_setting_is_refused(make_app: MakeApp) -> None:
    own = Setting("page_size", int, 3)
    with pytest.raises(ConfigError, match="'la' declares a setting 'page_size'"):
        make_app(specs=[SubApp(name="la", prefix="/la", factory=web.Application, settings=[own])])


def test_config_output_hides_a_database_password(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    result = nestor(
        "config", "nestor", "--config", str(config),
        env={"NESTOR_DATABASE_URL": "postgresql+asyncpg://nestor:hunter2@127.0.0.1:5432/nestor"},
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert "postgresql+asyncpg://nestor:***@127.0.0.1:5432/nestor" in result.stdout
