"""What the admin pages show: the mounted tree, the effective configuration, the full route tree."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from pytest_aiohttp import AiohttpClient

from ...fixtures.req_health import ready_no, ready_spec, ready_yes
from ...fixtures.req_token import hidden_spec
from .conftest import PAGES, BuildAdmin, Client, bearer, log_in

JSON = {"Accept": "application/json", **bearer()}
SECRETS = {
    "secret_key": "session-key-material-that-must-stay-hidden",
    "api_token": "api-token-that-must-stay-hidden",
    "b_token": "b-level-token-that-must-stay-hidden",
    "hidden_token": "sub-app-secret-that-must-stay-hidden",
}


async def get_json(client: Client, path: str) -> object:
    async with client.get(path, headers=JSON) as resp:
        assert resp.status == 200
        return await resp.json()


class Rows(HTMLParser):
    """Collect the text of each element carrying `attr`, by its value."""

    def __init__(self, attr: str) -> None:
        super().__init__()
        self.attr = attr
        self.found: dict[str, str] = {}
        self._stack: list[tuple[str, str]] = []  # (tag, label) of open labelled elements

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        label = dict(attrs).get(self.attr)
        if label is not None:
            self._stack.append((tag, label))
            self.found[label] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._stack and self._stack[-1][0] == tag:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        for _, label in self._stack:
            self.found[label] += f" {data}"


def rows(html: str, attr: str) -> dict[str, str]:
    parser = Rows(attr)
    parser.feed(html)
    return {label: " ".join(text.split()) for label, text in parser.found.items()}


# -- overview ----------------------------------------------------------------------------------


async def test_overview_lists_every_level_with_prefix_and_nesting(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    client = await aiohttp_client(make_admin())
    overview = await get_json(client, "/admin/")
    levels = {row["level"]: row for row in overview["levels"]}
    assert list(levels) == ["nestor", "a", "a.api", "admin", "b"]
    assert (levels["a.api"]["prefix"], levels["a.api"]["parent"], levels["a.api"]["depth"]) == ("/a/api", "a", 2)
    assert (levels["a"]["prefix"], levels["a"]["parent"], levels["a"]["depth"]) == ("/a", "nestor", 1)
    assert (levels["nestor"]["prefix"], levels["nestor"]["parent"]) == ("/", None)


async def test_overview_shows_each_sub_apps_readiness(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    specs = (ready_spec("fine", ready_yes), ready_spec("down", ready_no))
    client = await aiohttp_client(make_admin(specs=specs))
    overview = await get_json(client, "/admin/")
    ready = {row["level"]: row["ready"] for row in overview["levels"]}
    assert ready["fine"] == {"ready": True}
    assert ready["down"] == {"ready": False}
    assert ready["a"] is None  # no readiness check declared
    assert overview["checks"] == {"database": {"ready": True}, "bus": {"ready": True}}


async def test_overview_counts_requests_per_sub_app(aiohttp_client: AiohttpClient, make_admin: BuildAdmin) -> None:
    client = await aiohttp_client(make_admin())
    for path, times in (("/a/", 3), ("/a/api/items/1", 2), ("/a/nope", 1)):
        for _ in range(times):
            async with client.get(path) as resp:
                assert resp.status in (200, 404)
    overview = await get_json(client, "/admin/")
    counts = {row["level"]: row["requests"] for row in overview["levels"]}
    assert counts["a"] == 4  # three pages and one 404 under /a
    assert counts["a.api"] == 2
    assert counts["b"] == 0


async def test_overview_page_shows_levels_readiness_and_counts(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    client = await aiohttp_client(make_admin(specs=(ready_spec("down", ready_no),)))
    for _ in range(2):
        async with client.get("/a/api/") as resp:
            assert resp.status == 200
    await log_in(client)
    async with client.get("/admin/") as resp:
        assert resp.status == 200
        page = await resp.text()
    levels = rows(page, "data-level")
    assert list(levels) == ["nestor", "a", "a.api", "admin", "b", "down"]
    assert "/a/api" in levels["a.api"] and "[a]" in levels["a.api"]
    assert "not ready" in levels["down"]
    assert levels["a.api"].endswith(" 2")  # the last column: requests


# -- configuration -----------------------------------------------------------------------------


async def test_config_shows_values_per_level_with_provenance(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    client = await aiohttp_client(make_admin({"a": {"page_size": 7}}))
    levels = {block["level"]: block for block in await get_json(client, "/admin/config")}
    assert levels["a"]["prefix"] == "/a"

    def page_size(level: str) -> dict[str, object]:
        return next(v for v in levels[level]["values"] if v["name"] == "page_size")

    assert page_size("nestor") == {"name": "page_size", "value": 20, "source": "default", "secret": False}
    assert page_size("a") == {"name": "page_size", "value": 7, "source": "test config [a]", "secret": False}
    assert page_size("a.api")["value"] == 7
    assert page_size("a.api")["source"] == "inherited from [a] (test config [a])"


async def test_config_page_shows_each_level_as_a_table(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    client = await aiohttp_client(make_admin({"a": {"page_size": 7}}))
    await log_in(client)
    async with client.get("/admin/config") as resp:
        assert resp.status == 200
        page = await resp.text()
    sections = rows(page, "data-level")
    assert list(sections) == ["nestor", "a", "a.api", "admin", "b"]
    assert "page_size 7 test config [a]" in sections["a"]


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
async def test_config_never_shows_a_secrets_value(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, accept: str
) -> None:
    tables = {
        "nestor": {"secret_key": SECRETS["secret_key"], "api_token": SECRETS["api_token"]},
        "b": {"api_token": SECRETS["b_token"]},
        "hidden": {"hidden_token": SECRETS["hidden_token"]},
    }
    client = await aiohttp_client(make_admin(tables, specs=(hidden_spec(),)))
    async with client.get("/admin/config", headers={"Accept": accept, **bearer()}) as resp:
        assert resp.status == 200
        body = await resp.text()
    for value in [*SECRETS.values(), bearer()["Authorization"].split()[1]]:
        assert value not in body
    if accept == "application/json":
        shown = {
            (block["level"], v["name"]): v["value"]
            for block in json.loads(body)
            for v in block["values"]
            if v["secret"]
        }
        assert shown[("nestor", "secret_key")] == "***"
        assert shown[("b", "api_token")] == "***"
        assert shown[("hidden", "hidden_token")] == "***"
        assert shown[("nestor", "admin_token")] == "***"
    else:
        assert body.count('<code>"***"</code>') >= 4


# -- routes ------------------------------------------------------------------------------------


async def test_routes_json_has_middleware_chains_and_source_locations(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    client = await aiohttp_client(make_admin())
    records = await get_json(client, "/admin/routes")
    [item] = [r for r in records if r["name"] == "a:api:item"]
    assert item["middlewares"] == [
        "nestor.middleware.kernel_middleware",
        "tests.fixtures.tree.record_a",
        "tests.fixtures.tree.record_api",
    ]
    assert re.fullmatch(r"tests\.fixtures\.tree:\d+", item["source"])  # outside the app's base: a module
    assert item["handler"] == "tests.fixtures.tree.item"
    [config] = [r for r in records if r["name"] == "admin:config"]
    *outer, last = config["middlewares"]
    assert last == "nestor.auth.require_token(admin_token)"  # inside the sessions middleware
    assert "sessions" in outer[-1]


async def test_routes_page_groups_routes_with_their_middlewares(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin
) -> None:
    client = await aiohttp_client(make_admin())
    await log_in(client)
    async with client.get("/admin/routes") as resp:
        assert resp.status == 200
        page = await resp.text()
    groups = rows(page, "data-group")
    assert list(groups) == ["nestor", "a", "a.api", "admin", "b"]
    assert "tests.fixtures.tree.record_api" in groups["a.api"]
    assert "tests.fixtures.tree.item" in groups["a.api"]
    assert re.search(r"tests\.fixtures\.tree:\d+", groups["a.api"])
    assert "require_token(api_token)" in groups["b"]


# -- every admin page --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*PAGES, "/admin/login"])
async def test_admin_pages_have_no_inline_script_or_style(
    aiohttp_client: AiohttpClient, make_admin: BuildAdmin, path: str
) -> None:
    client = await aiohttp_client(make_admin())
    await log_in(client)
    async with client.get(path) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert not re.search(r"<style|\sstyle=|\son\w+=", page)
