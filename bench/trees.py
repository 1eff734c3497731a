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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

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


# -- the product without Nestor ----------------------------------------------------------------
# What `nestor serve` serves on the default nestor.toml plus README's greeter, done by hand in
# bare aiohttp for the `product` section: the same handlers, queries, templates and HTML.

KERNEL_TEMPLATES = Path(__file__).resolve().parents[1] / "platform" / "nestor" / "templates"
KERNEL_STATIC = KERNEL_TEMPLATES.parent / "static"
GREETING = web.AppKey("bench.greeting", str)
PAGE_SIZE = web.AppKey("bench.page_size", int)
MAX_LIMIT = 100  # polls' max_limit default


async def greeter_hello(request: web.Request) -> web.Response:
    # README's greeter handler, line for line; its two settings are AppKeys set on the root.
    name = request.query.get("name", "world")
    return jsonenc.json_response({"text": f"{request.config_dict[GREETING]}, {name}!",
                                  "page_size": request.config_dict[PAGE_SIZE]})


@dataclass(eq=False)
class Mounted:
    """What the home page and the navigation show of an app level (Nestor's `Level`, by hand)."""

    label: str
    title: str
    prefix: str
    parent: Mounted | None = None
    children: list[Mounted] = field(default_factory=list)


def product_levels() -> tuple[list[Mounted], list[Mounted], dict[str, URL]]:
    """The levels of the default nestor.toml plus greeter, the navigation and the API docs links,
    as Nestor's home page lists them (sorted by label; the admin stays out of the navigation)."""
    root = Mounted("nestor", "nestor", "")
    levels = [root]
    for label, title, api in (("admin", "Admin", False), ("chat", "Chat", True), ("greeter", "greeter", True),
                              ("hello", "Hello", True), ("monitor", "Monitor", True), ("polls", "Polls", True)):
        level = Mounted(label, title, f"/{label}", root)
        root.children.append(level)
        levels.append(level)
        if api:
            child = Mounted(f"{label}.api", f"{label}.api", f"/{label}/api", level)
            level.children.append(child)
            levels.append(child)
    nav = [level for level in root.children if level.label != "admin"]
    docs = {level.label: URL(f"{level.prefix}/docs") for level in levels if level.label.endswith(".api")}
    return levels, nav, docs


def bare_product(database_url: str) -> web.Application:
    """The greeter at /greeter/api/hello, the polls API list and page, and the home page, in bare
    aiohttp + aiohttp-jinja2: polls' own queries on an engine set up as Nestor's, the same templates.

    `bench.run` checks that each answers as `nestor serve` does before measuring: when polls
    changes its list or its page, change these handlers with it."""
    from nestor.db import engine_for  # WAL and busy timeout on SQLite, as Nestor sets them
    from nestor_subapps.polls import db
    from nestor_subapps.polls.app import STATIC_DIR as POLLS_STATIC

    engine_key = web.AppKey("bench.product_engine", object)
    levels, nav, docs = product_levels()

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        engine = engine_for(database_url, Path.cwd())
        async with engine.begin() as conn:
            await conn.run_sync(db.metadata.create_all)
        await db.seed(engine)  # the two sample questions, as polls seeds them
        app[engine_key] = engine
        yield
        await engine.dispose()

    def before_of(request: web.Request) -> Any:
        try:
            return db.Cursor.parse(request.query["before"]) if "before" in request.query else None
        except db.InvalidCursor as e:
            raise web.HTTPBadRequest(text=str(e)) from e

    async def questions(request: web.Request) -> web.Response:
        # The polls API's list without search (no FTS index here): newest first, a page at a time,
        # one question more than asked for saying whether a `next` page exists.
        try:
            limit = min(int(request.query.get("limit") or request.config_dict[PAGE_SIZE]), MAX_LIMIT)
        except ValueError as e:
            raise web.HTTPBadRequest(text=str(e)) from e
        before = before_of(request)
        found = await db.list_questions(request.config_dict[engine_key], limit=limit + 1, before=before)
        items, next_url = found[:limit], None
        if len(found) > limit:
            page = {"before": str(db.Cursor.of(items[-1])), "limit": str(limit)}
            next_url = str(request.app.router["questions"].url_for().with_query(page))
        return jsonenc.json_response({
            "items": [_question_json(i) for i in items], "limit": limit, "offset": 0,
            "before": request.query.get("before"), "next": next_url,
            "total": len(items) if before is None and next_url is None else None,
        })

    @aiohttp_jinja2.template("polls/index.html")
    async def polls_index(request: web.Request) -> dict[str, Any]:
        # The polls page without search: newest first, `?before=` for the older pages (no `?after=`).
        size, before = request.config_dict[PAGE_SIZE], before_of(request)
        found = await db.list_questions(request.config_dict[engine_key], limit=size + 1, before=before)
        shown = found[:size]

        def link(name: str, question: Any) -> URL:
            return request.rel_url.with_query({name: str(db.Cursor.of(question))})

        return {"questions": shown, "q": "",
                "previous_url": link("after", shown[0]) if before is not None and shown else None,
                "next_url": link("before", shown[-1]) if len(found) > size else None,
                "first_url": request.rel_url.with_query({}) if before is not None and not shown else None}

    @aiohttp_jinja2.template("platform/home.html")
    async def home(request: web.Request) -> dict[str, Any]:
        return {"levels": levels[1:], "warnings": [], "docs": docs}

    root, greeter, greeter_api = web.Application(), web.Application(), web.Application()
    polls, polls_api = web.Application(), web.Application()
    root[GREETING], root[PAGE_SIZE] = "Hello", 20
    polls[PAGE_SIZE], polls_api[PAGE_SIZE] = 10, 50  # nestor.toml's [polls] and [polls.api]
    root.cleanup_ctx.append(engine_ctx)
    greeter.router.add_get("/", greeter_hello, name="index")
    greeter_api.router.add_get("/hello", greeter_hello, name="hello")
    greeter.add_subapp("/api", greeter_api)
    polls_api.router.add_get("/questions", questions, name="questions")
    polls.add_routes([
        web.get("/", polls_index, name="index"),
        web.get("/new", hello, name="new"),
        web.get(r"/{question_id:\d+}", hello, name="detail"),
        web.get(r"/{question_id:\d+}/results", hello, name="results"),
        web.static("/static", POLLS_STATIC, name="static"),
    ])
    polls.add_subapp("/api", polls_api)
    root.add_routes([web.get("/", home, name="home"), web.static("/static", KERNEL_STATIC, name="static")])
    root.add_subapp("/greeter", greeter)
    root.add_subapp("/polls", polls)

    names: dict[str, web.AbstractResource] = {
        "home": root.router["home"], "static": root.router["static"], "polls:api:questions": polls_api.router["questions"],
        **{f"polls:{name}": polls.router[name] for name in ("index", "new", "detail", "results", "static")},
        # Pages this app does not serve, linked from every page: their paths only.
        **{name: web.PlainResource(path) for name, path in (("routes", "/routes"), ("routes_json", "/routes.json"),
                                                             ("docs", "/docs"), ("openapi", "/openapi.json"),
                                                             ("health", "/health"))},
    }

    def url(name: str, query_: dict[str, Any] | None = None, **parts: Any) -> URL:
        built = names[name].url_for(**{k: str(v) for k, v in parts.items()})
        return built.with_query(query_) if query_ else built

    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(POLLS_STATIC.parent / "templates")),
                                  jinja2.FileSystemLoader(str(KERNEL_TEMPLATES))])
    env = aiohttp_jinja2.setup(root, loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    env.globals.update(url=url, nav=nav)
    return root


def _question_json(question: Any) -> dict[str, Any]:
    return {
        "id": question.id,
        "text": question.text,
        "created_at": question.created_at.isoformat(),
        "total_votes": question.total_votes,
        "choices": [{"id": c.id, "text": c.text, "votes": c.votes} for c in question.choices],
    }
