"""The hello JSON API at /hello/api (errors as application/problem+json)."""

from aiohttp import web

from nestor import json_response

from .app import MAX_NAME
from .settings import GREETING


def create_api_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/greeting", greeting, name="greeting")])
    return app


async def greeting(request: web.Request) -> web.Response:
    name = request.query.get("name", "world").strip() or "world"
    if len(name) > MAX_NAME:
        raise web.HTTPBadRequest(text=f"name is {len(name)} characters long; at most {MAX_NAME} are allowed")
    return json_response({"greeting": f"{request.config_dict[GREETING]}, {name}!"})
