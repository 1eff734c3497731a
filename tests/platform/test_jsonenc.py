"""JSON responses: the same bytes with orjson or with the standard library."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from nestor import jsonenc

REPO = Path(__file__).resolve().parents[2]


class Colour(enum.Enum):
    RED = "red"


# The shapes the sub-apps and the kernel answer with, and the characters JSON must escape.
SHAPES: dict[str, Any] = {
    "question": {
        "id": 7,
        "text": "Thé ou café ? “Quotes” & <tags>",
        "created_at": "2026-01-02T03:04:05.123456+00:00",
        "total_votes": 3,
        "choices": [{"id": 1, "text": "Thé", "votes": 2}, {"id": 2, "text": "Café", "votes": 1}],
    },
    "results": {
        "question_id": 7,
        "text": "Which?",
        "total": 3,
        "choices": [{"id": 1, "votes": 1, "percent": 33.3}, {"id": 2, "votes": 2, "percent": 66.7},
                    {"id": 3, "votes": 0, "percent": 0.0}, {"id": 4, "votes": 3, "percent": 100.0}],
    },
    "list page": {"items": [], "total": 0, "limit": 50, "offset": 0},
    "problem": {
        "type": "about:blank", "title": "Unprocessable Content", "status": 422,
        "detail": "The question is not valid; see errors.", "instance": "/polls/api/questions",
        "request_id": "a1b2c3d4e5f6-1f", "errors": {"choices": "Choice 'Tea' is given twice."},
    },
    "health": {"status": "ok", "checks": {"database": {"ready": True}, "bus": {"ready": False, "error": "x"}},
               "subapps": {}, "not_ready": []},
    "route": {"method": "GET", "path": "/polls/{question_id}", "name": None, "apps": ["nestor", "polls"]},
    "escapes": ['"\\/\n\r\t\b\f', "\x00\x01\x1f\x7f", "\u2028\u2029", "😀 é 中文"],
    "numbers": [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, 1e16, 1e300, 0.1 + 0.2],
    "past 64 bits": [2**64, -(2**70)],
    "integer keys": {1: "one", 2: "two"},
    "enum and uuid": {"colour": Colour.RED, "id": uuid.UUID(int=1)},
    "tuple": ("a", 1, None, True, False),
    "empty": [{}, [], ""],
}


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_orjson_and_the_standard_library_write_the_same_bytes(shape: Any) -> None:
    if jsonenc.orjson_dumpb is None:
        pytest.skip("orjson is not installed (pip install 'nestor[orjson]')")
    assert jsonenc.orjson_dumpb(shape) == jsonenc.stdlib_dumpb(shape)


@pytest.mark.parametrize(
    "name", ["question", "results", "list page", "problem", "health", "route", "escapes", "numbers"]
)
def test_output_reads_back_as_the_same_value(name: str) -> None:
    assert json.loads(jsonenc.dumpb(SHAPES[name])) == SHAPES[name]


def test_output_is_compact_utf8() -> None:
    assert jsonenc.dumpb({"text": "Thé", "ids": [1, 2]}) == '{"text":"Thé","ids":[1,2]}'.encode()


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "value",
    [datetime.datetime(2026, 1, 2), datetime.date(2026, 1, 2), Point(1), {1, 2}, b"bytes", object()],
    ids=["datetime", "date", "dataclass", "set", "bytes", "object"],
)
@pytest.mark.parametrize("encoder", ["orjson_dumpb", "stdlib_dumpb"])
def test_both_encoders_refuse_what_json_cannot_write(encoder: str, value: Any) -> None:
    encode = getattr(jsonenc, encoder)
    if encode is None:
        pytest.skip("orjson is not installed")
    with pytest.raises(TypeError, match="is not JSON serializable"):
        encode({"value": value})


def test_output_is_the_same_without_orjson_installed() -> None:
    # `sys.modules[name] = None` is how Python marks a module as not importable.
    program = (
        "import sys; sys.modules['orjson'] = None; from nestor import jsonenc; "
        "from tests.platform.test_jsonenc import SHAPES; "
        "sys.stdout.buffer.write(jsonenc.BACKEND.encode() + b'\\n' + jsonenc.dumpb(SHAPES))"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    backend, _, output = result.stdout.partition(b"\n")
    assert backend == b"json"
    assert output == jsonenc.dumpb(SHAPES)


async def test_json_response_answers_like_aiohttps_json_response(aiohttp_client: AiohttpClient) -> None:
    body = SHAPES["problem"]

    async def plain(request: web.Request) -> web.Response:
        return web.json_response(body, status=422, content_type="application/problem+json")

    async def fast(request: web.Request) -> web.Response:
        return jsonenc.json_response(body, status=422, content_type="application/problem+json")

    app = web.Application()
    app.add_routes([web.get("/plain", plain), web.get("/fast", fast)])
    client = await aiohttp_client(app)
    answers = []
    for path in ("/plain", "/fast"):
        async with client.get(path) as resp:
            answers.append((resp.status, resp.headers["Content-Type"], await resp.json(content_type=None)))
    assert answers[0] == answers[1] == (422, "application/problem+json; charset=utf-8", body)
