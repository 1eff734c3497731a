"""The route tree as data: the exact listing, HEAD folding, explain(), and what aiohttp hides."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

from nestor import introspect
from nestor.tree import TREE, Tree

from ..conftest import MakeApp
from ..fixtures import tree as sample
from ..fixtures.req_shadow import shadow_specs

REPO = Path(__file__).resolve().parents[2]
KERNEL = ("nestor.middleware.kernel_middleware",)
A = (*KERNEL, "tests.fixtures.tree.record_a")
API = (*A, "tests.fixtures.tree.record_api")
B = (*KERNEL, "nestor.auth.require_token(api_token)")
ROOT_APPS, A_APPS, API_APPS, B_APPS = ("nestor",), ("nestor", "a"), ("nestor", "a", "a.api"), ("nestor", "b")
STATIC_HANDLER = "nestor.pages.static('/static')"

# The sample tree (/ -> /a -> /a/api, and /b) with the root pages: method, path, name, handler, apps, middlewares.
SAMPLE_LISTING = [
    ("GET", "/", "home", "nestor.pages.home", ROOT_APPS, KERNEL),
    ("GET", "/a/", "a:index", "tests.fixtures.tree.show", A_APPS, A),
    ("GET", "/a/api/", "a:api:index", "tests.fixtures.tree.show", API_APPS, API),
    ("GET", "/a/api/boom", "a:api:boom", "tests.fixtures.tree.boom", API_APPS, API),
    ("GET", "/a/api/docs", "a:api:docs", "nestor.pages.docs_page", API_APPS, API),
    ("POST", "/a/api/echo", "a:api:echo", "tests.fixtures.tree.echo", API_APPS, API),
    ("GET", "/a/api/items/{item_id}", "a:api:item", "tests.fixtures.tree.item", API_APPS, API),
    ("GET", "/a/api/openapi.json", "a:api:openapi", "nestor.pages.openapi_json", API_APPS, API),
    ("GET", "/a/api/ws", "a:api:ws", "tests.fixtures.tree.ws", API_APPS, API),
    ("GET", "/a/boom", "a:boom", "tests.fixtures.tree.boom", A_APPS, A),
    ("POST", "/a/form", "a:form", "tests.fixtures.tree.form", A_APPS, A),
    ("GET", "/a/items/{item_id}", "a:item", "tests.fixtures.tree.item", A_APPS, A),
    ("GET", "/a/slow", "a:slow", "tests.fixtures.tree.slow", A_APPS, A),
    ("GET", "/a/stream", "a:stream", "tests.fixtures.tree.stream", A_APPS, A),
    ("GET", "/b/", "b:index", "tests.fixtures.tree.show", B_APPS, B),
    ("GET", "/docs", "docs", "nestor.pages.docs_page", ROOT_APPS, KERNEL),
    ("GET", "/favicon.ico", "favicon", "nestor.pages.favicon", ROOT_APPS, KERNEL),
    ("GET", "/health", "health", "nestor.pages.health", ROOT_APPS, KERNEL),
    ("GET", "/health/live", "live", "nestor.pages.live", ROOT_APPS, KERNEL),
    ("GET", "/health/ready", "ready", "nestor.pages.ready", ROOT_APPS, KERNEL),
    ("GET", "/metrics", "metrics", "nestor.hostmetrics.metrics_page", ROOT_APPS, KERNEL),
    ("GET", "/openapi.json", "openapi", "nestor.pages.openapi_json", ROOT_APPS, KERNEL),
    ("GET", "/routes", "routes", "nestor.pages.routes_page", ROOT_APPS, KERNEL),
    ("GET", "/routes.json", "routes_json", "nestor.pages.routes_json", ROOT_APPS, KERNEL),
    ("GET", "/routes/explain", "explain", "nestor.pages.explain_page", ROOT_APPS, KERNEL),
    ("GET", "/static/{filename}", "static", STATIC_HANDLER, ROOT_APPS, KERNEL),
]


def tree_of(make_app: MakeApp, **kwargs: object) -> Tree:
    return make_app(**kwargs)[TREE]


def listing(records: list[introspect.Route]) -> list[tuple]:
    return [(r.method, r.path, r.name, r.handler, r.apps, r.middlewares) for r in records]


# -- routes() --------------------------------------------------------------------------------


def test_sample_tree_lists_exactly_its_routes(make_app: MakeApp) -> None:
    assert listing(introspect.routes(tree_of(make_app))) == SAMPLE_LISTING


def test_head_routes_are_folded_into_get_by_default(make_app: MakeApp) -> None:
    assert "HEAD" not in {r.method for r in introspect.routes(tree_of(make_app))}


def test_include_head_lists_a_head_beside_every_get(make_app: MakeApp) -> None:
    records = introspect.routes(tree_of(make_app), include_head=True)
    gets = [(r.path, r.name) for r in records if r.method == "GET"]
    heads = [(r.path, r.name) for r in records if r.method == "HEAD"]
    assert heads == gets
    assert len(records) == len(SAMPLE_LISTING) + len(gets)


def test_route_source_points_at_the_handler_definition(make_app: MakeApp) -> None:
    records = introspect.routes(tree_of(make_app), base=REPO)
    [record] = [r for r in records if r.name == "a:api:item"]
    assert record.source == f"tests/fixtures/tree.py:{inspect.getsourcelines(sample.item)[1]}"


def test_route_records_are_json_ready_and_stable(make_app: MakeApp) -> None:
    first = [r.as_dict() for r in introspect.routes(tree_of(make_app), base=REPO)]
    second = [r.as_dict() for r in introspect.routes(tree_of(make_app), base=REPO)]
    assert first == second  # two separately built apps: no memory addresses, same order
    assert first[1] == {
        "method": "GET",
        "path": "/a/",
        "name": "a:index",
        "handler": "tests.fixtures.tree.show",
        "source": f"tests/fixtures/tree.py:{inspect.getsourcelines(sample.show)[1]}",
        "apps": ["nestor", "a"],
        "middlewares": list(A),
    }


async def test_every_listed_get_route_without_parameters_answers(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    app = make_app()
    client = await aiohttp_client(app)
    paths = [r.path for r in introspect.routes(app[TREE]) if r.method == "GET" and "{" not in r.path]
    assert len(paths) == 21  # the loop below must not pass by having nothing to do
    for path in paths:
        async with client.get(path) as resp:
            assert resp.status != 404, path


# -- explain() -------------------------------------------------------------------------------


def test_explain_match_gives_route_params_and_app_chain(make_app: MakeApp) -> None:
    explanation = introspect.explain(tree_of(make_app), "GET", "/a/api/items/3")
    assert explanation.status == 200
    assert explanation.params == {"item_id": "3"}
    assert explanation.route is not None and explanation.route.name == "a:api:item"
    assert explanation.route.handler == "tests.fixtures.tree.item"
    assert [level.label for level in explanation.level.chain()] == ["nestor", "a", "a.api"]
    assert explanation.as_dict()["middlewares"] == list(API)
    assert explanation.notes == []


def test_explain_ignores_query_string(make_app: MakeApp) -> None:
    explanation = introspect.explain(tree_of(make_app), "get", "/a/items/7?page=2")
    assert (explanation.status, explanation.method, explanation.params) == (200, "GET", {"item_id": "7"})


def test_explain_shows_the_config_the_request_sees(make_app: MakeApp) -> None:
    tree = tree_of(make_app, tables={"a": {"page_size": 10, "api": {"page_size": 50}}})
    config = {c["name"]: c for c in introspect.explain(tree, "GET", "/a/api/").config}
    assert config["page_size"]["value"] == 50
    assert "[a.api]" in config["page_size"]["source"]
    assert config["error_format"]["value"] == "json"


def test_explain_other_method_is_405_with_allowed_methods(make_app: MakeApp) -> None:
    explanation = introspect.explain(tree_of(make_app), "DELETE", "/a/items/3")
    assert explanation.status == 405
    assert explanation.allowed == ["GET", "HEAD"]
    assert explanation.notes == ["DELETE is not routed here; other methods are: GET, HEAD"]


def test_explain_404_notes_the_trailing_slash_near_miss(make_app: MakeApp) -> None:
    explanation = introspect.explain(tree_of(make_app), "GET", "/a/stream/")
    assert explanation.status == 404
    assert explanation.notes == ["no route matches /a/stream/, but /a/stream does"]


@pytest.mark.parametrize(("path", "alternative"), [("/a", "/a/"), ("/a/api", "/a/api/")])
def test_explain_says_a_path_without_its_slash_redirects(make_app: MakeApp, path: str, alternative: str) -> None:
    explanation = introspect.explain(tree_of(make_app), "GET", path)
    assert explanation.status == 301
    assert explanation.notes == [f"no route matches {path}: it redirects to {alternative}, which does"]


def test_explain_404_without_near_miss_has_no_notes(make_app: MakeApp) -> None:
    explanation = introspect.explain(tree_of(make_app), "GET", "/a/nowhere")
    assert (explanation.status, explanation.notes) == (404, [])
    assert [level.label for level in explanation.level.chain()] == ["nestor", "a"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/a/items/3"),
        ("GET", "/a/items/x"),
        ("DELETE", "/a/items/3"),
        ("GET", "/a"),
        ("POST", "/a/api/"),
        ("GET", "/a/api/nope"),
        ("HEAD", "/a/api/"),
        ("GET", "/static/nestor.css"),
        ("GET", "/s/c/page"),
        ("GET", "/s/c/other"),
    ],
)
async def test_explain_agrees_with_the_real_router(
    aiohttp_client: AiohttpClient, make_app: MakeApp, method: str, path: str
) -> None:
    app = make_app(specs=[*sample.sample_specs(), *shadow_specs()])
    client = await aiohttp_client(app)
    async with client.request(method, path, allow_redirects=False) as resp:
        real = resp.status
    assert introspect.explain(app[TREE], method, path).status == real


async def test_parent_route_shadowing_a_childs_is_noted(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    app = make_app(specs=shadow_specs())
    client = await aiohttp_client(app)
    async with client.get("/s/c/page") as resp:
        assert resp.status == 200
        assert await resp.text() == "parent"  # what aiohttp does: the child's /page is never reached
    explanation = introspect.explain(app[TREE], "GET", "/s/c/page")
    assert explanation.route is not None and explanation.route.name == "s:shadowing"
    assert explanation.notes == [
        "this [s] route shadows [s.c]'s route for /s/c/page: aiohttp tries the parent's longer path first"
    ]


def test_child_route_that_is_not_shadowed_has_no_note(make_app: MakeApp) -> None:
    explanation = introspect.explain(tree_of(make_app, specs=shadow_specs()), "GET", "/s/c/other")
    assert explanation.route is not None and explanation.route.name == "s:c:other"
    assert explanation.notes == []


# -- problems() ------------------------------------------------------------------------------


def test_problems_report_a_parent_route_shadowing_a_childs(make_app: MakeApp) -> None:
    problems = introspect.problems(tree_of(make_app, specs=shadow_specs()))
    assert any(p.startswith("route /s/c/page of [s] shadows the route /s/c/page of [s.c]") for p in problems)


def test_problems_report_a_route_name_used_twice(make_app: MakeApp) -> None:
    problems = introspect.problems(tree_of(make_app, specs=shadow_specs()))
    assert (
        "route name 's:c:other' is used by [s] and [s.c]: url() can reverse only one of them. Rename one."
        in problems
    )


def test_sample_tree_has_no_problems(make_app: MakeApp) -> None:
    assert introspect.problems(tree_of(make_app)) == []
