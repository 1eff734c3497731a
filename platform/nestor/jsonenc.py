"""JSON for responses: orjson when installed, else the standard library, byte for byte the same.

Both write compact UTF-8 (`{"id":1,"text":"Thé"}`): the standard library with
`separators=(",", ":")` and `ensure_ascii=False`, which is what orjson writes. They accept
the same values: orjson is told to pass datetimes and dataclasses to the standard library's
rule (a TypeError: convert them yourself, e.g. `.isoformat()`), and the standard library
writes enums and UUIDs as orjson does (their value, their string). What orjson refuses and
the standard library takes (integers past 64 bits, non-string dict keys) goes to the
standard library. Known differences in bytes, not values: orjson writes 1e-05 as `0.00001`,
and NaN or infinities as `null` where the standard library writes `NaN` (not JSON).
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

try:
    import orjson
except ImportError:  # the optional `orjson` extra
    orjson = None

BACKEND = "orjson" if orjson is not None else "json"


def _default(obj: Any) -> Any:
    # orjson writes enums and UUIDs natively; do the same so output never depends on the install.
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, uuid.UUID):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _refuse(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def stdlib_dumpb(obj: Any) -> bytes:
    """Return `obj` as compact UTF-8 JSON, written by the standard library."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


if orjson is not None:
    _OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

    def orjson_dumpb(obj: Any) -> bytes:
        """Return `obj` as compact UTF-8 JSON, written by orjson (the standard library for what it refuses)."""
        try:
            return orjson.dumps(obj, default=_refuse, option=_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError: let the standard library accept or refuse it
            return stdlib_dumpb(obj)

    dumpb = orjson_dumpb
else:
    orjson_dumpb = None
    dumpb = stdlib_dumpb


def dumps(obj: Any) -> str:
    """Return `obj` as compact JSON text: the `dumps=` of `web.json_response` and `ws.send_json`."""
    return dumpb(obj).decode()


def json_response(
    data: Any,
    *,
    status: int = 200,
    reason: str | None = None,
    headers: Mapping[str, str] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    """Return `web.json_response(data)` with the fast encoder, and no str round trip (a msgspec Struct too)."""
    return web.Response(
        body=msgspec.json.encode(data) if isinstance(data, msgspec.Struct) else dumpb(data), status=status, reason=reason, headers=headers, content_type=content_type, charset="utf-8"
    )
