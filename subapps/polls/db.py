"""Polls storage: the tables (polls' own MetaData), the queries and the domain's exceptions.

Knows nothing of HTTP: handlers translate the exceptions at the edge. Every function takes
the kernel's `AsyncEngine` (SQLite or PostgreSQL); the reads also take the connection of a
`reading()` block, so that a handler's reads share one connection and one transaction.

Lists stay fast at any length: they are read newest first along the index on (created_at, id),
a page at a time from a `Cursor` (keyset pagination), never counted in full. Search ("text
contains q, case-insensitively") goes through an index of trigrams made by migration 0002: on
SQLite an FTS5 table kept in sync by triggers, on PostgreSQL a pg_trgm GIN index.
"""

from __future__ import annotations

import contextlib
import functools
import re
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MAX_TEXT = 200
MIN_CHOICES, MAX_CHOICES = 2, 10
MAX_ID = 2**31 - 1  # the largest INTEGER on PostgreSQL; larger ids cannot exist
COUNT_LIMIT = 1000  # counts stop here: an exact COUNT(*) reads every row, a million of them
TRIGRAM = 3  # the search indexes hold 3-character pieces: shorter text cannot use them
# SQLite: a search whose index finds fewer candidates than this sorts them by date; more
# common text is found sooner by reading the list newest first and testing each question.
FEW_MATCHES = 1000

metadata = sa.MetaData()
questions = sa.Table(
    "polls_question",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("text", sa.String(MAX_TEXT), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("polls_question_created_at_id", "created_at", "id"),  # the list's order (migration 0002)
)
# The search index is not in `metadata`, as it differs by database (migration 0002 makes it):
# SQLite: this FTS5 table (trigram tokenizer, its content read from polls_question by rowid)
# and three triggers on polls_question; PostgreSQL: GIN index polls_question_text_trgm.
search_index = sa.table("polls_question_fts", sa.column("rowid"))
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


class InvalidCursor(ValueError):
    """A page was asked for from a place that is not one a list gave."""


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


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CURSOR = re.compile(r"(-?[0-9]{1,17})_([0-9]{1,10})")


@dataclass(frozen=True)
class Cursor:
    """A place in the list: the question a page continues from, by (created_at, id).

    Written `<microseconds since 1970>_<id>`; clients should pass it on as they got it.
    """

    created_at: datetime
    id: int

    @classmethod
    def of(cls, question: Question) -> Cursor:
        """The place of a question."""
        return cls(question.created_at, question.id)

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """Read a cursor written by `str()`; raise InvalidCursor."""
        found = CURSOR.fullmatch(text)
        if found is None or int(found.group(2)) > MAX_ID:
            raise InvalidCursor(f"{text[:40]!r} is not a place in the list: use the link a page gave.")
        try:
            created = EPOCH + timedelta(microseconds=int(found.group(1)))
        except OverflowError as e:
            raise InvalidCursor(f"{text[:40]!r} is not a place in the list: its date is out of range.") from e
        return cls(created, int(found.group(2)))

    def __str__(self) -> str:
        return f"{(self.created_at - EPOCH) // timedelta(microseconds=1)}_{self.id}"


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


Source = AsyncEngine | AsyncConnection  # what the reads take: the engine, or a reading() connection


@contextlib.asynccontextmanager
async def reading(source: Source) -> AsyncIterator[AsyncConnection]:
    """Yield one connection, in one transaction, for several reads (a page and its count).

    One pool checkout and one BEGIN for them all, and every read sees the same data.
    Given a connection, yield it as it is.
    """
    if isinstance(source, AsyncConnection):
        yield source
        return
    async with source.connect() as conn:
        yield conn


async def count_questions(source: Source, *, q: str = "", limit: int | None = None) -> int:
    """Return how many questions contain `q` (all of them when it is empty), counting `limit` at most.

    Without `limit` every matching row is read: a million of them take tens of milliseconds.
    """
    matching = sa.select(sa.literal(1)).select_from(questions)
    if q:
        matching = matching.where(questions.c.text.icontains(q, autoescape=True))
    if limit is not None:
        matching = matching.limit(limit)
    async with reading(source) as conn:
        return (await conn.scalar(sa.select(sa.func.count()).select_from(matching.subquery()))) or 0


async def list_questions(
    source: Source,
    *,
    q: str = "",
    limit: int,
    offset: int = 0,
    before: Cursor | None = None,
    after: Cursor | None = None,
) -> list[Question]:
    """Return questions containing `q`, newest first, with their choices.

    The newest `limit` ones (past the first `offset`) that are older than `before`; or, with
    `after`, the oldest `limit` of those newer than it (still listed newest first).
    """
    newest_first, place = after is None, before or after
    values: dict[str, Any] = {"limit": limit, "offset": offset}
    if place is not None:
        values.update(place_created_at=place.created_at, place_id=place.id)
    async with reading(source) as conn:
        search = await _search(conn, q, values) if q else ""
        rows = (await conn.execute(_page_query(newest_first, place is not None, search), values)).all()
    found: list[Question] = []
    options: list[Choice] = []
    for row, following in zip(rows, [*rows[1:], None]):
        if row.choice_id is not None:
            options.append(Choice(row.choice_id, row.choice_text, row.votes))
        if following is None or following.id != row.id:  # the question's last row
            found.append(_question(row, options))
            options = []
    return found if newest_first else found[::-1]


@functools.cache
def _page_query(newest_first: bool, placed: bool, search: str) -> sa.Select[Any]:
    """The statement reading a page of questions and their choices, built once for each shape.

    Values (the page's size and place, the text searched) are bound parameters: building a
    statement and its cache key costs SQLAlchemy more than the read itself (about 140 us
    here), and a statement used again reuses both. One statement for the page and its
    choices: each statement is several round trips to the database (on SQLite, to
    aiosqlite's thread), not one.
    """
    columns = (questions.c.created_at, questions.c.id)
    page = sa.select(questions).order_by(*[c.desc() if newest_first else c.asc() for c in columns])
    page = page.limit(sa.bindparam("limit", type_=sa.Integer)).offset(sa.bindparam("offset", type_=sa.Integer))
    if placed:
        # A row comparison both databases read as a range of the (created_at, id) index.
        # On SQLite it compares the stored text: created_at as this module writes it.
        key = sa.tuple_(*columns)
        place = sa.tuple_(
            sa.bindparam("place_created_at", type_=questions.c.created_at.type),
            sa.bindparam("place_id", type_=sa.Integer),
        )
        page = page.where(key < place if newest_first else key > place)
    if search == "ilike":  # PostgreSQL: ILIKE, which the trigram index serves (backslash escapes by default)
        page = page.where(questions.c.text.ilike(sa.bindparam("pattern", type_=sa.String)))
    elif search:  # SQLite's LIKE ignores the case of ASCII letters only, as its lower() does
        page = page.where(questions.c.text.like(sa.bindparam("pattern", type_=sa.String), escape="\\"))
        if search == "candidates":
            page = page.where(questions.c.id.in_(sa.bindparam("candidates", expanding=True, type_=sa.Integer)))
    chosen = page.subquery("page")
    order = [chosen.c.created_at, chosen.c.id]
    return (
        sa.select(chosen, choices.c.id.label("choice_id"), choices.c.text.label("choice_text"), choices.c.votes)
        .select_from(chosen.outerjoin(choices, choices.c.question_id == chosen.c.id))
        .order_by(*[c.desc() if newest_first else c.asc() for c in order], choices.c.id)
    )


async def _search(conn: AsyncConnection, q: str, values: dict[str, Any]) -> str:
    """Bind "text contains q, case-insensitively" in the form this database's index serves, and
    return that form for `_page_query`: `ilike`, `candidates` (the index's few matches) or `like`."""
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    values["pattern"] = f"%{escaped}%"
    if conn.dialect.name == "postgresql":
        # The same query text serves every q: without this, PostgreSQL soon reuses one plan
        # made for no q in particular, and walks the whole list for a rare word.
        await conn.execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))
        return "ilike"  # folds case as lower() does
    if len(q) >= TRIGRAM:
        # The FTS5 index folds case beyond ASCII (LIKE does not): its matches are candidates,
        # a superset of the answer, which LIKE then decides.
        match = sa.literal_column(search_index.name).op("MATCH")(_trigrams(q))
        query = sa.select(search_index.c.rowid).where(match).limit(FEW_MATCHES)
        candidates = (await conn.scalars(query)).all()
        if len(candidates) < FEW_MATCHES:
            values["candidates"] = list(candidates)
            return "candidates"
    return "like"  # common (or short) text: reading the list in order finds a page soonest


def _trigrams(q: str) -> str:
    """An FTS5 query for the texts holding each of q's trigrams, taken end to end (the last one
    ending where q ends): every text containing q, and a few more, which `contains` drops.

    Cheaper than q as a phrase, which also compares every trigram's positions: a third of the
    time for a long text made of common trigrams.
    """
    pieces = [q[start : start + TRIGRAM] for start in range(0, len(q) - TRIGRAM + 1, TRIGRAM)]
    if len(q) % TRIGRAM:
        pieces.append(q[-TRIGRAM:])
    return " AND ".join('"' + piece.replace('"', '""') + '"' for piece in dict.fromkeys(pieces))


async def get_question(source: Source, question_id: int) -> Question:
    """Return a question with its choices; raise QuestionNotFound."""
    async with reading(source) as conn:
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
            if await conn.scalar(sa.select(questions.c.id).limit(1)) is not None:
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
