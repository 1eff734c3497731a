"""Polls storage: the tables (polls' own MetaData), the queries and the domain's exceptions.

Knows nothing of HTTP: handlers translate the exceptions at the edge. Every function takes
the kernel's `AsyncEngine` (SQLite or PostgreSQL).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MAX_TEXT = 200
MIN_CHOICES, MAX_CHOICES = 2, 10
MAX_ID = 2**31 - 1  # the largest INTEGER on PostgreSQL; larger ids cannot exist

metadata = sa.MetaData()
questions = sa.Table(
    "polls_question",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.String(MAX_TEXT), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
choices = sa.Table(
    "polls_choice",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "question_id",
        sa.Integer,
        sa.ForeignKey("polls_question.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("text", sa.String(MAX_TEXT), nullable=False),
    sa.Column("votes", sa.Integer, nullable=False, server_default="0"),
)
# One row per seeding done, so a database is seeded once, even by several workers at once.
seeds = sa.Table("polls_seed", metadata, sa.Column("name", sa.String(50), primary_key=True))

SAMPLES = (
    ("What do you like best in aiohttp?", ("Sub-apps", "Middlewares", "Websockets", "Signals")),
    ("Which database does your Nestor run on?", ("SQLite", "PostgreSQL")),
)


class QuestionNotFound(LookupError):
    """No question has this id."""

    def __init__(self, question_id: int) -> None:
        super().__init__(f"There is no question {question_id}.")
        self.question_id = question_id


class ChoiceNotFound(LookupError):
    """The question exists, but this choice is not one of its choices."""

    def __init__(self, question_id: int, choice_id: int) -> None:
        super().__init__(f"Choice {choice_id} is not one of the choices of question {question_id}.")
        self.question_id, self.choice_id = question_id, choice_id


class InvalidQuestion(ValueError):
    """A new question breaks the rules; `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Choice:
    """One answer of a question and its vote count."""

    id: int
    text: str
    votes: int


@dataclass(frozen=True)
class Question:
    """A question with its choices, in the order they were given."""

    id: int
    text: str
    created_at: datetime
    choices: tuple[Choice, ...]

    @property
    def total_votes(self) -> int:
        """All votes given on this question."""
        return sum(choice.votes for choice in self.choices)


def _has_control(text: str) -> bool:
    # Databases refuse NUL and lone surrogates (JSON can carry both); no question needs them.
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def check_search(q: str) -> str:
    """Return search text stripped; raise ValueError saying why it cannot be searched for."""
    q = q.strip()
    if len(q) > MAX_TEXT:
        raise ValueError(f"The search text is longer than {MAX_TEXT} characters.")
    if _has_control(q):
        raise ValueError("The search text contains control characters or broken Unicode.")
    return q


def validate_question(text: object, options: object) -> tuple[str, list[str]]:
    """Return the question's text and choices, stripped; raise InvalidQuestion with field errors."""
    errors: dict[str, str] = {}
    clean_text = text.strip() if isinstance(text, str) else ""
    if not isinstance(text, str):
        errors["text"] = "The question must be text."
    elif not clean_text:
        errors["text"] = "Write the question."
    elif len(clean_text) > MAX_TEXT:
        errors["text"] = f"At most {MAX_TEXT} characters, please (this one has {len(clean_text)})."
    elif _has_control(clean_text):
        errors["text"] = "The question contains control characters or broken Unicode."
    clean: list[str] = []
    if not isinstance(options, list | tuple) or not all(isinstance(o, str) for o in options):
        errors["choices"] = "The choices must be a list of texts."
    else:
        clean = [option.strip() for option in options]
        errors.update(_choice_errors(clean))
    if errors:
        raise InvalidQuestion(errors)
    return clean_text, clean


def _choice_errors(options: list[str]) -> dict[str, str]:
    if not MIN_CHOICES <= len(options) <= MAX_CHOICES:
        return {"choices": f"Give {MIN_CHOICES} to {MAX_CHOICES} choices (you gave {len(options)})."}
    seen: set[str] = set()
    for number, option in enumerate(options, 1):
        if not option:
            return {"choices": f"Choice {number} is empty."}
        if len(option) > MAX_TEXT:
            return {"choices": f"Choice {number} is longer than {MAX_TEXT} characters."}
        if _has_control(option):
            return {"choices": f"Choice {number} contains control characters or broken Unicode."}
        if option.casefold() in seen:
            return {"choices": f"Choice {option!r} is given twice."}
        seen.add(option.casefold())
    return {}


def _matching(q: str) -> sa.ColumnElement[bool]:
    return questions.c.text.icontains(q, autoescape=True) if q else sa.true()


async def count_questions(engine: AsyncEngine, *, q: str = "") -> int:
    """Return how many questions contain `q` (all of them when it is empty)."""
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(questions).where(_matching(q))
        return (await conn.scalar(query)) or 0


async def list_questions(
    engine: AsyncEngine, *, q: str = "", limit: int, offset: int = 0
) -> list[Question]:
    """Return questions containing `q`, newest first, with their choices."""
    query = (
        sa.select(questions)
        .where(_matching(q))
        .order_by(questions.c.created_at.desc(), questions.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        by_question = await _choices_of(conn, [row.id for row in rows])
    return [_question(row, by_question.get(row.id, ())) for row in rows]


async def get_question(engine: AsyncEngine, question_id: int) -> Question:
    """Return a question with its choices; raise QuestionNotFound."""
    async with engine.connect() as conn:
        return await _load(conn, question_id)


async def create_question(engine: AsyncEngine, text: object, options: object) -> Question:
    """Store a new question with its choices and return it; raise InvalidQuestion."""
    clean_text, clean_options = validate_question(text, options)
    async with engine.begin() as conn:
        question_id = await _insert(conn, clean_text, clean_options)
        return await _load(conn, question_id)


async def vote(engine: AsyncEngine, question_id: int, choice_id: int) -> Question:
    """Add one vote to a choice and return the question with the new counts.

    The increment happens in SQL (`votes = votes + 1`), so concurrent votes never lose a count.
    Raises QuestionNotFound or ChoiceNotFound.
    """
    if not 0 < question_id <= MAX_ID:
        raise QuestionNotFound(question_id)
    if not 0 < choice_id <= MAX_ID:
        raise ChoiceNotFound(question_id, choice_id)
    increment = (
        choices.update()
        .where(choices.c.id == choice_id, choices.c.question_id == question_id)
        .values(votes=choices.c.votes + 1)
    )
    async with engine.begin() as conn:
        result = await conn.execute(increment)
        if result.rowcount != 1:
            await _load(conn, question_id)  # raises QuestionNotFound if that is the reason
            raise ChoiceNotFound(question_id, choice_id)
        return await _load(conn, question_id)


async def seed(engine: AsyncEngine) -> bool:
    """Add the sample questions if this database never had polls; return whether it did."""
    try:
        async with engine.begin() as conn:
            await conn.execute(seeds.insert().values(name="samples"))
            if await conn.scalar(sa.select(sa.func.count()).select_from(questions)):
                return False  # questions from before seeding existed: keep them as they are
            for text, options in SAMPLES:
                await _insert(conn, text, list(options))
    except sa.exc.IntegrityError:
        return False  # seeded already, possibly by another worker starting at the same time
    return True


async def _insert(conn: AsyncConnection, text: str, options: Sequence[str]) -> int:
    result = await conn.execute(questions.insert().values(text=text, created_at=datetime.now(UTC)))
    question_id = result.inserted_primary_key[0]
    await conn.execute(
        choices.insert(), [{"question_id": question_id, "text": option} for option in options]
    )
    return question_id


async def _load(conn: AsyncConnection, question_id: int) -> Question:
    if not 0 < question_id <= MAX_ID:
        raise QuestionNotFound(question_id)
    row = (await conn.execute(sa.select(questions).where(questions.c.id == question_id))).first()
    if row is None:
        raise QuestionNotFound(question_id)
    return _question(row, (await _choices_of(conn, [question_id])).get(question_id, ()))


async def _choices_of(conn: AsyncConnection, question_ids: list[int]) -> dict[int, list[Choice]]:
    found: dict[int, list[Choice]] = {}
    if not question_ids:
        return found
    query = sa.select(choices).where(choices.c.question_id.in_(question_ids)).order_by(choices.c.id)
    for row in await conn.execute(query):
        found.setdefault(row.question_id, []).append(Choice(row.id, row.text, row.votes))
    return found


def _question(row: sa.Row, options: Sequence[Choice]) -> Question:
    created = row.created_at
    if created.tzinfo is None:  # SQLite keeps no time zone; every value was written in UTC
        created = created.replace(tzinfo=UTC)
    return Question(row.id, row.text, created, tuple(options))
