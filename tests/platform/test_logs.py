"""The access log (text and JSON) and the logging set-up of `nestor serve`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
import time
from pathlib import Path

import aiohttp

import pytest
from pytest_aiohttp import AiohttpClient, AiohttpServer

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from nestor import accesslog
from nestor.accesslog import Serving
from nestor.logs import TEXT_FORMAT, AccessLogger, JsonAccessLogger, JsonFormatter, LogWriter, configure_logging
from nestor.middleware import REQUEST_ID

from ..conftest import MakeApp
from ..fixtures.served import serve


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


# -- the writer ---------------------------------------------------------------------------------


class Stuck(io.StringIO):
    """A stream whose writes wait until released: a full pipe, a stalled disk."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def write(self, text: str) -> int:
        self.released.wait(10)
        return super().write(text)


def test_a_stuck_stream_never_blocks_the_caller_and_drops_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LogWriter, "MAX_PENDING", 100)
    stream = Stuck()
    writer = LogWriter(stream)
    started = time.perf_counter()
    for n in range(1000):
        writer.put(f"line {n}\n")
    assert time.perf_counter() - started < 0.5  # a thousand puts, the stream stuck all along
    stream.released.set()
    writer.close()
    lines = stream.getvalue().splitlines()
    assert lines[-1].endswith("log line(s) dropped: the log's stream did not keep up")
    kept = [line for line in lines if line.startswith("line ")]
    assert len(kept) >= 100 and kept == sorted(kept, key=lambda line: int(line.split()[1]))


def test_close_writes_every_queued_line() -> None:
    stream = io.StringIO()
    writer = LogWriter(stream)
    for n in range(5000):
        writer.put(f"{n}\n")
    writer.close()
    assert stream.getvalue().splitlines() == [str(n) for n in range(5000)]


@pytest.mark.parametrize(
    ("text_format", "prefix"),
    [(TEXT_FORMAT, ""), ("%(asctime)s %(levelname)s [worker 3 %(process)d] %(name)s: %(message)s", "[worker 3 ")],
)
def test_served_access_lines_keep_the_log_format(
    monkeypatch: pytest.MonkeyPatch, text_format: str, prefix: str
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        access = configure_logging("INFO", "text", text_format)
        stream = io.StringIO()
        monkeypatch.setattr(Serving.writer, "stream", stream)
        request = make_mocked_request("GET", "/a/api/items/3?x=1")
        request[REQUEST_ID] = "rid-1"
        monkeypatch.setattr(accesslog, "served_by", lambda match: ("a.api", None))
        access(logging.getLogger("aiohttp.access"), "").log(request, web.Response(text="hi"), 0.0025)
        logging.getLogger("nestor").warning("an ordinary line")
        Serving.writer.close()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        Serving.writer = None
    served, ordinary = stream.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(stamp + rf" INFO {re.escape(prefix)}.*aiohttp\.access: None \"GET /a/api/items/3\?x=1\" 200 0 2\.5ms handler=- app=a\.api rid=rid-1", served)
    assert re.fullmatch(stamp + rf" WARNING {re.escape(prefix)}.*nestor: an ordinary line", ordinary)


@pytest.mark.parametrize(
    "agent", ['quote " and backslash \\ inside', "tab\tand \x7f del", "Thé naïve ☃", "</script>{\"x\": 1}"]
)
def test_served_json_lines_hold_any_user_agent_and_path_exactly(monkeypatch: pytest.MonkeyPatch, agent: str) -> None:
    # The writer builds JSON lines itself (not through json.dumps): whatever a client sends must come
    # back out of json.loads unchanged, and the line must stay one line.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    target = '/a/api/items/3?q=%22x%22&path=a\\b&name=Th%C3%A9'
    try:
        access = configure_logging("INFO", "json")
        stream = io.StringIO()
        monkeypatch.setattr(Serving.writer, "stream", stream)
        request = make_mocked_request("GET", target, headers={"User-Agent": agent})
        request[REQUEST_ID] = "rid-7"
        monkeypatch.setattr(accesslog, "served_by", lambda match: ("a.api", "a:api:item"))
        response = web.Response(text="hi")
        access(logging.getLogger("aiohttp.access"), "").log(request, response, 0.0125)
        Serving.writer.close()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        Serving.writer = None
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["user_agent"] == agent
    assert record["path"] == target
    assert record["message"] == f'"GET {target}" 200'
    assert (record["duration_ms"], record["handler_ms"], record["request_id"]) == (12.5, None, "rid-7")
    assert (record["app"], record["route"]) == ("a.api", "a:api:item")
    assert list(record)[:5] == ["time", "level", "logger", "process", "message"]


def test_json_lines_carry_an_iso_time_with_its_zone() -> None:
    record = logging.LogRecord("nestor", logging.INFO, __file__, 1, "hello", (), None)
    line = json.loads(JsonFormatter().format(record))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])


# -- JSON mode, as nestor serve writes it ------------------------------------------------------------


async def test_json_mode_writes_only_json_with_fields_for_requests_errors_and_websockets(tmp_path: Path) -> None:
    served = await serve(tmp_path, 'subapps = ["polls", "hello"]\nlog_format = "json"')
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(served.url + "/hello/api/greeting", headers={"User-Agent": "probe/1.0"}) as resp:
                assert resp.status == 200
            async with session.ws_connect(served.url + "/polls/1/live") as ws:
                await ws.receive_json()  # the counts, sent as it opens
                await ws.send_str("ignored")
                await ws.close()
    finally:
        assert await served.stop() == 0
    records = [json.loads(line) for line in served.log().splitlines()]  # every line is one JSON object
    assert any(r["message"].startswith("======== Running on http://127.0.0.1:") for r in records)
    [greeting] = [r for r in records if r.get("path") == "/hello/api/greeting"]
    assert (greeting["route"], greeting["app"], greeting["user_agent"]) == ("hello:api:greeting", "hello.api", "probe/1.0")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", greeting["time"])
    [socket] = [r for r in records if r.get("path") == "/polls/1/live"]
    assert (socket["status"], socket["messages_in"], socket["messages_out"], socket["close_code"]) == (101, 1, 1, 1000)


async def test_json_mode_start_up_failure_is_one_json_line(tmp_path: Path) -> None:
    unreachable = "postgresql+asyncpg://nestor@127.0.0.1:1/nestor"
    with pytest.raises(RuntimeError) as failed:
        await serve(tmp_path, f'database_url = "{unreachable}"\nlog_format = "json"')
    log = str(failed.value).split("\n", 1)[1]
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert records[-1]["level"] == "ERROR"
    assert records[-1]["message"].startswith("nestor: error: database_url postgresql+asyncpg://nestor@127.0.0.1:1/nestor: cannot connect")


def test_an_error_record_carries_its_request_id_as_a_field() -> None:
    record = logging.LogRecord("nestor.errors", logging.ERROR, __file__, 1, "failed", (), None)
    record.request_id = "rid-9"
    assert json.loads(JsonFormatter().format(record))["request_id"] == "rid-9"


def test_the_clock_gives_each_millisecond_its_own_stamp_across_seconds() -> None:
    from datetime import UTC, datetime

    from nestor.logwriter import Clock

    iso, text = Clock(iso=True), Clock(iso=False)
    for now in (1764638231.2534, 1764638231.2539, 1764638231.9991, 1764638232.0004, 1764638232.0004, 1764638290.5):
        second, ms = int(now), int(now * 1000) % 1000
        assert iso(now) == f"{datetime.fromtimestamp(second, UTC):%Y-%m-%dT%H:%M:%S}.{ms:03d}+00:00"
        assert text(now) == f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(second))},{ms:03d}"
