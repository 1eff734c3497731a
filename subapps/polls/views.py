"""The polls HTML pages: parse the request, call db, render a template from templates/polls/."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web
from yarl import URL

from nestor import DB, PAGE_SIZE, csrf_token, path_int, read_form, shield

from . import db, votes
from .schemas import MAX_OFFSET


async def get_question_or_404(request: web.Request) -> db.Question:
    """Return the question named by the URL, or raise 404."""
    try:
        return await db.get_question(request.config_dict[DB], path_int(request, "question_id"))
    except db.QuestionNotFound as e:
        raise web.HTTPNotFound(text=str(e)) from e


def page_offset(raw: str, size: int) -> int:
    """Return how many questions `?page=` skips; 400 when it is not a number or past the numbered pages."""
    if not raw.isascii() or not raw.isdigit():
        raise web.HTTPBadRequest(text=f"page={raw[:20]!r} is not a page number: use a whole number from 1.")
    last = MAX_OFFSET // size + 1
    if len(raw) > 10 or not 1 <= int(raw) <= last:
        raise web.HTTPBadRequest(
            text=f"There is no page {raw[:20]}: pages are numbered 1 to {last}; "
            "further on, follow the “Older” links from one page to the next."
        )
    return (int(raw) - 1) * size


def place(request: web.Request, size: int) -> tuple[db.Cursor | None, db.Cursor | None, int]:
    """Return where the page asked for starts: (before, after, offset); 400 when it cannot be read."""
    given = [name for name in ("before", "after", "page") if name in request.query]
    if len(given) > 1:
        raise web.HTTPBadRequest(text=f"Give one of before, after or page, not {' and '.join(given)}.")
    if given == ["page"]:
        return None, None, page_offset(request.query["page"], size)
    try:
        cursors = [db.Cursor.parse(request.query[name]) if name in given else None for name in ("before", "after")]
    except db.InvalidCursor as e:
        raise web.HTTPBadRequest(text=f"{given[0]}: {e}") from e
    return cursors[0], cursors[1], 0


@aiohttp_jinja2.template("polls/index.html")
async def index(request: web.Request) -> dict[str, Any]:
    try:
        q = db.check_search(request.query.get("q", ""))
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e)) from e
    size = request.config_dict[PAGE_SIZE]
    before, after, offset = place(request, size)
    async with db.reading(request.config_dict[DB]) as conn:  # one transaction for the page
        # One more than shown says whether there is a page beyond this one, in the direction read.
        found = await db.list_questions(conn, q=q, limit=size + 1, offset=offset, before=before, after=after)
        if after is not None and len(found) <= size:  # fewer newer than a page: the first page is newer
            after, found = None, await db.list_questions(conn, q=q, limit=size + 1)
    if offset and not found:
        raise web.HTTPBadRequest(text=f"There is no page {request.query['page']}: the list ends before it.")
    shown = found[1:] if after is not None else found[:size]
    older = after is not None or len(found) > size
    newer = after is not None and len(found) > size or before is not None or offset > 0

    def link(name: str, question: db.Question) -> URL:
        return request.rel_url.with_query({name: str(db.Cursor.of(question)), **({"q": q} if q else {})})

    return {
        "questions": shown,
        "q": q,
        "previous_url": link("after", shown[0]) if newer and shown else None,
        "next_url": link("before", shown[-1]) if older and shown else None,
        "first_url": request.rel_url.with_query({"q": q} if q else {}) if before is not None and not shown else None,
    }


async def detail(request: web.Request) -> web.Response:
    question = await get_question_or_404(request)
    return await _render_detail(request, question)


async def _render_detail(
    request: web.Request, question: db.Question, error: str = "", status: int = 200
) -> web.Response:
    context = {"question": question, "error": error, "csrf_token": await csrf_token(request)}
    return aiohttp_jinja2.render_template("polls/detail.html", request, context, status=status)


async def vote(request: web.Request) -> web.Response:
    question = await get_question_or_404(request)
    raw = (await read_form(request)).get("choice")
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        error = "Choose one of the answers." if not raw else "That is not one of the answers."
        return await _render_detail(request, question, error, status=400)
    try:
        await votes.record(request, question.id, int(raw))
    except db.QuestionNotFound as e:  # deleted since we read it
        raise web.HTTPNotFound(text=str(e)) from e
    except db.ChoiceNotFound:
        return await _render_detail(request, question, "That is not one of the answers.", status=400)
    raise web.HTTPSeeOther(request.app.router["results"].url_for(question_id=str(question.id)))


@aiohttp_jinja2.template("polls/results.html")
async def results(request: web.Request) -> dict[str, Any]:
    question = await get_question_or_404(request)
    return {"question": question, "percent": _percent(question)}


def _percent(question: db.Question) -> dict[int, int]:
    total = question.total_votes
    return {c.id: round(100 * c.votes / total) if total else 0 for c in question.choices}


async def live(request: web.Request) -> web.WebSocketResponse:
    return await votes.watch(request, path_int(request, "question_id"))


async def new(request: web.Request) -> web.Response:
    return await _render_new(request, "", [], {})


async def create(request: web.Request) -> web.Response:
    form = await read_form(request)
    text = form.get("text", "")
    # Blank choice fields are the form's spare slots, not answers.
    options = [o for o in form.getall("choice", []) if not isinstance(o, str) or o.strip()]
    try:
        db.validate_question(text, options)
        question = await shield(request, db.create_question(request.config_dict[DB], text, options))
    except db.InvalidQuestion as e:
        shown = [o for o in options if isinstance(o, str)]
        return await _render_new(request, text if isinstance(text, str) else "", shown, e.errors)
    raise web.HTTPSeeOther(request.app.router["detail"].url_for(question_id=str(question.id)))


async def _render_new(
    request: web.Request, text: str, options: list[str], errors: dict[str, str]
) -> web.Response:
    slots = options + [""] * (db.MAX_CHOICES - len(options))
    context = {
        "text": text,
        "slots": slots,
        "errors": errors,
        "csrf_token": await csrf_token(request),
        "max_text": db.MAX_TEXT,
        "min_choices": db.MIN_CHOICES,
        "max_choices": db.MAX_CHOICES,
    }
    status = 400 if errors else 200
    return aiohttp_jinja2.render_template("polls/new.html", request, context, status=status)
