"""Polls storage: tables at start-up, sample questions once, queries and domain rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from nestor_subapps.polls import db

from .conftest import SAMPLE_TEXTS, BuildPolls, Client, create_question, engine_of


async def listed_texts(client: Client) -> list[str]:
    async with client.get("/polls/api/questions") as resp:
        assert resp.status == 200
        return [item["text"] for item in (await resp.json())["items"]]


async def test_start_up_creates_the_polls_tables(client: Client) -> None:
    async with engine_of(client).connect() as conn:
        names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    assert {"polls_question", "polls_choice", "polls_seed"} <= set(names)


async def test_first_run_on_an_empty_database_seeds_two_sample_questions(client: Client) -> None:
    assert await listed_texts(client) == SAMPLE_TEXTS
    async with client.get("/polls/") as resp:
        assert resp.status == 200
        assert SAMPLE_TEXTS[0] in await resp.text()


async def test_restart_does_not_seed_again(aiohttp_client: AiohttpClient, make_polls: BuildPolls) -> None:
    first = await aiohttp_client(make_polls())
    await first.close()
    second = await aiohttp_client(make_polls())
    assert await listed_texts(second) == SAMPLE_TEXTS


async def test_samples_deleted_by_the_user_do_not_come_back(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls
) -> None:
    first = await aiohttp_client(make_polls())
    async with engine_of(first).begin() as conn:
        await conn.execute(db.choices.delete())
        await conn.execute(db.questions.delete())
    await first.close()
    second = await aiohttp_client(make_polls())
    assert await listed_texts(second) == []


async def test_database_with_questions_already_is_not_seeded(
    aiohttp_client: AiohttpClient, make_polls: BuildPolls, database_url: str
) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(db.metadata.create_all)
        await db.create_question(engine, "Mine from before?", ["Yes", "No"])
    finally:
        await engine.dispose()
    client = await aiohttp_client(make_polls())
    assert await listed_texts(client) == ["Mine from before?"]


async def test_vote_increments_only_the_chosen_choice(client: Client) -> None:
    question = await create_question(client, "A, B or C?", ["A", "B", "C"])
    a, b, c = (choice["id"] for choice in question["choices"])
    engine = engine_of(client)
    await db.vote(engine, question["id"], b)
    after = await db.vote(engine, question["id"], b)
    assert [(choice.id, choice.votes) for choice in after.choices] == [(a, 0), (b, 2), (c, 0)]
    assert after.total_votes == 2


async def test_vote_for_a_choice_of_another_question_is_choice_not_found(client: Client) -> None:
    question = await create_question(client)
    with pytest.raises(db.ChoiceNotFound):
        await db.vote(engine_of(client), question["id"], 1)  # choice 1 belongs to a sample


@pytest.mark.parametrize("question_id", [9999, 0, -1, 2**40])
async def test_vote_on_unknown_question_is_question_not_found(client: Client, question_id: int) -> None:
    with pytest.raises(db.QuestionNotFound):
        await db.vote(engine_of(client), question_id, 1)


@pytest.mark.parametrize("question_id", [9999, 0, 2**40])
async def test_get_unknown_question_is_question_not_found(client: Client, question_id: int) -> None:
    with pytest.raises(db.QuestionNotFound, match=f"There is no question {question_id}."):
        await db.get_question(engine_of(client), question_id)


async def test_questions_created_in_the_same_instant_list_newest_first(client: Client) -> None:
    engine = engine_of(client)
    async with engine.begin() as conn:
        await conn.execute(sa.update(db.questions).values(created_at=sa.func.current_timestamp()))
    ids = [q.id for q in await db.list_questions(engine, limit=10)]
    assert ids == sorted(ids, reverse=True)


@pytest.fixture(params=["index", "walk"])
def search_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Search both ways SQLite has: through the FTS5 index (few matches) and reading the list in order."""
    if request.param == "walk":
        monkeypatch.setattr(db, "FEW_MATCHES", 1)  # any match is "many"
    return str(request.param)


async def texts_found(engine: AsyncEngine, q: str, **where: Any) -> list[str]:
    return [question.text for question in await db.list_questions(engine, q=q, limit=20, **where)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("50%", ["Is 50% a lot?"]),
        ("a_b", ["Is a_b a name?"]),
        ("C:\\temp", ["C:\\temp or /tmp?"]),
        ('"hi"', ['Say "hi"?']),
    ],
)
async def test_search_treats_like_wildcards_and_quotes_as_text(
    client: Client, search_way: str, q: str, expected: list[str]
) -> None:
    engine = engine_of(client)
    for text in ("Is 50% a lot?", "Is 50 a lot?", "Is a_b a name?", "Is axb a name?", "C:\\temp or /tmp?",
                 "C:temp?", 'Say "hi"?', "Say hi?"):
        await db.create_question(engine, text, ["Yes", "No"])
    assert await texts_found(engine, q) == expected


SEARCHED = ("Green tea or black?", "TEA TIME?", "Steak or fish?", "Coffee?", "Crème brûlée?", "Una más?")


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("TEA", ["Steak or fish?", "TEA TIME?", "Green tea or black?"]),  # any case, inside words too
        ("Tea Time", ["TEA TIME?"]),
        ("ea", ["Steak or fish?", "TEA TIME?", "Green tea or black?"]),  # shorter than the index's trigrams
        ("brûlée", ["Crème brûlée?"]),
        ("S?", ["Una más?"]),
        ("tea or coffee", []),
    ],
)
async def test_search_finds_text_inside_questions_whatever_its_case(
    client: Client, search_way: str, q: str, expected: list[str]
) -> None:
    engine = engine_of(client)
    for text in SEARCHED:
        await db.create_question(engine, text, ["Yes", "No"])
    assert await texts_found(engine, q) == expected


async def test_search_finds_only_the_text_itself_not_its_pieces_apart(client: Client, search_way: str) -> None:
    engine = engine_of(client)
    for text in ("Is the mic on the rope, honestly, for anyone?", "Which microphone?", "A micro phone?"):
        await db.create_question(engine, text, ["Yes", "No"])
    assert await texts_found(engine, "MICROPHONE") == ["Which microphone?"]


async def test_search_pages_from_a_cursor_both_ways(client: Client, search_way: str) -> None:
    engine = engine_of(client)
    for n in range(5):
        await db.create_question(engine, f"Tea {n}?", ["Yes", "No"])
    middle = (await db.list_questions(engine, q="tea", limit=3))[-1]
    assert middle.text == "Tea 2?"
    assert await texts_found(engine, "TEA", before=db.Cursor.of(middle)) == ["Tea 1?", "Tea 0?"]
    assert await texts_found(engine, "TEA", after=db.Cursor.of(middle)) == ["Tea 4?", "Tea 3?"]


async def test_search_index_follows_new_changed_and_deleted_questions(client: Client, search_way: str) -> None:
    engine = engine_of(client)
    first = await db.create_question(engine, "Tea or coffee?", ["Tea", "Coffee"])
    second = await db.create_question(engine, "Tea or water?", ["Tea", "Water"])
    async with engine.begin() as conn:
        await conn.execute(sa.update(db.questions).where(db.questions.c.id == first.id).values(text="Milk or juice?"))
        await conn.execute(db.choices.delete().where(db.choices.c.question_id == second.id))
        await conn.execute(db.questions.delete().where(db.questions.c.id == second.id))
    assert await texts_found(engine, "tea") == []
    assert await texts_found(engine, "juice") == ["Milk or juice?"]


def test_cursor_is_written_and_read_back_to_the_microsecond() -> None:
    place = db.Cursor(datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), 42)
    assert str(place) == "1767323045123456_42"
    assert db.Cursor.parse(str(place)) == place


@pytest.mark.parametrize(
    "text", ["", "42", "1_", "_1", "1.5_2", "1_2_3", "1_2147483648", "-99999999999999999_1", " 1_2", "١_١"]
)
def test_cursor_that_no_list_wrote_is_invalid(text: str) -> None:
    with pytest.raises(db.InvalidCursor):
        db.Cursor.parse(text)


async def test_count_stops_at_its_limit(client: Client) -> None:
    for n in range(3):
        await create_question(client, f"Question {n}?")
    engine = engine_of(client)
    assert (await db.count_questions(engine), await db.count_questions(engine, limit=4)) == (5, 4)


@pytest.mark.parametrize(
    ("text", "options", "errors"),
    [
        ("  Fine?  ", [" Yes ", "No"], None),
        ("Fine?", [f"c{n}" for n in range(10)], None),
        ("", ["Yes", "No"], {"text": "Write the question."}),
        (None, ["Yes", "No"], {"text": "The question must be text."}),
        ("x" * 201, ["Yes", "No"], {"text": "At most 200 characters, please (this one has 201)."}),
        ("Fine?", ["Yes"], {"choices": "Give 2 to 10 choices (you gave 1)."}),
        ("Fine?", ("Yes", "No", "YES"), {"choices": "Choice 'YES' is given twice."}),
        ("Fine?", {"Yes": 1, "No": 2}, {"choices": "The choices must be a list of texts."}),
    ],
)
def test_validate_question_applies_the_rules(
    text: object, options: object, errors: dict[str, str] | None
) -> None:
    if errors is None:
        clean_text, clean_options = db.validate_question(text, options)
        assert clean_text == str(text).strip()
        assert clean_options == [str(o).strip() for o in options]  # type: ignore[union-attr]
    else:
        with pytest.raises(db.InvalidQuestion) as caught:
            db.validate_question(text, options)
        assert caught.value.errors == errors


async def test_health_reports_polls_ready(client: Client) -> None:
    async with client.get("/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["subapps"]["polls"] == {"ready": True}
