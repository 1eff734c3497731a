"""The same handler and nesting in aiohttp's peers, served by uvicorn (the `bench` extra).

`bench.peers:starlette_app`: Mount x3 and three pure-ASGI pass-through middlewares;
`bench.peers:fastapi_app`: include_router x3. Both answer GET /a/b/c/hello with "hello".
`bench.peers:greeter_app`: README's greeter handler under Mount x2 (`/greeter/api/hello`) with a
pure-ASGI request-id middleware, for the `product` section (uvicorn on its defaults).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from nestor.jsonenc import dumpb  # orjson when installed, as in Nestor


class PassThrough:
    """A pure-ASGI middleware that does nothing (Starlette's cheapest kind)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


starlette_app = Starlette(
    routes=[Mount("/a", routes=[Mount("/b", routes=[Mount("/c", routes=[Route("/hello", hello)])])])],
    middleware=[Middleware(PassThrough) for _ in range(3)],
)


def _fastapi() -> FastAPI:
    app, a, b, c = FastAPI(), APIRouter(), APIRouter(), APIRouter()

    @c.get("/hello", response_class=PlainTextResponse)
    async def fastapi_hello() -> PlainTextResponse:
        return PlainTextResponse("hello")

    b.include_router(c, prefix="/c")
    a.include_router(b, prefix="/b")
    app.include_router(a, prefix="/a")
    return app


fastapi_app = _fastapi()


class RequestId:
    """A pure-ASGI middleware adding `X-Request-ID` to every response (a process prefix and a
    counter, as Nestor makes them)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.prefix, self.counter = os.urandom(6).hex(), itertools.count(1)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = f"{self.prefix}-{next(self.counter):x}".encode()

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        await self.app(scope, receive, send_with_id)


class FastJSONResponse(JSONResponse):
    """Starlette's documented way to change the JSON encoder: the one Nestor's greeter uses."""

    def render(self, content: Any) -> bytes:
        return dumpb(content)


async def greeter_hello(request: Request) -> JSONResponse:
    # README's greeter handler; its two settings live on the app's state (Starlette's config_dict).
    name = request.query_params.get("name", "world")
    state = request.app.state
    return FastJSONResponse({"text": f"{state.greeting}, {name}!", "page_size": state.page_size})


def _greeter() -> Starlette:
    app = Starlette(
        routes=[Mount("/greeter", routes=[Route("/", greeter_hello),
                                          Mount("/api", routes=[Route("/hello", greeter_hello)])])],
        middleware=[Middleware(RequestId)],
    )
    app.state.greeting, app.state.page_size = "Hello", 20
    return app


greeter_app = _greeter()
