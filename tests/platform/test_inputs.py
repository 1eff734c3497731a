"""Reading bodies and integer values: one set of helpers, clear 4xx answers in the level's format."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from nestor import Setting, SubApp, invalid, path_int, positive, query_int, read_form, read_json

from ..conftest import MakeApp

PROBLEM = "application/problem+json"
LIMIT = Setting("inputs_limit", int, 20, validate=positive, help="largest body of /inputs/api/setting")


async def json_with_number(request: web.Request) -> web.Response:
    return web.json_response({"got": await read_json(request, 20)})


async def json_with_setting(request: web.Request) -> web.Response:
    return web.json_response({"got": await read_json(request, LIMIT)})


async def fields(request: web.Request) -> web.Response:
    return invalid(request, "The thing is not valid.", {"name": "Required."})


async def page(request: web.Request) -> web.Response:
    return web.json_response({"page": query_int(request, "page", 1, minimum=1, maximum=50)})


async def item(request: web.Request) -> web.Response:
    return web.json_response({"id": path_int(request, "item_id")})


async def form(request: web.Request) -> web.Response:
    return web.json_response({"keys": sorted((await read_form(request)).keys())})


def create_api() -> web.Application:
    app = web.Application()
    app.add_routes(
        [
            web.post("/number", json_with_number),
            web.post("/setting", json_with_setting),
            web.post("/fields", fields),
            web.get("/page", page),
            web.get("/items/{item_id}", item),
            web.post("/form", form),
        ]
    )
    return app


def specs() -> list[SubApp]:
    api = SubApp(name="api", prefix="/api", factory=create_api, defaults={"error_format": "json"})
    return [SubApp(name="inputs", prefix="/inputs", factory=web.Application, settings=[LIMIT], children=[api])]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_app: MakeApp) -> Any:
    return await aiohttp_client(make_app(specs=specs()))


async def test_read_json_returns_the_object(client: Any) -> None:
    async with client.post("/inputs/api/number", json={"a": 1}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"got": {"a": 1}}


async def test_read_json_over_a_number_limit_is_413_without_a_setting_name(client: Any) -> None:
    async with client.post("/inputs/api/number", json={"text": "x" * 40}) as resp:
        assert resp.status == 413
        assert resp.content_type == PROBLEM
        detail = (await resp.json())["detail"]
    assert "at most 20." in detail and "setting" not in detail


async def test_read_json_over_a_setting_limit_names_the_setting(client: Any) -> None:
    async with client.post("/inputs/api/setting", json={"text": "x" * 40}) as resp:
        assert resp.status == 413
        assert "(setting inputs_limit)" in (await resp.json())["detail"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [(b"{nope", "application/json", 400), (b"[1]", "application/json", 422), (b"{}", "text/plain", 415)],
)
async def test_read_json_says_what_is_wrong(client: Any, body: bytes, content_type: str, status: int) -> None:
    async with client.post("/inputs/api/number", data=body, headers={"Content-Type": content_type}) as resp:
        assert resp.status == status
        assert resp.content_type == PROBLEM


async def test_invalid_lists_fields_and_carries_the_request_id(client: Any) -> None:
    async with client.post("/inputs/api/fields", headers={"X-Request-ID": "given-id"}) as resp:
        assert resp.status == 422
        body = await resp.json()
    assert body["errors"] == {"name": "Required."}
    assert body["request_id"] == "given-id"
    assert body["instance"] == "/inputs/api/fields"


@pytest.mark.parametrize(
    ("query", "status", "expected"),
    [
        ("", 200, 1),
        ("?page=7", 200, 7),
        ("?page=0", 400, "page must be at least 1 and at most 50; got 0."),
        ("?page=51", 400, "page must be at least 1 and at most 50; got 51."),
        ("?page=-1", 400, "page='-1' is not a whole number."),
        ("?page=%D9%A3", 400, "page='٣' is not a whole number."),
        ("?page=" + "9" * 40, 400, "page must be at least 1 and at most 50; got " + "9" * 40 + "."),
    ],
)
async def test_query_int(client: Any, query: str, status: int, expected: object) -> None:
    async with client.get("/inputs/api/page" + query) as resp:
        assert resp.status == status
        body = await resp.json()
    assert (body["page"] if status == 200 else body["detail"]) == expected


@pytest.mark.parametrize(
    ("raw", "status", "expected"),
    [
        ("12", 200, 12),
        ("abc", 404, "Item id 'abc' is not an integer."),
        ("0", 404, "There is no item 0."),
        ("99999999999999999999", 404, "There is no item 99999999999999999999."),
    ],
)
async def test_path_int(client: Any, raw: str, status: int, expected: object) -> None:
    async with client.get(f"/inputs/api/items/{raw}") as resp:
        assert resp.status == status
        body = await resp.json()
    assert (body["id"] if status == 200 else body["detail"]) == expected


async def test_read_form_reads_fields_and_a_broken_one_is_400(client: Any) -> None:
    async with client.post("/inputs/api/form", data={"b": "1", "a": "2"}) as resp:
        assert resp.status == 200
        assert await resp.json() == {"keys": ["a", "b"]}
    broken = b"--x\r\nContent-Disposition: form-data\r\n\r\nno closing boundary"
    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    async with client.post("/inputs/api/form", data=broken, headers=headers) as resp:
        assert resp.status == 400
        assert "The form could not be read" in (await resp.json())["detail"]
