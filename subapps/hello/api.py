"""The hello JSON API at /hello/api (errors as application/problem+json)."""

from aiohttp import web

from nestor import json_response, operation

from . import schemas
from .app import MAX_NAME
from .settings import GREETING


def create_api_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/greeting", greeting, name="greeting")])
    return app


@operation(query=schemas.GreetingQuery, responses={200: schemas.Greeting})
async def greeting(request: web.Request, query: schemas.GreetingQuery) -> web.Response:
    """Greet `name` with this level's greeting."""
    name = query.name.strip() or "world"
    if len(name) > MAX_NAME:
        raise web.HTTPBadRequest(text=f"name is {len(name)} characters long; at most {MAX_NAME} are allowed")
    return json_response({"greeting": f"{request.config_dict[GREETING]}, {name}!"})
