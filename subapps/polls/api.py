"""The polls JSON API at /polls/api. Errors are application/problem+json (RFC 9457).

No CSRF token here (nothing is cookie-authenticated); when `api_token` is set at any level,
every request needs `Authorization: Bearer <api_token>`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nestor import API_TOKEN, DB, PAGE_SIZE, invalid, json_response, operation, path_int, require_token, shield

from . import db, schemas, votes
from .settings import MAX_BODY, MAX_LIMIT


def create_api_app() -> web.Application:
    app = web.Application(middlewares=[require_token(API_TOKEN)])
    app.add_routes(
        [
            web.get("/questions", list_questions, name="questions"),
            web.post("/questions", create_question, name="questions"),
            # Unconstrained ids, so that /questions/abc says what is wrong instead of a bare 404.
            web.get("/questions/{question_id}", get_question, name="question"),
            web.get("/questions/{question_id}/results", results, name="results"),
            web.post("/questions/{question_id}/votes", vote, name="votes"),
        ]
    )
    return app


# -- handlers --------------------------------------------------------------------------------


@operation(query=schemas.ListQuery, responses={200: schemas.QuestionPage})
async def list_questions(request: web.Request, query: schemas.ListQuery) -> web.Response:
    """The questions containing `q`, newest first, a page at a time; `next` links the older page."""
    try:
        q = db.check_search(query.q)
    except ValueError as e:
        raise web.HTTPBadRequest(text=f"q: {e}") from e
    before = page_start(query)
    limit = min(query.limit or request.config_dict[PAGE_SIZE], request.config_dict[MAX_LIMIT])
    # One transaction (one pool checkout) for the page and its count.
    async with db.reading(request.config_dict[DB]) as conn:
        # One more than asked for says whether a following page exists.
        found = await db.list_questions(conn, q=q, limit=limit + 1, offset=query.offset, before=before)
        items = found[:limit]
        next_url = None
        if len(found) > limit:
            page = {"before": str(db.Cursor.of(items[-1])), "limit": str(limit), **({"q": q} if q else {})}
            next_url = str(request.app.router["questions"].url_for().with_query(page))
        whole = before is None and not query.offset and next_url is None  # this page holds every match
        total = len(items) if whole else await _total(conn, q)
    return json_response({
        "items": [question_json(i) for i in items],
        "limit": limit,
        "offset": query.offset,
        "before": query.before,
        "next": next_url,
        "total": total,
    })


async def _total(conn: db.Source, q: str) -> int | None:
    """How many questions there are, if counting them costs no more than a page (QuestionPage.total)."""
    if q:
        return None  # counting would read every match
    counted = await db.count_questions(conn, limit=db.COUNT_LIMIT + 1)
    return counted if counted <= db.COUNT_LIMIT else None


@operation(body=schemas.NewQuestion, responses={201: schemas.Question}, max_bytes=MAX_BODY)
async def create_question(request: web.Request, body: schemas.NewQuestion) -> web.Response:
    """Ask a question; its Location is the new question's URL."""
    try:
        question = await shield(request, db.create_question(request.config_dict[DB], body.text, body.choices))
    except db.InvalidQuestion as e:
        return invalid(request, "The question is not valid; see errors.", e.errors)
    location = request.app.router["question"].url_for(question_id=str(question.id))
    return json_response(question_json(question), status=201, headers={"Location": str(location)})


@operation(responses={200: schemas.Question}, errors=(404,))
async def get_question(request: web.Request) -> web.Response:
    """One question with its choices and votes."""
    return json_response(question_json(await question_or_404(request)))


@operation(responses={200: schemas.Results}, errors=(404,))
async def results(request: web.Request) -> web.Response:
    """The votes of each choice, with its share of the total."""
    question = await question_or_404(request)
    total = question.total_votes
    return json_response(
        {
            "question_id": question.id,
            "text": question.text,
            "total": total,
            "choices": [
                {
                    "id": c.id,
                    "text": c.text,
                    "votes": c.votes,
                    "percent": round(100 * c.votes / total, 1) if total else 0.0,
                }
                for c in question.choices
            ],
        }
    )


@operation(body=schemas.NewVote, responses={201: schemas.VoteCounts}, errors=(404,), max_bytes=MAX_BODY)
async def vote(request: web.Request, body: schemas.NewVote) -> web.Response:
    """Vote for a choice; the vote is stored even if the client leaves, and live pages see it."""
    try:
        question = await votes.record(request, path_int(request, "question_id"), body.choice)
    except db.QuestionNotFound as e:
        raise web.HTTPNotFound(text=str(e)) from e
    except db.ChoiceNotFound as e:
        return invalid(request, str(e), {"choice": str(e)})
    return json_response({**votes.counts(question), "choice": body.choice}, status=201)


# -- input and output ------------------------------------------------------------------------


def page_start(query: schemas.ListQuery) -> db.Cursor | None:
    """Return the place a list page starts after, if any; 400 for a bad one or an offset past MAX_OFFSET."""
    if query.offset > schemas.MAX_OFFSET:
        raise web.HTTPBadRequest(
            text=f"offset={query.offset} is past {schemas.MAX_OFFSET}: follow the `next` link of a page "
            "to the one after it (each page reads only its own questions, at any depth)."
        )
    try:
        return db.Cursor.parse(query.before) if query.before is not None else None
    except db.InvalidCursor as e:
        raise web.HTTPBadRequest(text=f"before: {e}") from e


async def question_or_404(request: web.Request) -> db.Question:
    """Return the question named by the URL, or raise 404."""
    try:
        return await db.get_question(request.config_dict[DB], path_int(request, "question_id"))
    except db.QuestionNotFound as e:
        raise web.HTTPNotFound(text=str(e)) from e


def question_json(question: db.Question) -> dict[str, Any]:
    """Return a question as the API shows it."""
    return {
        "id": question.id,
        "text": question.text,
        "created_at": question.created_at.isoformat(),
        "total_votes": question.total_votes,
        "choices": [{"id": c.id, "text": c.text, "votes": c.votes} for c in question.choices],
    }

