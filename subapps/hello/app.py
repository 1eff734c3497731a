"""The hello page: reads a GET query, shows config with its parent fallback."""

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from nestor import PAGE_SIZE, REQUEST_ID

from .settings import GREETING

MAX_NAME = 100


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/", index, name="index")])
    return app


@aiohttp_jinja2.template("hello/index.html")
async def index(request: web.Request) -> dict[str, Any]:
    name = request.query.get("name", "").strip()
    if len(name) > MAX_NAME:
        raise web.HTTPBadRequest(text=f"name is {len(name)} characters long; at most {MAX_NAME} are allowed")
    return {
        "name": name,
        "greeting": request.config_dict[GREETING],
        "page_size": request.config_dict[PAGE_SIZE],
        "request_id": request[REQUEST_ID],
    }
