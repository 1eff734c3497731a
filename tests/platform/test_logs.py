"""The access log (text and JSON) and the logging set-up of `nestor serve`."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from nestor.logs import AccessLogger, JsonAccessLogger, JsonFormatter, configure_logging

from ..conftest import MakeApp


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
