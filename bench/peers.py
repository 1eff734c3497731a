"""The same handler and nesting in aiohttp's peers, served by uvicorn (the `bench` extra).

`bench.peers:starlette_app`: Mount x3 and three pure-ASGI pass-through middlewares;
`bench.peers:fastapi_app`: include_router x3. Both answer GET /a/b/c/hello with "hello".
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route


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
