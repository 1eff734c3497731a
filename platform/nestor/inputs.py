"""Reading what a client sends: JSON and form bodies, integer query and path values.

Each helper answers bad input with the status a client can act on, in the serving level's
error format (the kernel middleware renders the exception): 415 for a body that is not
JSON by its content type, 413 past the size limit, 400 for a body that cannot be decoded
or a query value that is not a number, 404 for a path value no resource can have, and
422 (`invalid`) for a well-formed body whose fields break the rules.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from . import jsonenc
from .config import Setting
from .errors import PROBLEM_JSON, UNDECODABLE, describe, problem, title
from .middleware import REQUEST_ID

MAX_INT = 2**31 - 1  # the largest INTEGER of PostgreSQL: no stored id can be larger


async def read_json(request: web.Request, max_bytes: int | Setting[int]) -> dict[str, Any]:
    """Return the JSON object in an API request's body; 415, 413, 400 or 422 saying what is wrong.

    `max_bytes` caps the body: a number, or a setting read through `request.config_dict`
    (the 413 then names the setting to raise).
    """
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise web.HTTPUnsupportedMediaType(
            text=f"Send the body as JSON with 'Content-Type: application/json' (got {content_type!r})."
        )
    most = request.config_dict[max_bytes] if isinstance(max_bytes, Setting) else max_bytes
    setting = max_bytes if isinstance(max_bytes, Setting) else None
    if request.content_length is not None and request.content_length > most:
        raise _too_large(setting, most, request.content_length)
    body = await request.read()  # bounded by the server's client_max_size too
    if len(body) > most:
        raise _too_large(setting, most, len(body))
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # bad UTF-8 is a ValueError too
        raise web.HTTPBadRequest(text=f"The body is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise web.HTTPUnprocessableEntity(
            text=f"The body must be a JSON object, not {type(data).__name__}."
        )
    return data


async def read_form(request: web.Request) -> MultiDictProxy[str | web.FileField]:
    """Return the posted form (urlencoded or multipart); 400 saying why when it cannot be read."""
    try:
        return await request.post()
    except (*UNDECODABLE, web.RequestPayloadError) as e:
        raise web.HTTPBadRequest(text=f"The form could not be read: {describe(e)}") from e


def _too_large(setting: Setting[int] | None, most: int, size: int) -> web.HTTPRequestEntityTooLarge:
    named = f" (setting {setting.name})" if setting is not None else ""
    return web.HTTPRequestEntityTooLarge(
        max_size=most,
        actual_size=size,
        text=f"The body has {size} bytes; this API accepts at most {most}{named}.",
    )


def invalid(request: web.Request, detail: str, errors: dict[str, str]) -> web.Response:
    """Return a 422 problem+json whose `errors` member says what is wrong with each field."""
    body = problem(422, title(422), detail, request.path, request[REQUEST_ID], errors=errors)
    return jsonenc.json_response(body, status=422, content_type=PROBLEM_JSON)


def query_int(
    request: web.Request, name: str, default: int, *, minimum: int = 0, maximum: int = MAX_INT
) -> int:
    """Return the integer query parameter `name` (`default` when absent); 400 naming it when invalid."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()):  # isdigit alone takes '٣' and '²'
        raise web.HTTPBadRequest(text=f"{name}={raw[:40]!r} is not a whole number.")
    value = int(raw) if len(raw) <= 18 else maximum + 1
    if not minimum <= value <= maximum:
        raise web.HTTPBadRequest(
            text=f"{name} must be at least {minimum} and at most {maximum}; got {raw[:40]}."
        )
    return value


def path_int(request: web.Request, name: str, *, minimum: int = 1, maximum: int = MAX_INT) -> int:
    """Return the integer path value `name` (`question_id`); 404 saying why when no resource can have it.

    The messages name the thing: `Question id 'abc' is not an integer.`, `There is no question 0.`
    """
    raw = request.match_info[name]
    noun = name.removesuffix("_id").replace("_", " ")
    if not (raw.isascii() and raw.isdigit()):
        label = f"{noun} id" if name.endswith("_id") else noun
        raise web.HTTPNotFound(text=f"{label.capitalize()} {raw[:40]!r} is not an integer.")
    if len(raw) > 18 or not minimum <= int(raw) <= maximum:
        raise web.HTTPNotFound(text=f"There is no {noun} {raw[:40]}.")
    return int(raw)
