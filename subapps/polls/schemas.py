"""The polls API's declared types: what a body or a query must hold, and what answers look like.

The kernel decodes and checks a body against them before a handler runs (a 422 names each
field). The rules with better words of their own (an empty question, a choice given twice,
2 to 10 choices) stay in `db.validate_question`, shared with the HTML form; here they are
documented for the OpenAPI document only (`extra_json_schema`).
"""

from datetime import datetime
from typing import Annotated

import msgspec
from msgspec import Meta

from .db import MAX_CHOICES, MAX_ID, MAX_TEXT, MIN_CHOICES

MAX_OFFSET = 10**9
TEXT = {"minLength": 1, "maxLength": MAX_TEXT}


class NewQuestion(msgspec.Struct):
    """A question to ask, with its choices."""

    text: Annotated[str, Meta(
        description="The question", examples=["Which database do you use?"], extra_json_schema=TEXT,
        extra={"invalid": "The question must be text."},
    )]
    choices: Annotated[list[str], Meta(
        description=f"{MIN_CHOICES} to {MAX_CHOICES} answers, each different",
        examples=[["SQLite", "PostgreSQL"]],
        extra_json_schema={"minItems": MIN_CHOICES, "maxItems": MAX_CHOICES, "items": {"type": "string", **TEXT}},
        extra={"invalid": "The choices must be a list of texts."},
    )]


class NewVote(msgspec.Struct):
    """A vote for one choice of the question."""

    choice: Annotated[int, Meta(
        description="The id of one of the question's choices", examples=[1],
        extra={"missing": "Required: the id of a choice.", "invalid": "Must be an integer id."},
    )]


class ListQuery(msgspec.Struct):
    """Which page of questions: `limit` defaults to the level's page_size, capped by max_limit."""

    limit: Annotated[int, Meta(ge=1, le=MAX_ID)] | None = None
    offset: Annotated[int, Meta(ge=0, le=MAX_OFFSET)] = 0
    q: Annotated[str, Meta(max_length=MAX_TEXT, description="Text the questions contain")] = ""


class Choice(msgspec.Struct):
    id: int
    text: str
    votes: int


class Question(msgspec.Struct):
    """A question with its choices and their votes."""

    id: int
    text: str
    created_at: datetime
    total_votes: int
    choices: list[Choice]


class QuestionPage(msgspec.Struct):
    items: list[Question]
    total: int
    limit: int
    offset: int


class ChoiceResult(msgspec.Struct):
    id: int
    text: str
    votes: int
    percent: float


class Results(msgspec.Struct):
    question_id: int
    text: str
    total: int
    choices: list[ChoiceResult]


class ChoiceCount(msgspec.Struct):
    id: int
    votes: int


class VoteCounts(msgspec.Struct):
    """The question's counts after the vote, and the choice voted for."""

    question_id: int
    total: int
    choices: list[ChoiceCount]
    choice: int
