"""The apps under test: the same handlers in bare aiohttp, in hand-built trees, and in Nestor.

Bare apps are built here and served by `python -m bench.servers`; Nestor's are sub-app specs
served by the real `nestor serve` (config written by bench.run): `bench.trees:depth3`, and
`bench.trees:s0` … `bench.trees:s999` for route resolution (made on demand).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from nestor import SubApp, jsonenc

TEMPLATES = Path(__file__).resolve().parent / "templates"
# The polls API's question, as /polls/api/questions/{id} answers it.
PAYLOAD: dict[str, Any] = {
    "id": 7,
    "text": "What do you like best in aiohttp?",
    "created_at": "2026-01-02T03:04:05.123456+00:00",
    "total_votes": 1234,
    "choices": [
        {"id": 1, "text": "Sub-apps", "votes": 500},
        {"id": 2, "text": "Middlewares", "votes": 400},
        {"id": 3, "text": "Websockets", "votes": 300},
        {"id": 4, "text": "Signals", "votes": 34},
    ],
}
ITEMS = [{"id": i, "name": f"Choice <{i}>", "votes": i * 7, "note": "Thé & café"} for i in range(20)]


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def json_std(request: web.Request) -> web.Response:
    return web.json_response(PAYLOAD)


async def json_fast(request: web.Request) -> web.Response:
    return jsonenc.json_response(PAYLOAD)


@aiohttp_jinja2.template("bench/page.html")
async def page(request: web.Request) -> dict[str, Any]:
    return {"title": "Bench page", "items": ITEMS}


def leaf_routes() -> list[web.RouteDef]:
    return [
        web.get("/hello", hello, name="hello"),
        web.get("/json", json_std, name="json"),
        web.get("/json-fast", json_fast, name="json_fast"),
        web.get("/page", page, name="page"),
    ]


# -- bare aiohttp --------------------------------------------------------------------------


def bare() -> web.Application:
    """One flat app: /hello, /json, /json-fast, /page (aiohttp-jinja2, autoescape on)."""
    app = web.Application()
    app.add_routes(leaf_routes())
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)
    return app


def bare_depth3(middlewares: list[Any] | None = None) -> web.Application:
    """/a/b/c/hello in three nested sub-apps, nothing else."""
    root, a, b, c = web.Application(middlewares=middlewares or []), web.Application(), web.Application(), web.Application()
    c.add_routes(leaf_routes())
    b.add_subapp("/c", c)
    a.add_subapp("/b", b)
    root.add_subapp("/a", a)
    return root


REQUEST_ID = web.RequestKey("bench.request_id", str)
HANDLER_TIME = web.ResponseKey("bench.handler_time", float)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'",
}


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[REQUEST_ID] = request.headers.get("X-Request-ID") or uuid.uuid4().hex
    return await handler(request)


@web.middleware
async def timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    response = await handler(request)
    response[HANDLER_TIME] = time.perf_counter() - start
    return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.json_response({"status": exc.status, "request_id": request[REQUEST_ID]}, status=exc.status)


@web.middleware
async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Request-ID"] = request[REQUEST_ID]


def naive_depth3() -> web.Application:
    """The same tree with Nestor's behaviours done the naive way (PERF.md): a middleware per
    concern, a uuid4 per request, and a signal sending the id."""
    root = bare_depth3(middlewares=[request_id, timing, errors, security])
    root.on_response_prepare.append(send_request_id)
    return root


@web.middleware
async def pass_through(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await handler(request)


async def nothing(request: web.Request, response: web.StreamResponse) -> None:
    return None


def floor_depth3() -> web.Application:
    """The same tree with one pass-through middleware and one empty `on_response_prepare`
    handler: what aiohttp charges any kernel built on one middleware and one signal."""
    root = bare_depth3(middlewares=[pass_through])
    root.on_response_prepare.append(nothing)
    return root


def bare_many(count: int) -> web.Application:
    """`count` sub-apps of 5 routes each, mounted by hand (start-up reference)."""
    root = web.Application()
    for i in range(count):
        root.add_subapp(f"/s{i}", many_app())
    return root


# -- Nestor ----------------------------------------------------------------------------------


def empty_app() -> web.Application:
    return web.Application()


def leaf_app() -> web.Application:
    app = web.Application()
    app.add_routes(leaf_routes())
    return app


depth3 = SubApp(
    name="a",
    prefix="/a",
    factory=empty_app,
    children=[
        SubApp(
            name="b",
            prefix="/b",
            factory=empty_app,
            children=[SubApp(name="c", prefix="/c", factory=leaf_app, templates=TEMPLATES)],
        )
    ],
)


def many_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.get(f"/r{i}", hello, name=f"r{i}") for i in range(5)])
    return app


def __getattr__(name: str) -> SubApp:
    # `bench.trees:s42` is a sub-app at /s42 with routes /r0 … /r4: config can list any number.
    if re.fullmatch(r"s\d+", name):
        return SubApp(name=name, prefix=f"/{name}", factory=many_app)
    raise AttributeError(name)


# -- polls votes without Nestor ----------------------------------------------------------------


def bare_votes(database_url: str) -> web.Application:
    """POST /votes/{question_id} doing what the polls API does, in one bare app (same engine setup)."""
    from nestor.db import engine_for  # WAL and busy timeout on SQLite, as Nestor sets them
    from nestor_subapps.polls import db, votes

    engine_key = web.AppKey("bench.engine", object)

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        engine = engine_for(database_url, Path.cwd())
        async with engine.begin() as conn:
            await conn.run_sync(db.metadata.create_all)
        await db.seed(engine)
        app[engine_key] = engine
        yield
        await engine.dispose()

    async def vote(request: web.Request) -> web.Response:
        question_id = int(request.match_info["question_id"])
        choice = (await request.json())["choice"]
        question = await db.vote(request.app[engine_key], question_id, choice)
        return web.json_response({**votes.counts(question), "choice": choice}, status=201)

    app = web.Application()
    app.cleanup_ctx.append(engine_ctx)
    app.router.add_post(r"/votes/{question_id:\d+}", vote)
    return app
