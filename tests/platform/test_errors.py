"""Errors in the serving level's format: HTML pages from templates/errors/ or RFC 9457 problem+json.

The sample tree serves /a as an HTML level and /a/api as a JSON level (its spec's default).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

import nestor_subapps.hello

from ..conftest import MakeApp
from ..fixtures import mount_sources
from ..fixtures.req_probe import probe_spec
from ..fixtures.tree import sample_specs

HTML = "text/html"
PROBLEM = "application/problem+json"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SECRET = "secret internals that must never reach the client"  # what the sample `boom` raises


def request_id_on_page(html: str) -> str:
    found = re.search(r'<code id="request-id">([^<]*)</code>', html)
    assert found is not None, "the error page shows no request id"
    return found.group(1)


@pytest.mark.parametrize(
    ("method", "path", "status", "content_type"),
    [
        ("GET", "/nope", 404, HTML),
        ("GET", "/a/nope", 404, HTML),
        ("GET", "/a/api/nope", 404, PROBLEM),
        ("DELETE", "/a/items/3", 405, HTML),
        ("DELETE", "/a/api/items/3", 405, PROBLEM),
        ("GET", "/a/boom", 500, HTML),
        ("GET", "/a/api/boom", 500, PROBLEM),
    ],
)
async def test_error_takes_the_serving_levels_format(
    aiohttp_client: AiohttpClient, make_app: MakeApp, method: str, path: str, status: int, content_type: str
) -> None:
    client = await aiohttp_client(make_app())
    async with client.request(method, path) as resp:
        assert resp.status == status
        assert resp.content_type == content_type


@pytest.mark.parametrize(
    ("tables", "path", "content_type"),
    [
        ({"a": {"api": {"error_format": "html"}}}, "/a/api/nope", HTML),
        ({"a": {"error_format": "json"}}, "/a/nope", PROBLEM),
        ({"nestor": {"error_format": "json"}}, "/nope", PROBLEM),
        ({"nestor": {"error_format": "json"}}, "/b/nope", PROBLEM),
    ],
)
async def test_nearest_error_format_setting_decides(
    aiohttp_client: AiohttpClient, make_app: MakeApp, tables: dict, path: str, content_type: str
) -> None:
    client = await aiohttp_client(make_app(tables))
    async with client.get(path) as resp:
        assert resp.status == 404
        assert resp.content_type == content_type


async def test_problem_document_follows_rfc_9457(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/a/api/nope") as resp:
        assert resp.status == 404
        assert await resp.json(content_type=PROBLEM) == {
            "type": "about:blank",
            "title": "Not Found",
            "status": 404,
            "detail": "Nothing is found at /a/api/nope.",
            "instance": "/a/api/nope",
            "request_id": resp.headers["X-Request-ID"],
        }


async def test_problem_instance_is_the_path_percent_encoded(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/a/api/caf%C3%A9%20menu") as resp:
        assert resp.status == 404
        problem = await resp.json(content_type=PROBLEM)
    assert problem["instance"] == "/a/api/caf%C3%A9%20menu"  # a URI reference, not "/a/api/café menu"


@pytest.mark.parametrize(("path", "content_type"), [("/a/items/3", HTML), ("/a/api/items/3", PROBLEM)])
@pytest.mark.parametrize("expect", ["nonsense", "100-continue, x"])
async def test_unknown_expectation_is_417_in_the_level_format(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str, content_type: str, expect: str
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get(path, headers={"Expect": expect, "X-Request-ID": "probe-417"}) as resp:
        assert resp.status == 417
        assert resp.content_type == content_type
        assert resp.headers["X-Request-ID"] == "probe-417"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "Unknown Expect" in await resp.text()
    async with client.get(path, headers={"Expect": "100-continue"}) as resp:
        assert resp.status == 200  # the one expectation HTTP/1.1 defines still goes through


async def test_http_error_text_becomes_problem_detail(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=[nestor_subapps.hello.subapp]))
    async with client.get("/hello/api/greeting", params={"name": "x" * 101}) as resp:
        assert resp.status == 400
        problem = await resp.json(content_type=PROBLEM)
    assert problem["detail"] == "name is 101 characters long; at most 100 are allowed"


@pytest.mark.parametrize(("path", "content_type"), [("/a/items/3", HTML), ("/a/api/items/3", PROBLEM)])
async def test_405_names_the_allowed_methods_in_allow_header(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str, content_type: str
) -> None:
    client = await aiohttp_client(make_app())
    async with client.delete(path) as resp:
        assert resp.status == 405
        assert resp.content_type == content_type
        assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert "DELETE is not allowed" in await resp.text()


async def test_html_error_page_shows_the_request_id(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/a/nope") as resp:
        assert resp.status == 404
        assert request_id_on_page(await resp.text()) == resp.headers["X-Request-ID"]


async def test_html_404_page_comes_from_its_own_template(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/a/nope") as resp:
        assert resp.status == 404
        page = await resp.text()
    assert "Nothing is found at /a/nope." in page
    assert 'see <a href="/routes">every route</a>' in page  # only templates/errors/404.html says this


@pytest.mark.parametrize(("path", "content_type"), [("/a/boom", HTML), ("/a/api/boom", PROBLEM)])
async def test_500_shows_neither_exception_nor_traceback(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str, content_type: str
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get(path) as resp:
        assert resp.status == 500
        assert resp.content_type == content_type
        body = await resp.text()
    assert resp.headers["X-Request-ID"] in body
    for leak in (SECRET, "Traceback", "RuntimeError", "tree.py"):
        assert leak not in body


@pytest.mark.parametrize("path", ["/a/boom", "/a/api/boom"])
async def test_500_is_logged_once_with_traceback_and_request_id(
    aiohttp_client: AiohttpClient, make_app: MakeApp, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get(path) as resp:
        assert resp.status == 500
        rid = resp.headers["X-Request-ID"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert rid in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is RuntimeError
    assert SECRET in caplog.text  # the log, unlike the client, gets the whole story


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [
        ("/a/form", {"field": "x" * 200}, HTML),
        ("/a/api/echo", '{"field": "' + "x" * 200 + '"}', PROBLEM),
    ],
)
async def test_body_over_client_max_size_is_413(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str, body: object, content_type: str
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"client_max_size": 64}}))
    async with client.post(path, data=body) as resp:
        assert resp.status == 413
        assert resp.content_type == content_type
        assert resp.headers["X-Request-ID"] in await resp.text()


async def test_body_within_client_max_size_is_accepted(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"client_max_size": 64}}))
    async with client.post("/a/api/echo", data='{"field": "short"}') as resp:
        assert resp.status == 200
        assert await resp.json() == {"got": {"field": "short"}}


@pytest.mark.parametrize("path", ["/nope", "/a/nope", "/a/boom"])
async def test_json_client_on_html_level_gets_problem_json(
    aiohttp_client: AiohttpClient, make_app: MakeApp, path: str
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get(path, headers={"Accept": "application/json"}) as resp:
        assert resp.status in (404, 500)
        problem = await resp.json(content_type=PROBLEM)
    assert problem["status"] == resp.status
    assert problem["request_id"] == resp.headers["X-Request-ID"]


async def test_browser_on_html_level_gets_html(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    async with client.get("/a/nope", headers={"Accept": accept}) as resp:
        assert resp.status == 404
        assert resp.content_type == HTML


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe not utf-8"])
async def test_body_that_is_not_json_is_a_400_problem(
    aiohttp_client: AiohttpClient, make_app: MakeApp, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    client = await aiohttp_client(make_app())
    headers = {"Content-Type": "application/json"}
    async with client.post("/a/api/echo", data=body, headers=headers) as resp:
        assert resp.status == 400
        problem = await resp.json(content_type=PROBLEM)
    assert problem["detail"].startswith("The request body is not valid JSON")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the client's mistake, not ours


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        ("application/json; charset=no-such-charset", b"{}", "unknown encoding: no-such-charset"),
        ("application/json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
async def test_json_body_that_cannot_be_decoded_is_a_400_problem(
    aiohttp_client: AiohttpClient, make_app: MakeApp, content_type: str, body: bytes, detail: str
) -> None:
    client = await aiohttp_client(make_app())
    async with client.post("/a/api/echo", data=body, headers={"Content-Type": content_type}) as resp:
        assert resp.status == 400
        problem = await resp.json(content_type=PROBLEM)
    assert detail in problem["detail"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nbroken header line\r\n\r\nvalue\r\n--xyz--\r\n"),
        ("multipart/form-data", b"no boundary at all"),
        ("application/x-www-form-urlencoded; charset=no-such-charset", b"a=1"),
    ],
)
async def test_form_that_cannot_be_read_is_a_400_page(
    aiohttp_client: AiohttpClient, make_app: MakeApp, caplog: pytest.LogCaptureFixture, content_type: str, body: bytes
) -> None:
    client = await aiohttp_client(make_app())
    async with client.post("/a/form", data=body, headers={"Content-Type": content_type}) as resp:
        assert resp.status == 400
        assert resp.content_type == HTML
        assert "The request body could not be read" in await resp.text()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_body_with_broken_gzip_is_a_400_and_the_connection_closes(
    aiohttp_client: AiohttpClient, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(make_app())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    async with client.post("/a/api/echo", data=b"this is not gzip", headers=headers) as resp:
        assert resp.status == 400
        assert resp.headers["Connection"] == "close"  # the rest of the body is not worth reading
        problem = await resp.json(content_type=PROBLEM)
    assert problem["detail"].startswith("The request body could not be read")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("accept", ["application/JSON", "Application/Problem+JSON"])
async def test_json_accept_is_read_regardless_of_case(
    aiohttp_client: AiohttpClient, make_app: MakeApp, accept: str
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/a/nope", headers={"Accept": accept}) as resp:
        assert resp.status == 404
        assert resp.content_type == PROBLEM


async def test_json_error_outside_the_request_body_stays_500(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=[*sample_specs(), probe_spec()]))
    async with client.get("/probe/corrupt") as resp:
        assert resp.status == 500
        assert "stored value" not in await resp.text()


async def test_broken_error_template_still_answers_the_error(
    aiohttp_client: AiohttpClient, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    broken = str(FIXTURES / "templates_req_broken")
    client = await aiohttp_client(make_app({"nestor": {"templates_dir": broken}}))
    async with client.get("/a/nope") as resp:
        assert resp.status == 404
        assert resp.content_type == HTML
        assert request_id_on_page(await resp.text()) == resp.headers["X-Request-ID"]
    assert "error page for 404 could not be rendered" in caplog.text


async def test_reading_an_undeclared_setting_logs_what_to_declare(
    aiohttp_client: AiohttpClient, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(make_app(specs=[mount_sources.spec]))
    async with client.get("/sources/reads") as resp:
        assert resp.status == 500
        assert "undeclared" not in await resp.text()
    [record] = [r for r in caplog.records if r.name == "nestor.errors"]
    assert "read setting 'undeclared', which the serving sub-app does not declare" in record.getMessage()
