"""Declared schemas: a handler gets its body and query decoded and checked, or the client a clear 4xx."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from nestor import SubApp, operation
from nestor.schemas import field_errors

from ..conftest import MakeApp

PROBLEM = "application/problem+json"


class Point(msgspec.Struct):
    x: int
    y: Annotated[int, msgspec.Meta(ge=0, extra={"invalid": "y is a height: zero or more.", "missing": "Say how high."})]
    label: Annotated[str, msgspec.Meta(max_length=5)] = ""


class Page(msgspec.Struct):
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10
    q: str = ""


@operation(body=Point, responses={201: Point}, max_bytes=8192)
async def create(request: web.Request, body: Point) -> web.Response:
    return web.json_response({"x": body.x, "y": body.y, "label": body.label}, status=201)


@operation(query=Page)
async def search(request: web.Request, query: Page) -> web.Response:
    return web.json_response({"limit": query.limit, "q": query.q})


async def undeclared(request: web.Request) -> web.Response:
    return web.json_response({"got": await request.json()})


def create_api() -> web.Application:
    app = web.Application()
    app.add_routes([web.post("/points", create), web.get("/search", search), web.post("/raw", undeclared)])
    return app


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_app: MakeApp) -> Any:
    spec = SubApp(name="geo", prefix="/geo", factory=create_api, defaults={"error_format": "json"})
    return await aiohttp_client(make_app(specs=[spec]))


async def test_a_valid_body_reaches_the_handler_decoded(client: Any) -> None:
    async with client.post("/geo/points", json={"x": 1, "y": 2, "extra": "ignored"}) as resp:
        assert resp.status == 201
        assert await resp.json() == {"x": 1, "y": 2, "label": ""}


async def test_every_invalid_field_is_named_not_only_the_first(client: Any) -> None:
    async with client.post("/geo/points", json={"x": "one", "y": -1, "label": "too long"}) as resp:
        assert resp.status == 422
        assert resp.content_type == PROBLEM
        problem = await resp.json()
    assert problem["errors"] == {
        "x": "Expected `int`, got `str`",
        "y": "y is a height: zero or more.",
        "label": "Expected `str` of length <= 5",
    }
    assert problem["request_id"] == resp.headers["X-Request-ID"]


async def test_a_missing_field_uses_its_own_words(client: Any) -> None:
    async with client.post("/geo/points", json={"x": 1}) as resp:
        assert resp.status == 422
        assert (await resp.json())["errors"] == {"y": "Say how high."}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "detail"),
    [
        (b"{nope", "application/json", 400, "The body is not valid JSON"),
        (b"[" * 5000, "application/json", 400, "nested too deeply"),
        (b"[1, 2]", "application/json", 422, "The body must be a JSON object, not list."),
        (b'{"x": 1, "y": 1}', "text/plain", 415, "Content-Type: application/json"),
        (b'{"x": 1, "y": 1, "label": "' + b"a" * 9000 + b'"}', "application/json", 413, "at most 8192"),
    ],
)
async def test_a_body_that_cannot_be_read_says_why(
    client: Any, body: bytes, content_type: str, status: int, detail: str
) -> None:
    async with client.post("/geo/points", data=body, headers={"Content-Type": content_type}) as resp:
        assert resp.status == status
        assert resp.content_type == PROBLEM
        assert detail in (await resp.json())["detail"]


@pytest.mark.parametrize(
    ("query", "status", "expected"),
    [
        ("", 200, {"limit": 10, "q": ""}),
        ("?limit=7&q=x", 200, {"limit": 7, "q": "x"}),
        ("?limit=0", 400, "Query parameter limit='0': Expected `int` >= 1."),
        ("?limit=abc", 400, "Query parameter limit='abc': Expected `int`, got `str`."),
    ],
)
async def test_a_declared_query_is_converted_or_a_400_naming_it(client: Any, query: str, status: int, expected: Any) -> None:
    async with client.get("/geo/search" + query) as resp:
        assert resp.status == status
        body = await resp.json()
    assert (body if status == 200 else body["detail"]) == expected


async def test_an_undeclared_handler_reads_its_body_as_before(client: Any) -> None:
    async with client.post("/geo/raw", data=b"[1, 2]", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"got": [1, 2]}


def test_a_rule_across_fields_is_reported_under_dollar() -> None:
    class Range(msgspec.Struct):
        low: int
        high: int

        def __post_init__(self) -> None:
            if self.low > self.high:
                raise ValueError("low must not be above high")

    assert field_errors(Range, {"low": 3, "high": 1}) == {"$": "low must not be above high"}
