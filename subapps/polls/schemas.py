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

from .db import COUNT_LIMIT, MAX_CHOICES, MAX_ID, MAX_TEXT, MIN_CHOICES

MAX_OFFSET = 1000  # deeper pages are reached with `next`: an OFFSET reads every row it skips
CURSOR_PATTERN = r"^-?[0-9]{1,17}_[0-9]{1,10}$"
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
    """Which page of questions: `limit` defaults to the level's page_size, capped by max_limit.

    Follow `next` for the following page (`before` holds its place); `offset` serves the
    first 1000 questions only.
    """

    limit: Annotated[int, Meta(ge=1, le=MAX_ID)] | None = None
    # No `le`: past MAX_OFFSET the handler's 400 says what to do instead.
    offset: Annotated[int, Meta(
        ge=0, description=f"Questions to skip, at most {MAX_OFFSET}: deeper, follow `next`",
        extra_json_schema={"maximum": MAX_OFFSET},
    )] = 0
    q: Annotated[str, Meta(
        max_length=MAX_TEXT, description="Text the questions contain, in any case",
    )] = ""
    before: Annotated[str, Meta(
        pattern=CURSOR_PATTERN, max_length=40, examples=["1767323045123456_42"],
        description="Where the page starts: the questions older than this place (from a `next` link)",
    )] | None = None


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
    """Questions newest first; `next` is the URL of the older page, null on the last one."""

    items: list[Question]
    limit: int
    offset: int
    before: str | None
    next: Annotated[str | None, Meta(
        description="The URL of the following (older) page: the same query from the last question on",
    )]
    total: Annotated[int | None, Meta(
        description=(
            f"How many questions match; null past {COUNT_LIMIT} (without q) or, for a search, when its "
            "first page does not hold them all: counting further would read every one of them"
        ),
    )]


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
