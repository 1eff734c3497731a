"""The kernel's request path: request ids, security headers, handler time, access log, tokens."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from nestor import SubApp
from nestor.middleware import HANDLER_TIME, new_request_id

from ..conftest import MakeApp
from ..fixtures.req_probe import probe_spec
from ..fixtures.tree import sample_specs

FORMATS = [("html", "text/html"), ("json", "application/problem+json")]  # error_format, content type


def with_probe() -> list:
    return [*sample_specs(), probe_spec()]


def assert_security_headers(headers: Mapping[str, str]) -> None:
    """The headers of a document a browser renders: no sniffing, no framing, a strict CSP."""
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] in ("same-origin", "no-referrer", "strict-origin-when-cross-origin")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp


def assert_no_document_headers(headers: Mapping[str, str]) -> None:
    """The headers of data (JSON, CSS, a stream, a handshake): only nosniff applies."""
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert not {"X-Frame-Options", "Referrer-Policy", "Content-Security-Policy"} & set(headers)


# -- request id --------------------------------------------------------------------------------


async def test_request_id_is_generated_when_absent(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app(specs=with_probe()))
    async with client.get("/probe/") as resp:
        assert resp.status == 200
        rid = resp.headers["X-Request-ID"]
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", rid)


async def test_generated_request_ids_are_unique(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    seen = set()
    for _ in range(20):
        async with client.get("/a/") as resp:
            assert resp.status == 200
            seen.add(resp.headers["X-Request-ID"])
    assert len(seen) == 20


async def test_request_id_is_in_request_storage(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app(specs=with_probe()))
    async with client.get("/probe/") as resp:
        assert resp.status == 200
        assert (await resp.json())["request_id"] == resp.headers["X-Request-ID"]


@pytest.mark.parametrize("incoming", ["client-42", "a.b:c_D-9", "x" * 128])
async def test_valid_incoming_request_id_is_kept(
    aiohttp_client: AiohttpClient, make_app: MakeApp, incoming: str
) -> None:
    client = await aiohttp_client(make_app(specs=with_probe()))
    async with client.get("/probe/", headers={"X-Request-ID": incoming}) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-ID"] == incoming
        assert (await resp.json())["request_id"] == incoming


@pytest.mark.parametrize(
    "incoming", ["x" * 129, "has space", "<script>alert(1)</script>", "semi;colon", "a/b", ""]
)
async def test_invalid_incoming_request_id_is_replaced(
    aiohttp_client: AiohttpClient, make_app: MakeApp, incoming: str
) -> None:
    client = await aiohttp_client(make_app(specs=with_probe()))
    async with client.get("/probe/", headers={"X-Request-ID": incoming}) as resp:
        assert resp.status == 200
        rid = resp.headers["X-Request-ID"]
        assert (await resp.json())["request_id"] == rid
    assert rid and rid != incoming


async def test_streamed_response_carries_request_id_and_nosniff(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/a/stream", headers={"X-Request-ID": "streamed-1"}) as resp:
        assert resp.status == 200
        assert await resp.read() == b"chunk"
        assert resp.headers["X-Request-ID"] == "streamed-1"
        assert_no_document_headers(resp.headers)


async def test_websocket_handshake_carries_request_id_and_nosniff(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    # The 101 response is the handshake; a trace hook is the public way to see its headers.
    handshakes: list[aiohttp.ClientResponse] = []

    async def on_request_end(session: object, context: object, params: aiohttp.TraceRequestEndParams) -> None:
        handshakes.append(params.response)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    client = await aiohttp_client(make_app(), trace_configs=[trace])
    async with client.ws_connect("/a/api/ws", headers={"X-Request-ID": "socket-1"}) as ws:
        await ws.send_str("ping")
        assert await ws.receive_str() == "ping"
    assert [r.status for r in handshakes] == [101]
    assert handshakes[0].headers["X-Request-ID"] == "socket-1"
    assert_no_document_headers(handshakes[0].headers)


# -- security headers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/routes", 200),
        ("GET", "/a/nope", 404),
        ("DELETE", "/a/", 405),
        ("GET", "/a/boom", 500),
        ("HEAD", "/", 200),
    ],
)
async def test_every_html_response_has_request_id_and_security_headers(
    aiohttp_client: AiohttpClient, make_app: MakeApp, method: str, path: str, status: int
) -> None:
    client = await aiohttp_client(make_app())
    async with client.request(method, path) as resp:
        assert resp.status == status
        assert resp.headers["X-Request-ID"]
        assert resp.content_type == "text/html"
        assert_security_headers(resp.headers)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/a/", 200),
        ("GET", "/a/api/", 200),
        ("GET", "/routes.json", 200),
        ("GET", "/health", 200),
        ("GET", "/static/nestor.css", 200),
        ("GET", "/a/api/nope", 404),
        ("DELETE", "/a/api/", 405),
        ("GET", "/a/api/boom", 500),
    ],
)
async def test_data_responses_have_request_id_and_nosniff_only(
    aiohttp_client: AiohttpClient, make_app: MakeApp, method: str, path: str, status: int
) -> None:
    client = await aiohttp_client(make_app())
    async with client.request(method, path) as resp:
        assert resp.status == status
        assert resp.headers["X-Request-ID"]
        assert resp.content_type != "text/html"
        assert_no_document_headers(resp.headers)


# -- handler time and the access log -----------------------------------------------------------


async def test_handler_time_is_in_response_storage(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    app = make_app()
    seen: dict[str, float | None] = {}

    async def capture(request: web.Request, response: web.StreamResponse) -> None:
        seen[request.path] = response.get(HANDLER_TIME)

    app.on_response_prepare.append(capture)  # after the kernel's own: it sees what the kernel stored
    client = await aiohttp_client(app)
    for path in ("/a/api/", "/a/nope"):
        async with client.get(path) as resp:
            assert resp.status in (200, 404)
    assert set(seen) == {"/a/api/", "/a/nope"}
    for handler_time in seen.values():
        assert isinstance(handler_time, float) and handler_time >= 0


@pytest.mark.parametrize("mode", ["development", "production"])
@pytest.mark.parametrize("path", ["/a/boom", "/a/api/boom"])
async def test_error_pages_show_no_exception_details_in_either_mode(
    aiohttp_client: AiohttpClient, make_app: MakeApp, mode: str, path: str
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"mode": mode}}))
    async with client.get(path) as resp:
        assert resp.status == 500
        body = await resp.text()
    for detail in ("secret internals", "RuntimeError", "Traceback", "tree.py"):
        assert detail not in body


def test_forked_worker_does_not_repeat_the_parents_request_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one id, then leave without running anything of pytest's
        try:
            os.write(write, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id = os.read(read, 256).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child_id
    assert new_request_id() != child_id  # without a fresh prefix both would be the same next id


# -- malformed requests in the log ------------------------------------------------------------


async def test_malformed_request_is_logged_in_one_line_without_traceback(
    aiohttp_server: AiohttpServer, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    server = await aiohttp_server(make_app())
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /a/ HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"400"
    lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(lines) == 1
    assert lines[0].exc_info is None and "BadHttpMessage" in lines[0].getMessage()


# -- body timeout ----------------------------------------------------------------------------------


async def test_body_not_all_in_within_body_timeout_closes_the_connection(
    aiohttp_server: AiohttpServer, make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    server = await aiohttp_server(make_app({"nestor": {"body_timeout": 1}}))
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST /a/api/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\nX-Request-ID: slow-body-1\r\n\r\n{"half": '
    )
    await writer.drain()
    async with asyncio.timeout(10):  # far past body_timeout: only a server that never closes fails
        rest = await reader.read()
    writer.close()
    assert b"200 OK" not in rest  # never served: the connection was closed
    warnings = [r.getMessage() for r in caplog.records if r.name == "nestor.requests"]
    assert any("body_timeout" in m and "rid=slow-body-1" in m for m in warnings)


async def test_body_sent_in_time_is_served_with_body_timeout_set(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app({"nestor": {"body_timeout": 1}}))
    async with client.post("/a/api/echo", json={"whole": "x" * 100_000}) as resp:
        assert resp.status == 200
        assert (await resp.json())["got"]["whole"] == "x" * 100_000


@pytest.mark.parametrize(
    ("method", "path", "status", "location"),
    [
        ("GET", "/a", 301, "/a/"),
        ("GET", "/a/api?x=1", 301, "/a/api/?x=1"),
        ("HEAD", "/b", 301, "/b/"),
        ("POST", "/a", 404, None),  # /a/ takes only GET: nothing to redirect to
        ("GET", "/a/nope", 404, None),
    ],
)
async def test_path_without_its_trailing_slash_redirects_to_the_routed_one(
    aiohttp_client: AiohttpClient, make_app: MakeApp, method: str, path: str, status: int, location: str | None
) -> None:
    client = await aiohttp_client(make_app())
    async with client.request(method, path, allow_redirects=False) as resp:
        assert resp.status == status
        assert resp.headers.get("Location") == location


async def test_post_without_the_slash_is_a_308_that_keeps_the_method(
    aiohttp_client: AiohttpClient, make_app: MakeApp
) -> None:
    client = await aiohttp_client(make_app(specs=[slash_spec()]))
    async with client.post("/s/form", data={"x": "1"}, allow_redirects=False) as resp:
        assert resp.status == 308
        assert resp.headers["Location"] == "/s/form/"


async def test_a_handlers_own_404_is_not_redirected(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app(specs=[slash_spec()]))
    async with client.get("/s/gone", allow_redirects=False) as resp:
        assert resp.status == 404


def slash_spec() -> SubApp:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="gone")

    def create() -> web.Application:
        app = web.Application()
        app.add_routes([web.post("/form/", ok), web.get("/gone", gone), web.get("/gone/", ok)])
        return app

    return SubApp(name="s", prefix="/s", factory=create)
