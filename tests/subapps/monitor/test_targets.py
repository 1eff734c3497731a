"""Targets come from configuration at any level, are checked at start-up, and default to /health."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient, AiohttpServer
from yarl import URL as YURL

import nestor_subapps.monitor
from nestor import ConfigError, create_app
from nestor.config import load
from nestor_subapps.monitor.targets import from_setting, validate_targets

from ...conftest import MakeApp
from .conftest import BuildMonitor, eventually, free_port, status_of, target

URL = "http://127.0.0.1:9/"


async def target_names(client: TestClient[Any, Any]) -> list[str]:
    async with client.get("/monitor/api/targets") as resp:
        assert resp.status == 200
        return [item["name"] for item in (await resp.json())["items"]]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"url": URL}, "targets[0]: name is missing"),
        ({"name": "a b", "url": URL}, "targets[0]: name is 'a b'"),
        ({"name": "api", "url": URL}, "target 'api' (targets[0]): name 'api' is a path of the monitor"),
        ({"name": "site"}, "target 'site' (targets[0]): url is required"),
        ({"name": "site", "url": "ftp://127.0.0.1/"}, "url 'ftp://127.0.0.1/' must be an http://"),
        ({"name": "site", "url": "http:///health"}, "url 'http:///health' has no host"),
        ({"name": "site", "url": URL, "interval": 0}, "interval must be from 0.1 to 86400 seconds, got 0"),
        ({"name": "site", "url": URL, "timeout": "5s"}, "timeout must be a number of seconds, got str '5s'"),
        ({"name": "site", "url": URL, "expect_status": 42}, "expect_status must be an HTTP status (100-599)"),
        ({"name": "site", "url": URL, "intervall": 5}, "unknown field 'intervall'. Did you mean 'interval'?"),
        ({"name": "site", "url": URL, "follow_redirects_to": "example.net"}, "follow_redirects_to must be a list"),
        (
            {"name": "site", "url": URL, "follow_redirects_to": ["https://example.net/"]},
            "follow_redirects_to entry 'https://example.net/' is not a host or host:port",
        ),
        ({"name": "site", "url": URL, "follow_redirects_to": ["example.net:x"]}, "entry 'example.net:x' is not a host"),
        ("http://127.0.0.1/", "targets[0] must be a table like"),
    ],
)
def test_bad_target_stops_start_up_naming_the_table_the_target_and_the_field(
    make_app: MakeApp, item: object, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_app({"monitor": {"targets": [item]}}, specs=[nestor_subapps.monitor.subapp])
    assert str(raised.value).startswith("test config [monitor]: targets: ")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "item",
    [
        {"name": "site", "url": "ftp://watcher:PASSWORD@127.0.0.1/?apikey=KEY"},
        {"name": "site", "url": "http://watcher:PASSWORD@/?apikey=KEY"},
        {"name": "site", "url": "http://watcher:PASSWORD@127.0.0.1:99999/?apikey=KEY"},
        "http://watcher:PASSWORD@127.0.0.1/?apikey=KEY",
    ],
)
def test_a_bad_target_url_is_quoted_without_its_secrets(make_app: MakeApp, item: object) -> None:
    with pytest.raises(ConfigError) as raised:
        make_app({"monitor": {"targets": [item]}}, specs=[nestor_subapps.monitor.subapp])
    assert "PASSWORD" not in str(raised.value) and "KEY" not in str(raised.value)


@pytest.mark.parametrize(
    ("redirect", "followed"),
    [
        ("http://example.org:8080/other", True),  # the same host and port
        ("https://example.org/", True),  # an upgrade to https on the same host
        ("https://example.org:8443/", True),
        ("http://example.org:8081/", False),  # another port is another server
        ("http://sub.example.org:8080/", False),
        ("http://127.0.0.1:8080/", False),
        ("https://example.net/", True),  # allowed: example.net on the scheme's own port
        ("http://example.net/", True),
        ("https://example.net:8443/", False),
        ("http://[::1]:9000/", True),  # allowed with its port
        ("http://[::1]:9001/", False),
        ("ftp://example.org:8080/", False),
    ],
)
def test_redirects_are_followed_to_the_same_host_and_the_hosts_a_target_allows(redirect: str, followed: bool) -> None:
    [item] = validate_targets(
        [{"name": "site", "url": "http://example.org:8080/health", "follow_redirects_to": ["Example.NET", "[::1]:9000"]}]
    )
    [site] = from_setting([item])
    assert item["follow_redirects_to"] == ["example.net", "[::1]:9000"]
    assert site.may_redirect_to(YURL(redirect)) is followed


def test_two_targets_with_one_name_stop_start_up(make_app: MakeApp) -> None:
    targets = [{"name": "site", "url": URL}, {"name": "site", "url": "http://127.0.0.1:10/"}]
    with pytest.raises(ConfigError) as raised:
        make_app({"monitor": {"targets": targets}}, specs=[nestor_subapps.monitor.subapp])
    assert "target 'site' (targets[1]): the name is already used by targets[0]" in str(raised.value)


def write_config(folder: Path, monitor_table: str) -> Path:
    path = folder / "nestor.toml"
    path.write_text(
        "[nestor]\n"
        'subapps = ["monitor"]\n'
        'database_url = "sqlite+aiosqlite:///monitor.sqlite3"\n'
        f"{monitor_table}\n",
        encoding="utf-8",
    )
    return path


async def test_targets_as_inline_tables_in_a_toml_file_are_monitored(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    path = write_config(
        tmp_path,
        "[monitor]\n"
        'targets = [{name = "one", url = "http://127.0.0.1:9/"},\n'
        '           {name = "two", url = "http://127.0.0.1:10/", interval = 60, expect_status = [200, 204]}]',
    )
    client = await aiohttp_client(create_app(load(path, environ={})))
    assert await target_names(client) == ["one", "two"]
    assert (await status_of(client, "two"))["expect_status"] == [200, 204]


def test_bad_target_in_a_toml_file_names_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[monitor]\ntargets = [{name = "one", url = "gopher://127.0.0.1/"}]')
    with pytest.raises(ConfigError) as raised:
        create_app(load(path, environ={}))
    assert str(raised.value).startswith(f"{path} [monitor]: targets: target 'one' (targets[0]): url ")


async def test_targets_from_the_environment_replace_the_file(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    path = write_config(tmp_path, '[monitor]\ntargets = [{name = "file", url = "http://127.0.0.1:9/"}]')
    environ = {"NESTOR_MONITOR__TARGETS": '[{name = "env", url = "http://127.0.0.1:10/"}]'}
    client = await aiohttp_client(create_app(load(path, environ=environ)))
    assert await target_names(client) == ["env"]


async def test_targets_set_for_the_whole_server_are_monitored(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor
) -> None:
    client = await aiohttp_client(make_monitor(tables={"nestor": {"targets": [target("root", URL)]}}))
    assert await target_names(client) == ["root"]


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 8080), ("0.0.0.0", 9000), ("localhost", 8000)])
async def test_without_targets_the_server_watches_its_own_health_where_it_listens(
    aiohttp_client: AiohttpClient, make_monitor: BuildMonitor, host: str, port: int
) -> None:
    # The test server binds a port of its own, as gunicorn binds its --bind whatever the settings say.
    client = await aiohttp_client(make_monitor(tables={"nestor": {"host": host, "port": port}}))
    status = await status_of(client, "nestor")
    assert (status["url"], status["expect_status"]) == (f"http://127.0.0.1:{client.port}/health", [200])


async def test_fresh_server_shows_its_own_health_up(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, make_monitor: BuildMonitor
) -> None:
    port = free_port()
    server = await aiohttp_server(make_monitor(tables={"nestor": {"port": port}}), port=port)
    client = await aiohttp_client(server)
    status = await eventually(lambda: status_of(client, "nestor"), lambda s: s["state"] != "unknown")
    assert status["state"] == "up"
    assert status["last_check"]["status"] == 200
