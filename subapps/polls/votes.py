"""Votes: recorded even if the client leaves, announced on the bus, watched through a websocket.

Each recorded vote publishes the question's new counts on the kernel bus (topic
`polls.votes`); `GET /polls/{id}/live` forwards them to a results page, so its bars move
without a reload, in this process or (with a networked bus) any other.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from nestor import BUS, DB, WebSocket, forward, json_dumps, shield

from . import db

TOPIC = "polls.votes"
logger = logging.getLogger("polls.votes")


def counts(question: db.Question) -> dict[str, Any]:
    """Return the JSON message announcing a question's counts."""
    return {
        "question_id": question.id,
        "total": question.total_votes,
        "choices": [{"id": c.id, "votes": c.votes} for c in question.choices],
    }


async def record(request: web.Request, question_id: int, choice_id: int) -> db.Question:
    """Add a vote, then publish the new counts; both complete even if the client disconnects."""
    engine, bus = request.config_dict[DB], request.config_dict[BUS]

    async def write() -> db.Question:
        question = await db.vote(engine, question_id, choice_id)
        try:
            await bus.publish(TOPIC, counts(question))
        except Exception:  # the vote is stored; live pages miss one update, the next one fixes it
            logger.exception("could not publish the counts of question %s", question_id)
        return question

    return await shield(request, write())


async def watch(request: web.Request, question_id: int) -> web.WebSocketResponse:
    """Answer with a websocket sending the question's counts now, then after every vote on it."""
    engine = request.config_dict[DB]
    # Subscribe before reading the counts, so no vote falls between the two.
    async with request.config_dict[BUS].subscribe(TOPIC) as subscription:
        try:
            question = await db.get_question(engine, question_id)
        except db.QuestionNotFound as e:
            raise web.HTTPNotFound(text=str(e)) from e
        ws = WebSocket(heartbeat=30)
        await ws.prepare(request)
        await ws.send_json(counts(question), dumps=json_dumps)
        await forward(ws, subscription, keep=lambda message: message.get("question_id") == question_id)
    return ws

