"""One Jinja2 environment on the root: url() across the tree, loader order, autoescaping."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient
from yarl import URL

import nestor_subapps.hello
from nestor import ConfigError, SubApp
from nestor.templating import url_for
from nestor.tree import TREE

from ..conftest import MakeApp
from ..fixtures.req_probe import probe_spec
from ..fixtures.tree import sample_specs

REPO = Path(__file__).resolve().parents[2]
PROJECT_TEMPLATES = str(Path(__file__).resolve().parents[1] / "fixtures" / "templates_req_project")


def with_probe() -> list:
    return [*sample_specs(), probe_spec()]


# -- url() -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parts", "expected"),
    [
        ("a:api:item", {"item_id": 3}, "/a/api/items/3"),
        ("a:item", {"item_id": 3}, "/a/items/3"),
        ("a:api:index", {}, "/a/api/"),
        ("b:index", {}, "/b/"),
        ("routes", {}, "/routes"),
        ("static", {"filename": "nestor.css"}, "/static/nestor.css"),
    ],
)
def test_url_for_reverses_any_route_in_the_tree(make_app: MakeApp, name: str, parts: dict, expected: str) -> None:
    assert url_for(make_app()[TREE], name, **parts) == URL(expected)


def test_url_for_adds_a_query(make_app: MakeApp) -> None:
    assert str(url_for(make_app()[TREE], "a:api:item", {"q": "x y"}, item_id=3)) == "/a/api/items/3?q=x+y"


async def test_template_url_reverses_a_route_of_another_sub_app(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=with_probe()))
    async with client.get("/probe/links") as resp:
        assert resp.status == 200
        page = await resp.text()
    assert '<a id="api-item" href="/a/api/items/3">' in page
    assert '<a id="a-index" href="/a/">' in page


def test_unknown_route_name_raises_naming_it(make_app: MakeApp) -> None:
    with pytest.raises(LookupError, match=r"no route is named 'a:api:itme'\. Did you mean 'a:api:item'\?"):
        url_for(make_app()[TREE], "a:api:itme", item_id=3)


def test_missing_route_parameter_raises_naming_it(make_app: MakeApp) -> None:
    with pytest.raises(LookupError, match="route 'a:api:item' needs the parameter 'item_id'"):
        url_for(make_app()[TREE], "a:api:item")


def test_parameters_for_a_fixed_route_raise_naming_the_route(make_app: MakeApp) -> None:
    with pytest.raises(LookupError, match=r"route 'a:index' \(/a/\) cannot be built from \['item_id'\]"):
        url_for(make_app()[TREE], "a:index", item_id=3)


# -- loader order ----------------------------------------------------------------------------


async def test_sub_app_renders_the_template_it_ships(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=with_probe()))
    async with client.get("/probe/page") as resp:
        assert resp.status == 200
        assert '<p id="source">shipped by the probe sub-app</p>' in await resp.text()


async def test_project_template_overrides_the_sub_apps(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    app = make_app({"nestor": {"templates_dir": PROJECT_TEMPLATES}}, specs=with_probe())
    client = await aiohttp_client(app)
    async with client.get("/probe/page") as resp:
        assert resp.status == 200
        page = await resp.text()
    assert '<p id="source">overridden by the project</p>' in page
    assert "shipped by the probe sub-app" not in page
    assert '<nav aria-label="Sub-apps">' in page  # base.html still comes from the kernel's folder


# -- autoescaping ----------------------------------------------------------------------------


async def test_query_text_is_escaped_on_the_hello_page(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=[nestor_subapps.hello.subapp]))
    async with client.get("/hello/", params={"name": "<script>alert(1)</script>"}) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_query_text_is_escaped_in_a_sub_app_template(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=with_probe()))
    async with client.get("/probe/page", params={"q": '"><img src=x onerror=alert(1)>'}) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert "<img" not in page
    assert '<p id="q">&#34;&gt;&lt;img src=x onerror=alert(1)&gt;</p>' in page


async def person(request: web.Request) -> web.Response:
    return web.Response(text=request.match_info["name"])


def test_url_accepts_a_route_parameter_called_name(make_app: MakeApp) -> None:
    app = make_app()
    app.router.add_get("/people/{name}", person, name="person")
    assert str(url_for(app[TREE], "person", name="ann")) == "/people/ann"
    assert str(url_for(app[TREE], "person", name="ann", query_={"tab": "x"})) == "/people/ann?tab=x"


async def test_sub_apps_can_stay_out_of_the_navigation(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    hidden = SubApp(name="quiet", prefix="/quiet", factory=web.Application, nav=False)
    client = await aiohttp_client(make_app(specs=[*sample_specs(), hidden]))
    async with client.get("/") as resp:
        assert resp.status == 200
        nav = (await resp.text()).split("</nav>")[0]
    assert 'href="/a/"' in nav
    assert "/quiet" not in nav


# -- where templates come from ------------------------------------------------------------------


def spec_with_templates(templates: str | Path) -> SubApp:
    return SubApp(name="probe", prefix="/probe", factory=probe_spec().factory, templates=templates)


async def test_relative_template_folder_is_found_in_the_subapps_package(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    # Relative to the folder of the module that defines the factory (tests/fixtures/), whatever the cwd.
    client = await aiohttp_client(make_app(specs=[spec_with_templates("templates_req_shipped")]))
    async with client.get("/probe/page") as resp:
        assert resp.status == 200
        assert "shipped by the probe sub-app" in await resp.text()


def test_missing_template_folder_stops_start_up_naming_subapp_and_path(make_app: MakeApp) -> None:
    expected = str(Path(__file__).resolve().parents[1] / "fixtures" / "templats")
    with pytest.raises(ConfigError, match=rf"sub-app 'probe': its template folder '{expected}' does not exist"):
        make_app(specs=[spec_with_templates("templats")])


async def test_the_sample_projects_footer_overrides_the_kernels(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"templates_dir": str(REPO / "templates")}}))
    async with client.get("/") as resp:
        assert "this line is <code>templates/footer.html</code>, a project override" in await resp.text()
    client = await aiohttp_client(make_app())  # a project without templates/: the kernel's footer
    async with client.get("/") as resp:
        assert "Nestor · a nested multi-app platform on aiohttp" in await resp.text()


@pytest.mark.parametrize(("mode", "auto_reload"), [("development", True), ("production", False)])
def test_templates_are_reread_on_change_only_in_development(make_app: MakeApp, mode: str, auto_reload: bool) -> None:
    app = make_app({"nestor": {"mode": mode, "admin_token": "t" * 32, "secret_key": "k" * 48}})
    assert app[aiohttp_jinja2.APP_KEY].auto_reload is auto_reload


def test_template_url_remembers_what_it_built_and_still_checks_names(make_app: MakeApp) -> None:
    url = make_app()[aiohttp_jinja2.APP_KEY].globals["url"]
    first = url("a:item", item_id=3)
    assert url("a:item", item_id=3) is first  # built once
    assert str(url("a:item", item_id=4)) == "/a/items/4"
    assert str(url("a:api:index", query_={"q": "x"})) == "/a/api/?q=x"
    with pytest.raises(LookupError, match="no route is named 'a:itm'"):
        url("a:itm")
