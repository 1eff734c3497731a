"""The kernel's request path: request ids, security headers, handler time, access log, tokens."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Mapping

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient, AiohttpServer

from nestor import SubApp, require_token
from nestor.logs import AccessLogger, JsonAccessLogger, JsonFormatter, configure_logging
from nestor.middleware import HANDLER_TIME, new_request_id

from ..conftest import MakeApp
from ..fixtures.req_probe import probe_spec
from ..fixtures.req_token import hidden_spec
from ..fixtures.tree import API_TOKEN, sample_specs

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


async def access_records(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    """Return the access log records once `count` are there (aiohttp logs after sending)."""
    for _ in range(200):
        found = [r for r in caplog.records if r.name == "aiohttp.access"]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    return found


# aiohttp_client(app, server_kwargs=...) drops server_kwargs on aiohttp 3.14 (BaseTestServer
# ignores them), so these tests start the server with aiohttp_server(app, **kwargs).
async def test_access_log_names_request_id_sub_app_and_handler_time(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    make_app: MakeApp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    client = await aiohttp_client(await aiohttp_server(make_app(), access_log_class=AccessLogger))
    async with client.get("/a/api/items/3", headers={"X-Request-ID": "logged-1"}) as resp:
        assert resp.status == 200
    [record] = await access_records(caplog, 1)
    line = record.getMessage()
    assert '"GET /a/api/items/3" 200' in line
    assert "rid=logged-1" in line
    assert "app=a.api" in line
    assert re.search(r"handler=\d+\.\dms", line)


async def test_json_access_log_has_request_id_sub_app_and_handler_time(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    make_app: MakeApp,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    client = await aiohttp_client(await aiohttp_server(make_app(), access_log_class=JsonAccessLogger))
    async with client.get("/a/api/items/3?x=1", headers={"X-Request-ID": "logged-2"}) as resp:
        assert resp.status == 200
    [record] = await access_records(caplog, 1)
    line = json.loads(JsonFormatter().format(record))
    assert line["logger"] == "aiohttp.access"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/a/api/items/3?x=1", 200)
    assert (line["request_id"], line["app"]) == ("logged-2", "a.api")
    assert isinstance(line["handler_ms"], float) and line["handler_ms"] >= 0
    assert line["duration_ms"] >= line["handler_ms"]


def test_json_formatter_writes_one_object_per_record_with_the_exception() -> None:
    try:
        raise ValueError("bad value")
    except ValueError as e:
        exc_info = (type(e), e, e.__traceback__)
        record = logging.LogRecord("nestor.errors", logging.ERROR, __file__, 1, "failed %s", ("x",), exc_info)
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert (line["level"], line["logger"], line["message"]) == ("ERROR", "nestor.errors", "failed x")
    assert "ValueError: bad value" in line["exception"]


@pytest.mark.parametrize(("log_format", "logger_class"), [("text", AccessLogger), ("json", JsonAccessLogger)])
def test_log_format_chooses_the_access_logger(log_format: str, logger_class: type) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert configure_logging("INFO", log_format) is logger_class
        [handler] = root.handlers
        assert isinstance(handler.formatter, JsonFormatter) is (log_format == "json")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format must be one of text, json"):
        configure_logging("INFO", "xml")


@pytest.mark.parametrize(("level", "enabled"), [(logging.INFO, True), (logging.WARNING, False)])
def test_access_log_line_is_built_only_when_info_is_on(
    caplog: pytest.LogCaptureFixture, level: int, enabled: bool
) -> None:
    # aiohttp asks `enabled` once per connection and skips log() entirely when it is False.
    caplog.set_level(level, logger="tests.access")
    assert AccessLogger(logging.getLogger("tests.access"), "").enabled is enabled


# -- require_token -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Basic czNjcmV0", 401),
        ("Bearer ", 401),
        ("Bearer wrong", 403),
        ("Bearer s3cre", 403),
        ("Bearer s3cret", 200),
        ("bearer s3cret", 200),
    ],
)
async def test_token_protected_app_checks_bearer_token(
    aiohttp_client: AiohttpClient, make_app: MakeApp, authorization: str | None, status: int
) -> None:
    client = await aiohttp_client(make_app({"b": {"api_token": "s3cret"}}))
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with client.get("/b/", headers=headers) as resp:
        assert resp.status == status


@pytest.mark.parametrize(("error_format", "content_type"), FORMATS)
async def test_missing_token_is_401_with_challenge_in_levels_format(
    aiohttp_client: AiohttpClient, make_app: MakeApp, error_format: str, content_type: str
) -> None:
    client = await aiohttp_client(make_app({"b": {"api_token": "s3cret", "error_format": error_format}}))
    async with client.get("/b/") as resp:
        assert resp.status == 401
        assert resp.content_type == content_type
        assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        assert "Authorization: Bearer" in await resp.text()


@pytest.mark.parametrize(("error_format", "content_type"), FORMATS)
async def test_wrong_token_is_403_in_levels_format(
    aiohttp_client: AiohttpClient, make_app: MakeApp, error_format: str, content_type: str
) -> None:
    client = await aiohttp_client(make_app({"b": {"api_token": "s3cret", "error_format": error_format}}))
    async with client.get("/b/", headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 403
        assert resp.content_type == content_type
        assert "s3cret" not in await resp.text()


async def test_token_setting_unset_leaves_app_open(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app())
    async with client.get("/b/") as resp:
        assert resp.status == 200


async def test_token_is_read_from_the_nearest_level(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app({"nestor": {"api_token": "root-token"}}))
    async with client.get("/b/", headers={"Authorization": "Bearer root-token"}) as resp:
        assert resp.status == 200
    async with client.get("/b/") as resp:
        assert resp.status == 401


async def test_hidden_app_is_404_while_token_unset(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app(specs=[hidden_spec()]))
    async with client.get("/hidden/") as resp:
        assert resp.status == 404


async def test_hidden_app_opens_with_its_token(aiohttp_client: AiohttpClient, make_app: MakeApp) -> None:
    client = await aiohttp_client(make_app({"hidden": {"hidden_token": "t0k"}}, specs=[hidden_spec()]))
    async with client.get("/hidden/", headers={"Authorization": "Bearer t0k"}) as resp:
        assert resp.status == 200
        assert await resp.text() == "behind the token"


def test_require_token_refuses_unknown_when_unset() -> None:
    with pytest.raises(ValueError, match="when_unset must be 'open' or 'hidden'"):
        require_token(API_TOKEN, when_unset="closed")


# -- production mode ---------------------------------------------------------------------------


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
