"""Polls storage: tables at start-up, sample questions once, queries and domain rules."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from pytest_aiohttp import AiohttpClient
from sqlalchemy.ext.asyncio import create_async_engine

from nestor_subapps.polls import db

from .conftest import BuildPolls, Client, create_question, engine_of

SAMPLE_TEXTS = [text for text, _ in reversed(db.SAMPLES)]  # newest first


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


@pytest.mark.parametrize(("q", "expected"), [("50%", ["Is 50% a lot?"]), ("a_b", ["Is a_b a name?"])])
async def test_search_treats_like_wildcards_as_text(client: Client, q: str, expected: list[str]) -> None:
    engine = engine_of(client)
    for text in ("Is 50% a lot?", "Is 50 a lot?", "Is a_b a name?", "Is axb a name?"):
        await db.create_question(engine, text, ["Yes", "No"])
    assert [question.text for question in await db.list_questions(engine, q=q, limit=10)] == expected
    assert await db.count_questions(engine, q=q) == len(expected)


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
