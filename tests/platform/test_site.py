"""`get_site()`: the whole mounted tree as one object, for the admin and for tools."""

from __future__ import annotations

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from nestor import get_site

from ..conftest import MakeApp


async def test_site_lists_levels_routes_and_middlewares(make_app: MakeApp) -> None:
    site = get_site(make_app())
    assert [level.label for level in site.levels] == ["nestor", "a", "a.api", "b"]
    paths = {route.path for route in site.routes()}
    assert {"/a/", "/a/api/items/{item_id}", "/b/"} <= paths
    api = site.levels[2]
    assert site.middlewares(api)[-1] == "tests.fixtures.tree.record_api"
    assert site.mode == "development"


async def test_site_readiness_and_counts_follow_requests(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    app = make_app()
    client = await aiohttp_client(app)
    for _ in range(3):
        async with client.get("/a/") as resp:
            assert resp.status == 200
    site = get_site(app)
    checks, _ = await site.readiness()
    assert checks["database"]["ready"] and checks["bus"]["ready"]
    assert (site.requests_by_subapp() or {}).get("a") == 3


def test_get_site_of_a_plain_app_says_what_is_needed() -> None:
    with pytest.raises(RuntimeError, match="create_app"):
        get_site(web.Application())
