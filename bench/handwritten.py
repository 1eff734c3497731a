"""The polls API as it was before declared schemas: hand-written body checks (bench section `schemas`).

Mounted by `nestor serve` as `subapps = ["bench.handwritten"]`, at the same paths as the real
polls sub-app, on the same tables and queries; only create-question and vote differ: these
read the body with `read_json` (json.loads) and check its fields by hand, as the polls API did
until it declared `@operation(body=...)`. The bench compares the two under the same load.
"""

from dataclasses import replace

from aiohttp import web

from nestor import API_TOKEN, DB, invalid, json_response, path_int, read_json, require_token, shield
from nestor_subapps import polls
from nestor_subapps.polls import api, db, votes
from nestor_subapps.polls.settings import MAX_BODY


async def create_question(request: web.Request) -> web.Response:
    body = await read_json(request, MAX_BODY)
    try:
        db.validate_question(body.get("text"), body.get("choices"))
        question = await shield(request, db.create_question(request.config_dict[DB], body.get("text"), body.get("choices")))
    except db.InvalidQuestion as e:
        return invalid(request, "The question is not valid; see errors.", e.errors)
    location = request.app.router["question"].url_for(question_id=str(question.id))
    return json_response(api.question_json(question), status=201, headers={"Location": str(location)})


async def vote(request: web.Request) -> web.Response:
    question_id = path_int(request, "question_id")
    body = await read_json(request, MAX_BODY)
    choice = body.get("choice")
    if choice is None:
        return invalid(request, "Say which choice you vote for.", {"choice": "Required: the id of a choice."})
    if not isinstance(choice, int) or isinstance(choice, bool):
        return invalid(request, "The choice is not valid.", {"choice": "Must be an integer id."})
    try:
        question = await votes.record(request, question_id, choice)
    except db.QuestionNotFound as e:
        raise web.HTTPNotFound(text=str(e)) from e
    except db.ChoiceNotFound as e:
        return invalid(request, str(e), {"choice": str(e)})
    return json_response({**votes.counts(question), "choice": choice}, status=201)


def create_api_app() -> web.Application:
    app = web.Application(middlewares=[require_token(API_TOKEN)])
    app.add_routes(
        [
            web.get("/questions", api.list_questions, name="questions"),
            web.post("/questions", create_question, name="questions"),
            web.get("/questions/{question_id}", api.get_question, name="question"),
            web.post("/questions/{question_id}/votes", vote, name="votes"),
        ]
    )
    return app


handwritten_api = replace(polls.subapp.children[0], factory=create_api_app)
subapp = replace(polls.subapp, children=[handwritten_api])
