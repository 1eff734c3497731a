"""The root's own pages: home, /routes (HTML and JSON), /routes/explain, /health."""

from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

import pytest
from pytest_aiohttp import AiohttpClient

import nestor_subapps.hello

from ..conftest import MakeApp
from ..fixtures.req_health import LEAKED, ready_no, ready_raises, ready_spec, ready_yes
from ..fixtures.tree import sample_specs

KERNEL_MIDDLEWARE = "nestor.middleware.kernel_middleware"
SAMPLE_ROUTES = 26  # the sample tree's routes (tests/fixtures/tree.py), its API's openapi.json and docs too


class Sections(HTMLParser):
    """Collect, per element carrying `attr`, its links and its text (nested elements included)."""

    def __init__(self, tag: str, attr: str) -> None:
        super().__init__()
        self.tag, self.attr = tag, attr
        self.found: dict[str, dict[str, list[str]]] = {}
        self._open: list[str] = []  # labels of the sections we are inside
        self._depth: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == self.tag:
            if self.attr in values:
                label = values[self.attr] or ""
                self.found[label] = {"links": [], "text": []}
                self._open.append(label)
                self._depth.append(0)
            elif self._depth:
                self._depth[-1] += 1
        if tag == "a" and self._open and values.get("href"):
            self.found[self._open[-1]]["links"].append(values["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == self.tag and self._depth:
            if self._depth[-1]:
                self._depth[-1] -= 1
            else:
                self._depth.pop()
                self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open and data.strip():
            self.found[self._open[-1]]["text"].append(data.strip())


class RouteRows(HTMLParser):
    """Collect the /routes tables: {group: [(method, path), ...]} in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[str, list[tuple[str, str]]] = {}
        self._group = ""
        self._cells: list[str] | None = None
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and "data-group" in values:
            self._group = values["data-group"] or ""
            self.groups[self._group] = []
        elif tag == "tr" and "data-route" in values:
            self._cells = []
        elif tag == "td" and self._cells is not None:
            self._cells.append("")
            self._in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False
        elif tag == "tr" and self._cells is not None:
            self.groups[self._group].append((self._cells[0], self._cells[1]))
            self._cells = None

    def handle_data(self, data: str) -> None:
        if self._in_cell and self._cells is not None:
            self._cells[-1] += data.strip()


def parse(parser: HTMLParser, html: str) -> HTMLParser:
    parser.feed(html)
    parser.close()
    return parser


# -- home ------------------------------------------------------------------------------------


async def test_home_lists_mounted_sub_apps_with_links(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        cards = parse(Sections("li", "data-subapp"), await resp.text()).found
    assert list(cards) == ["a", "b"]
    assert cards["a"]["links"][0] == "/a/"
    assert "Sample A" in cards["a"]["text"]
    assert "/a/api" in cards["a"]["text"]  # the nested level is shown under its parent
    assert cards["b"]["links"][0] == "/b/"
    assert "Sample B" in cards["b"]["text"]


async def test_home_says_when_nothing_is_mounted(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app(specs=[]))
    async with client.get("/") as resp:
        assert resp.status == 200
        page = await resp.text()
    assert parse(Sections("li", "data-subapp"), page).found == {}
    assert "No sub-apps are mounted" in page


async def test_navigation_links_every_top_level_sub_app(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/routes") as resp:
        assert resp.status == 200
        nav = re.search(r'<nav aria-label="Sub-apps">(.*?)</nav>', await resp.text(), re.S)
    assert nav is not None
    assert re.findall(r'href="([^"]+)"', nav.group(1)) == ["/", "/a/", "/b/", "/routes", "/health"]


# -- /routes ---------------------------------------------------------------------------------


async def test_routes_page_groups_routes_by_app(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/routes") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        groups = parse(RouteRows(), await resp.text()).groups
    assert list(groups) == ["nestor", "a", "a.api", "b"]
    assert groups["a.api"] == [
        ("GET", "/a/api/"),
        ("GET", "/a/api/boom"),
        ("GET", "/a/api/docs"),
        ("POST", "/a/api/echo"),
        ("GET", "/a/api/items/{item_id}"),
        ("GET", "/a/api/openapi.json"),
        ("GET", "/a/api/ws"),
    ]
    assert groups["b"] == [("GET", "/b/")]
    assert ("GET", "/routes") in groups["nestor"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("echo", {"a.api": [("POST", "/a/api/echo")]}),
        ("POST", {"a": [("POST", "/a/form")], "a.api": [("POST", "/a/api/echo")]}),
        (
            "tests.fixtures.tree.item",
            {"a": [("GET", "/a/items/{item_id}")], "a.api": [("GET", "/a/api/items/{item_id}")]},
        ),
        ("b:index", {"b": [("GET", "/b/")]}),
        ("no-such-route", {}),
    ],
)
async def test_routes_page_filters_by_query(
    aiohttp_client: AiohttpClient, make_app: MakeApp, query: str, expected: dict
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/routes", params={"q": query}) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert parse(RouteRows(), page).groups == expected
    assert f'<span id="route-count">{sum(map(len, expected.values()))}</span>' in page


async def test_routes_json_lists_every_route(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/routes.json") as resp:
        assert resp.status == 200
        records = await resp.json()
    assert [(r["method"], r["path"]) for r in records][:3] == [("GET", "/"), ("GET", "/a/"), ("GET", "/a/api/")]
    assert len(records) == SAMPLE_ROUTES
    [item] = [r for r in records if r["name"] == "a:api:item"]
    assert item["path"] == "/a/api/items/{item_id}"
    assert item["apps"] == ["nestor", "a", "a.api"]
    assert item["middlewares"][0] == KERNEL_MIDDLEWARE
    assert re.fullmatch(r"\S+:\d+", item["source"])  # file:line of the handler


async def test_routes_with_accept_json_equals_routes_json(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/routes", headers={"Accept": "application/json"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        negotiated = await resp.json()
    async with client.get("/routes.json") as resp:
        assert resp.status == 200
        assert await resp.json() == negotiated


async def test_routes_json_all_adds_head_routes(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/routes.json", params={"all": "1"}) as resp:
        assert resp.status == 200
        records = await resp.json()
    gets = [r["path"] for r in records if r["method"] == "GET"]
    assert [r["path"] for r in records if r["method"] == "HEAD"] == gets  # every GET gains a HEAD
    assert len(records) == SAMPLE_ROUTES + len(gets)


# -- /routes in production mode ---------------------------------------------------------------

PRODUCTION = {"nestor": {"mode": "production", "admin_token": "the-admin-token-0123456789abcdefghij"}}
ADMIN = {"Authorization": "Bearer the-admin-token-0123456789abcdefghij"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}], ids=["no-token", "wrong-token"])
async def test_production_routes_json_shows_method_path_and_name_only(
    aiohttp_client: AiohttpClient, make_app: MakeApp, headers: dict[str, str]
) -> None:
    client = await aiohttp_client(make_app(PRODUCTION))
    async with client.get("/routes.json", headers=headers) as resp:
        assert resp.status == 200
        records = await resp.json()
    assert len(records) == SAMPLE_ROUTES
    assert {tuple(r) for r in records} == {("method", "path", "name")}
    assert {"method": "GET", "path": "/a/api/items/{item_id}", "name": "a:api:item"} in records


async def test_production_routes_page_hides_handlers_sources_and_middlewares(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(PRODUCTION))
    async with client.get("/routes") as resp:
        assert resp.status == 200
        page = await resp.text()
    rows = [row for group in parse(RouteRows(), page).groups.values() for row in group]
    assert ("GET", "/a/api/items/{item_id}") in rows and len(rows) == SAMPLE_ROUTES
    for internal in ("tests.fixtures.tree", "tree.py", "kernel_middleware", "record_api", "nestor.pages"):
        assert internal not in page


async def test_production_routes_filter_does_not_search_handlers(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(PRODUCTION))
    async with client.get("/routes", params={"q": "tests.fixtures.tree.item"}) as resp:
        assert resp.status == 200
        assert parse(RouteRows(), await resp.text()).groups == {}


@pytest.mark.parametrize("path", ["/routes.json", "/routes"])
async def test_production_routes_show_everything_to_the_admin_token(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str
) -> None:
    client = await aiohttp_client(make_app(PRODUCTION))
    async with client.get(path, headers={**ADMIN, "Accept": "application/json"}) as resp:
        assert resp.status == 200
        records = await resp.json()
    [item] = [r for r in records if r["name"] == "a:api:item"]
    assert item["handler"] == "tests.fixtures.tree.item"
    assert item["middlewares"][0] == KERNEL_MIDDLEWARE


async def test_production_explain_shows_the_match_only(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app(PRODUCTION))
    params = {"method": "GET", "path": "/a/items/3"}
    async with client.get("/routes/explain", params=params, headers={"Accept": "application/json"}) as resp:
        assert resp.status == 200
        explanation = await resp.json()
    assert explanation == {
        "method": "GET",
        "path": "/a/items/3",
        "status": 200,
        "route": {"method": "GET", "path": "/a/items/{item_id}", "name": "a:item"},
        "params": {"item_id": "3"},
        "allowed": [],
    }
    async with client.get("/routes/explain", params=params) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert "<code>item_id=3</code>" in page
    for internal in ("tests.fixtures.tree", "kernel_middleware", "record_a", "page_size"):
        assert internal not in page


async def test_production_explain_shows_everything_to_the_admin_token(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(PRODUCTION))
    params = {"method": "GET", "path": "/a/items/3"}
    async with client.get("/routes/explain", params=params, headers=ADMIN) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert re.search(r'id="explain-handler">tests\.fixtures\.tree\.item<', page)
    assert "tests.fixtures.tree.record_a" in page


# -- /routes/explain -------------------------------------------------------------------------


async def test_explain_page_shows_handler_params_and_app_chain(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/routes/explain", params={"method": "GET", "path": "/a/items/3"}) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert re.search(r'id="explain-handler">tests\.fixtures\.tree\.item<', page)
    assert "<code>item_id=3</code>" in page
    assert "[nestor]" in page and "[a]" in page
    assert "tests.fixtures.tree.record_a" in page


async def test_explain_json_gives_the_explanation(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    params = {"method": "GET", "path": "/a/items/3"}
    async with client.get("/routes/explain", params=params, headers={"Accept": "application/json"}) as resp:
        assert resp.status == 200
        explanation = await resp.json()
    assert explanation["status"] == 200
    assert explanation["params"] == {"item_id": "3"}
    assert explanation["apps"] == ["nestor", "a"]
    assert explanation["route"]["name"] == "a:item"
    assert explanation["middlewares"] == [KERNEL_MIDDLEWARE, "tests.fixtures.tree.record_a"]


async def test_explain_page_shows_near_misses(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/routes/explain", params={"method": "DELETE", "path": "/a/items/3"}) as resp:
        assert resp.status == 200  # the page itself works; the request it explains would be a 405
        page = await resp.text()
    assert "405 Method Not Allowed" in page
    assert "DELETE is not routed here; other methods are: GET, HEAD" in page


@pytest.mark.parametrize(
    "params",
    [
        {"method": "GET"},
        {"method": "GET", "path": ""},
        {"method": "GET", "path": "a/items/3"},
        {"method": "G3T", "path": "/a/"},
        {"method": "<script>", "path": "/a/"},
        {"method": "GET", "path": "/" + "x" * 2000},
    ],
)
async def test_bad_explain_input_is_a_400_page(
    aiohttp_client: AiohttpClient, make_app: MakeApp, params: dict[str, str]
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/routes/explain", params=params) as resp:
        assert resp.status == 400
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "<script>" not in page
    assert resp.headers["X-Request-ID"] in page


# -- /health ---------------------------------------------------------------------------------


async def test_health_is_200_with_database_and_bus_checks(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=[*sample_specs(), ready_spec("fine", ready_yes)]))
    async with client.get("/health") as resp:
        assert resp.status == 200
        assert await resp.json() == {
            "status": "ok",
            "checks": {"database": {"ready": True}, "bus": {"ready": True}},
            "subapps": {"fine": {"ready": True}},
            "not_ready": [],
        }


async def test_health_is_503_naming_a_sub_app_that_is_not_ready(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=[ready_spec("fine", ready_yes), ready_spec("down", ready_no)]))
    async with client.get("/health") as resp:
        assert resp.status == 503
        health = await resp.json()
    assert health["status"] == "unavailable"
    assert health["not_ready"] == ["down"]
    assert health["subapps"] == {"fine": {"ready": True}, "down": {"ready": False}}


async def test_ready_is_503_naming_a_sub_app_that_is_not_ready_and_live_stays_200(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=[ready_spec("fine", ready_yes), ready_spec("down", ready_no)]))
    async with client.get("/health/ready") as resp:
        assert resp.status == 503
        assert await resp.json() == {"status": "unavailable", "not_ready": ["down"], "degraded": []}
    async with client.get("/health/live") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}


async def test_health_is_503_when_a_readiness_check_raises(
    aiohttp_client: AiohttpClient, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(make_app(specs=[ready_spec("broken", ready_raises)]))
    async with client.get("/health") as resp:
        assert resp.status == 503
        body = await resp.text()
        health = await resp.json()
    assert health["not_ready"] == ["broken"]
    assert health["subapps"]["broken"] == {"ready": False, "error": "ConnectionError"}
    assert LEAKED not in body  # /health is public; the details go to the log
    [record] = [r for r in caplog.records if r.name == "nestor.pages"]
    assert record.levelno == logging.WARNING and "broken" in record.getMessage()
    assert record.exc_info is not None and LEAKED in str(record.exc_info[1])


# -- Content-Security-Policy -----------------------------------------------------------------


class InlineCode(HTMLParser):
    """Find what `script-src 'self'; style-src 'self'` forbids: inline scripts, styles, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        names = {name for name, _ in attrs}
        if tag == "style":
            self.found.append("<style>")
        if tag == "script" and "src" not in names:
            self.found.append("inline <script>")
        self.found += [f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")]
        for name, value in attrs:
            if value and value.strip().lower().startswith("javascript:"):
                self.found.append(f"{tag} {name}=javascript:")

    def handle_data(self, data: str) -> None:
        if self._tag == "script" and data.strip():
            self.found.append("inline script text")


@pytest.mark.parametrize(
    "path", ["/", "/routes", "/routes?q=a", "/routes/explain?path=/a/items/3", "/a/nope", "/a/boom", "/hello/"]
)
async def test_first_party_pages_satisfy_the_content_security_policy(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str
) -> None:
    client = await aiohttp_client(make_app(specs=[*sample_specs(), nestor_subapps.hello.subapp]))
    async with client.get(path) as resp:
        assert resp.content_type == "text/html"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        page = await resp.text()
    assert parse(InlineCode(), page).found == []


# -- static files --------------------------------------------------------------------------------


async def test_static_file_is_served_with_its_type_and_validators(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/static/nestor.css") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/css"
        assert resp.headers["ETag"] and resp.headers["Last-Modified"]
        assert "body" in await resp.text()


@pytest.mark.parametrize(
    "path",
    ["/static/missing.css", "/static/../pages.py", "/static/%2E%2E/pages.py", "/static/sub%2Fdir", "/static/a%00b"],
)
async def test_missing_or_outside_static_file_is_a_404_page(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get(path) as resp:
        assert resp.status == 404
        assert resp.content_type == "text/html"  # the error page, not an empty body
        assert "request-id" in await resp.text()
