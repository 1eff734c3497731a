"""OpenAPI 3.1 documents built from the route tree: per API and for the whole tree, and the docs pages."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

import nestor_subapps.chat
import nestor_subapps.hello
import nestor_subapps.polls
from nestor.openapi import path_patterns

from ..conftest import MakeApp
from ..fixtures.cli_run import REPO, nestor

TOKEN = "t" * 32


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, make_app: MakeApp) -> Any:
    return await aiohttp_client(make_app(specs=[nestor_subapps.polls.subapp, nestor_subapps.chat.subapp]))


async def document(client: Any, path: str, **headers: str) -> dict[str, Any]:
    async with client.get(path, headers=headers) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        return await resp.json()


async def test_each_api_serves_its_own_document_with_full_paths(client: Any) -> None:
    polls = await document(client, "/polls/api/openapi.json")
    assert polls["openapi"] == "3.1.0"
    assert all(path.startswith("/polls/api/") for path in polls["paths"])
    assert "/polls/api/questions/{question_id}/votes" in polls["paths"]
    whole = await document(client, "/openapi.json")
    assert {"/polls/api/questions", "/chat/api/rooms", "/polls/", "/routes"} <= set(whole["paths"])


async def test_operation_ids_are_the_namespaced_route_names(client: Any) -> None:
    paths = (await document(client, "/polls/api/openapi.json"))["paths"]
    assert paths["/polls/api/questions/{question_id}/votes"]["post"]["operationId"] == "polls:api:votes"
    # One resource with two methods: each operation id says its method.
    assert paths["/polls/api/questions"]["get"]["operationId"] == "polls:api:questions.get"
    assert paths["/polls/api/questions"]["post"]["operationId"] == "polls:api:questions.post"


async def test_path_parameters_carry_their_route_regex(client: Any) -> None:
    whole = await document(client, "/openapi.json")
    [parameter] = whole["paths"]["/polls/{question_id}"]["get"]["parameters"]
    assert parameter == {"name": "question_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^\\d+$"}}
    [room] = whole["paths"]["/chat/api/rooms/{room}/messages"]["get"]["parameters"][:1]
    assert room["schema"]["pattern"] == "^[^{}/]+$"  # aiohttp's default for an unconstrained {room}


def test_path_patterns_reads_nested_groups() -> None:
    assert path_patterns(r"\/a\/(?P<x>(ab|c)+)\/(?P<y>\d{1,3})") == {"x": "(ab|c)+", "y": r"\d{1,3}"}


async def test_declared_bodies_queries_and_errors_are_documented(client: Any) -> None:
    doc = await document(client, "/polls/api/openapi.json")
    create = doc["paths"]["/polls/api/questions"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/NewQuestion"}
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Question"}
    for status in ("400", "413", "415", "422", "503"):
        assert create["responses"][status]["content"] == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
    listing = doc["paths"]["/polls/api/questions"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "offset", "q", "before"}
    schemas = doc["components"]["schemas"]
    assert schemas["NewQuestion"]["properties"]["choices"]["minItems"] == 2
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail", "instance", "request_id"}


async def test_an_undeclared_route_appears_with_what_is_known(client: Any) -> None:
    whole = await document(client, "/openapi.json")
    routes = whole["paths"]["/routes"]["get"]
    assert routes["operationId"] == "routes"
    assert routes["responses"] == {"default": {"description": "not declared: any status, any body"}}


async def test_production_shows_the_full_document_only_with_the_admin_token(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    app = make_app({"nestor": {"mode": "production", "admin_token": TOKEN}}, specs=[nestor_subapps.hello.subapp])
    client = await aiohttp_client(app)
    reduced = await document(client, "/hello/api/openapi.json")
    assert "components" not in reduced
    assert "parameters" not in reduced["paths"]["/hello/api/greeting"]["get"]
    assert reduced["paths"]["/hello/api/greeting"]["get"]["operationId"] == "hello:api:greeting"
    full = await document(client, "/hello/api/openapi.json", Authorization=f"Bearer {TOKEN}")
    assert "Greeting" in full["components"]["schemas"]


async def test_a_public_api_keeps_its_document_whole_in_production(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    api = replace(nestor_subapps.hello.subapp.children[0], public_api=True)
    spec = replace(nestor_subapps.hello.subapp, children=[api])
    client = await aiohttp_client(make_app({"nestor": {"mode": "production", "admin_token": TOKEN}}, specs=[spec]))
    assert "components" in await document(client, "/hello/api/openapi.json")
    assert "components" not in await document(client, "/openapi.json")  # the whole tree's is not public


async def test_the_docs_page_shows_each_operation_with_an_example_and_curl(client: Any) -> None:
    async with client.get("/polls/api/docs") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert '<span class="method">POST</span> <code>/polls/api/questions</code>' in page
    assert "curl -X POST &#39;http://127.0.0.1:" in page and "/polls/api/questions&#39; -H &#39;Content-Type: application/json&#39;" in page
    assert "Which database do you use?" in page  # the example, from the schema's examples
    assert "<script" not in page.split("</main>")[0]  # no inline script: the CSP holds


def test_nestor_openapi_prints_one_levels_document() -> None:
    result = nestor("openapi", "chat.api", cwd=REPO)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["info"]["title"] == "Nestor: chat.api"
    assert set(doc["paths"]) >= {"/chat/api/rooms", "/chat/api/rooms/{room}/messages"}
    assert result.stdout == nestor("openapi", "chat.api", cwd=REPO).stdout  # stable: sorted, no addresses
