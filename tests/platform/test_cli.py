"""The `nestor` command run as a real process: config provenance, bad config, routes, check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..fixtures.cli_run import nestor, write_config

SECRET = "tok-s3cret-91d4"  # must never appear in any output


@pytest.fixture(scope="module")
def tree_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nestor.toml for the sample tree with page_size at [nestor] and [a.api], none at [a] or [b]."""
    folder = tmp_path_factory.mktemp("cli")
    return write_config(folder, "page_size = 20\n[a.api]\npage_size = 50")


# -- nestor config: every value and where it came from ---------------------------------------


@pytest.fixture(scope="module")
def provenance(tree_config: Path) -> dict[tuple[str, str], dict[str, object]]:
    """`nestor config --json` with one env override, as {(level, setting): record}."""
    result = nestor("config", "--json", "--config", str(tree_config), env={"NESTOR_A__PAGE_SIZE": "10"})
    assert result.returncode == 0, result.stderr
    return {(lvl["level"], v["name"]): v for lvl in json.loads(result.stdout) for v in lvl["values"]}


@pytest.mark.parametrize(
    ("level", "setting", "value", "source"),
    [
        ("nestor", "page_size", 20, "{file} [nestor]"),
        ("a", "page_size", 10, "env NESTOR_A__PAGE_SIZE"),
        ("a.api", "page_size", 50, "{file} [a.api]"),
        ("b", "page_size", 20, "inherited from [nestor] ({file} [nestor])"),
        ("nestor", "client_max_size", 1024**2, "default"),
        ("a.api", "error_format", "json", "default of sub-app a.api"),
        ("a", "error_format", "html", "default"),
    ],
    ids=["file-root", "env", "file-nested", "inherited", "default", "subapp-default", "default-below-root"],
)
def test_config_json_shows_each_value_and_its_source(
    provenance: dict[tuple[str, str], dict[str, object]],
    tree_config: Path,
    level: str,
    setting: str,
    value: object,
    source: str,
) -> None:
    record = provenance[(level, setting)]
    assert (record["value"], record["source"]) == (value, source.format(file=tree_config))


def test_config_lists_every_level_of_the_tree(
    provenance: dict[tuple[str, str], dict[str, object]],
) -> None:
    assert sorted({level for level, _ in provenance}) == ["a", "a.api", "b", "nestor"]


def test_config_shows_server_wide_settings_only_at_the_root(
    provenance: dict[tuple[str, str], dict[str, object]],
) -> None:
    assert ("nestor", "database_url") in provenance
    assert ("a", "database_url") not in provenance


def test_config_level_prints_only_that_level_as_a_table(tree_config: Path) -> None:
    result = nestor("config", "a.api", "--config", str(tree_config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["[a.api]", "/a/api"]
    assert lines[1].split() == ["SETTING", "VALUE", "SOURCE"]
    assert ["page_size", "50", str(tree_config), "[a.api]"] in [line.split() for line in lines]
    assert "[b]" not in result.stdout


def test_config_unknown_level_suggests_the_closest(tree_config: Path) -> None:
    result = nestor("config", "a.apii", "--config", str(tree_config))
    assert result.returncode == 1
    assert result.stderr.strip() == "nestor: error: no app level 'a.apii'. Did you mean 'a.api'?"


@pytest.mark.parametrize(
    "args",
    [["config"], ["config", "--json"], ["config", "b"], ["routes", "--explain", "GET /b/"]],
    ids=["table", "json", "level", "explain"],
)
def test_secret_is_shown_as_stars_never_in_clear(tree_config: Path, args: list[str]) -> None:
    result = nestor(*args, "--config", str(tree_config), env={"NESTOR_B__API_TOKEN": SECRET})
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "***" in result.stdout


# -- bad config: one clear message, no traceback ----------------------------------------------


def assert_one_message(result_stderr: str, *fragments: str) -> None:
    lines = result_stderr.strip().splitlines()
    assert len(lines) == 1, result_stderr
    assert lines[0].startswith("nestor: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ("[a.apii]\npage_size = 3", ["[a.apii]", "unknown table", "Did you mean 'a.api'?"]),
        ("[a]\npage_sise = 3", ["[a]", "'page_sise'", "Did you mean 'page_size'?"]),
        ('[a]\npage_size = "ten"', ["[a]", "page_size", "expected int", "'ten'"]),
        ("[a]\npage_size = 0", ["[a]", "page_size", "at least 1"]),
        ("[a\npage_size = 3", ["invalid TOML", "line 4"]),
        ('[a]\ndatabase_url = "sqlite+aiosqlite:///x"', ["[a]", "'database_url'", "set it under [nestor]"]),
        ('[a]\nerror_format = "xml"', ["[a]", "error_format", "'html', 'json'"]),
        ("[a]\nprefix = \"/a/{x}\"", ["[a]", "prefix", "{variable}"]),
        ('[a]\nprefix = "p"', ["[a]", "prefix", "must start with '/'"]),
    ],
    ids=[
        "unknown-table",
        "unknown-key",
        "wrong-type",
        "invalid-value",
        "invalid-toml",
        "root-only-key",
        "not-a-choice",
        "prefix-variable",
        "prefix-relative",
    ],
)
def test_bad_config_exits_1_with_one_message_naming_file_table_and_key(
    tmp_path: Path, body: str, fragments: list[str]
) -> None:
    config = write_config(tmp_path, body)
    result = nestor("check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert_one_message(result.stderr, str(config), *fragments)
    assert result.stdout == ""


def test_prefix_of_a_level_mounted_by_a_factory_is_refused(tmp_path: Path) -> None:
    body = '[manual.inner]\nprefix = "/x"'
    config = write_config(tmp_path, body, subapps='["tests.fixtures.cli_tree:manual"]')
    result = nestor("check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert_one_message(result.stderr, str(config), "[manual.inner]", "prefix", "SubApp(children=...)")


def test_wrong_type_of_a_secret_does_not_echo_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[b]\napi_token = 73195846")
    result = nestor("check", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert_one_message(result.stderr, str(config), "[b]", "api_token", "secret")
    assert "73195846" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "named_by"),
    [(["--config", "missing.toml"], {}, "--config"), ([], {"NESTOR_CONFIG": "missing.toml"}, "NESTOR_CONFIG")],
    ids=["--config", "NESTOR_CONFIG"],
)
def test_missing_config_file_exits_1_naming_it(
    tmp_path: Path, args: list[str], env: dict[str, str], named_by: str
) -> None:
    result = nestor("check", *args, cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert_one_message(result.stderr, str(tmp_path / "missing.toml"), "does not exist", named_by)


# -- nestor routes --------------------------------------------------------------------------


def routes_json(config: Path, *extra: str) -> list[dict[str, object]]:
    result = nestor("routes", "--json", "--config", str(config), *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_routes_table_has_a_row_per_route_with_namespaced_names(tree_config: Path) -> None:
    result = nestor("routes", "--config", str(tree_config))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["METHOD", "PATH", "NAME", "HANDLER", "SOURCE"]
    assert ["GET", "/a/api/items/{item_id}", "a:api:item", "tests.fixtures.tree.item"] in [r[:4] for r in rows]
    assert ["POST", "/a/form", "a:form", "tests.fixtures.tree.form"] in [r[:4] for r in rows]


def test_routes_does_not_start_the_server(tree_config: Path) -> None:
    result = nestor("routes", "--config", str(tree_config))
    assert result.returncode == 0, result.stderr
    # Start-up would have created the SQLite file (the database engine's cleanup context).
    assert not (tree_config.parent / "nestor.sqlite3").exists()


def test_routes_json_is_identical_across_runs(tree_config: Path) -> None:
    first = nestor("routes", "--json", "--config", str(tree_config))
    second = nestor("routes", "--json", "--config", str(tree_config))
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout


def test_routes_json_is_sorted_by_path_then_method(tree_config: Path) -> None:
    records = routes_json(tree_config, "--all")
    paths = [r["path"] for r in records]
    assert paths == sorted(paths)
    assert [r["method"] for r in records if r["path"] == "/a/"] == ["GET", "HEAD"]


def test_routes_json_has_no_memory_addresses(tmp_path: Path) -> None:
    # Bound methods, partials and class-based views all repr() with an 0x... address.
    config = write_config(tmp_path, "", subapps='["tests.fixtures.cli_tree:odd"]')
    result = nestor("routes", "--json", "--all", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "/odd/partial" in result.stdout
    assert "0x" not in result.stdout


def test_routes_folds_head_into_get_unless_all(tree_config: Path) -> None:
    assert "HEAD" not in {r["method"] for r in routes_json(tree_config)}


def test_routes_all_adds_a_head_row_for_every_get(tree_config: Path) -> None:
    records = routes_json(tree_config, "--all")
    gets = {r["path"] for r in records if r["method"] == "GET"}
    heads = {r["path"] for r in records if r["method"] == "HEAD"}
    assert heads == gets


def test_routes_fields_keeps_only_those_fields_in_that_order(tree_config: Path) -> None:
    records = routes_json(tree_config, "--fields", "path,method,name")
    assert {"path": "/a/items/{item_id}", "method": "GET", "name": "a:item"} in records
    assert {tuple(r) for r in records} == {("path", "method", "name")}


def test_routes_unknown_field_lists_the_known_ones(tree_config: Path) -> None:
    result = nestor("routes", "--fields", "method,verb", "--config", str(tree_config))
    assert result.returncode == 1
    assert_one_message(result.stderr, "verb", "choose from method,path,name,handler")


def test_routes_explain_prints_chain_handler_middlewares_and_config(tree_config: Path) -> None:
    result = nestor("routes", "--explain", "GET /a/items/3", "--config", str(tree_config))
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[0] == "GET /a/items/3: matched"
    assert "route:       GET /a/items/{item_id}  (a:item)" in lines
    assert "parameters:  item_id=3" in lines
    assert "apps:        [nestor] > [a]" in lines
    assert "middlewares: nestor.middleware.kernel_middleware > tests.fixtures.tree.record_a" in lines
    assert f"page_size = 20  (inherited from [nestor] ({tree_config} [nestor]))" in lines
    handler = next(line for line in lines if line.startswith("handler:"))
    assert handler.split()[1] == "tests.fixtures.tree.item"


@pytest.mark.parametrize(
    ("request_line", "outcome"),
    [("GET /a/nothing", "404 Not Found"), ("POST /a/", "405 Method Not Allowed")],
    ids=["unmatched", "wrong-method"],
)
def test_routes_explain_exits_1_when_nothing_serves_the_request(
    tree_config: Path, request_line: str, outcome: str
) -> None:
    result = nestor("routes", "--explain", request_line, "--config", str(tree_config))
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == f"{request_line}: {outcome}"


# -- nestor check ---------------------------------------------------------------------------


def test_check_prints_the_mounted_tree_and_no_problems(tree_config: Path) -> None:
    result = nestor("check", "--config", str(tree_config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[nestor] /",
        "  [a] /a",
        "    [a.api] /a/api",
        "  [b] /b",
        "",
        "installed but not mounted (add to [nestor] subapps to mount): admin, chat, hello, monitor, polls",
        "",
        "no problems found",
    ]


def test_check_passes_on_the_repository_default_config() -> None:
    result = nestor("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "no problems found"


def test_check_reports_a_parent_route_shadowing_its_child(tmp_path: Path) -> None:
    config = write_config(tmp_path, "", subapps='["tests.fixtures.mount_shadow:shadow"]')
    result = nestor("check", "--config", str(config))
    assert result.returncode == 1
    assert "1 problem(s):" in result.stdout
    [problem] = [line for line in result.stdout.splitlines() if line.startswith("  - ")]
    assert "of [s] shadows" in problem
    assert "of [s.api]" in problem


def test_check_reflects_a_prefix_changed_in_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[a]\nprefix = "/p"')
    result = nestor("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert ["  [a] /p", "    [a.api] /p/api"] == result.stdout.splitlines()[1:3]


def test_routes_explain_notes_a_parent_route_shadowing_the_child(tmp_path: Path) -> None:
    config = write_config(tmp_path, "", subapps='["tests.fixtures.mount_shadow:shadow"]')
    result = nestor("routes", "--explain", "GET /s/api/x", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "apps:        [nestor] > [s]" in result.stdout
    assert "note:        this [s] route shadows [s.api]'s route for /s/api/x" in result.stdout


# -- commands the sub-apps add -------------------------------------------------------------------

COMMANDS = '["tests.fixtures.mount_commands:spec", "tests.fixtures.mount_commands:nested"]'


def test_help_lists_the_commands_of_the_mounted_subapps(tmp_path: Path) -> None:
    config = write_config(tmp_path, "", subapps=COMMANDS)
    result = nestor("--config", str(config), "--help")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines() if "say hello" in line or "wave" in line] == [
        "greet",
        "wave",  # a nested sub-app's too
    ]


def test_a_subapp_command_gets_its_arguments_and_gives_its_exit_status(tmp_path: Path) -> None:
    write_config(tmp_path, "", subapps=COMMANDS)
    result = nestor("greet", "ada", "--loudly", cwd=tmp_path)  # ./nestor.toml
    assert (result.returncode, result.stdout) == (3, "hello ada --loudly\n")


def test_a_command_of_an_unmounted_subapp_is_unknown(tmp_path: Path) -> None:
    result = nestor("--config", str(write_config(tmp_path, "")), "greet")
    assert result.returncode == 2
    assert result.stderr == "nestor: error: unknown command 'greet'; the commands here are: serve, routes, config, check, openapi, db, new-subapp, new-project\n"


def test_check_refuses_a_subapp_command_named_like_a_built_in_one(tmp_path: Path) -> None:
    config = write_config(tmp_path, "", subapps='["tests.fixtures.mount_commands:clashing"]')
    result = nestor("check", "--config", str(config))
    assert result.returncode == 1
    assert "sub-app 'clash' adds the command 'serve', which nestor already has: rename it" in result.stdout


def test_nestor_chat_is_the_chat_subapps_command(tmp_path: Path) -> None:
    config = write_config(tmp_path, "", subapps='["chat"]')
    result = nestor("--config", str(config), "chat", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: nestor chat [-h] [--url URL] [--name NAME] ROOM")
