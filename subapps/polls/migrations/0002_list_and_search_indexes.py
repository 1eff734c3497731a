"""Indexes for a long list: its order, and search by text.

- `polls_question_created_at_id` on (created_at, id): every list page reads it in order,
  from a cursor, instead of sorting the whole table.
- Search ("the text contains q, whatever its case") through trigrams, one way per database:
  - SQLite: `polls_question_fts`, an FTS5 table with the trigram tokenizer (SQLite 3.34 or
    later) whose content is polls_question's `text` by rowid, filled from the rows already
    there and kept in step by three triggers on polls_question.
  - PostgreSQL: the pg_trgm extension (created if missing: a trusted extension, which the
    database's owner may create) and a GIN trigram index on `text`, which `ILIKE '%q%'`
    uses; `text` gets a larger statistics sample, so that the planner can tell a rare text
    from a common one. The index is built while writes to polls_question wait (seconds for a
    million questions).

A later revision that makes batch mode rebuild polls_question on SQLite (a copy of the
table, then a rename) loses the triggers with the old table: it must create them again
(`_create_triggers` below shows them); the polls tests fail on SQLite until it does.
Downgrade removes all of this and keeps every row; it leaves the pg_trgm extension, which
other tables of the database may use.
"""

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TRIGGERS = {
    "polls_question_fts_insert": """
        CREATE TRIGGER polls_question_fts_insert AFTER INSERT ON polls_question BEGIN
            INSERT INTO polls_question_fts (rowid, text) VALUES (new.id, new.text);
        END""",
    "polls_question_fts_delete": """
        CREATE TRIGGER polls_question_fts_delete AFTER DELETE ON polls_question BEGIN
            INSERT INTO polls_question_fts (polls_question_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END""",
    "polls_question_fts_update": """
        CREATE TRIGGER polls_question_fts_update AFTER UPDATE OF id, text ON polls_question BEGIN
            INSERT INTO polls_question_fts (polls_question_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO polls_question_fts (rowid, text) VALUES (new.id, new.text);
        END""",
}


def upgrade() -> None:
    # IF NOT EXISTS: a database made by `metadata.create_all` (adopted at 0001) has it already.
    op.create_index("polls_question_created_at_id", "polls_question", ["created_at", "id"], if_not_exists=True)
    if op.get_bind().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE polls_question ALTER COLUMN text SET STATISTICS -1")
        op.drop_index("polls_question_text_trgm", table_name="polls_question")
    else:
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS polls_question_fts")
    op.drop_index("polls_question_created_at_id", table_name="polls_question")


def _upgrade_postgresql() -> None:
    bind = op.get_bind()
    available = bind.scalar(sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'"))
    if not available:
        raise RuntimeError(
            "polls 0002 needs PostgreSQL's pg_trgm extension, which this server lacks: install its "
            "contrib package (Debian: postgresql-contrib), then run the migration again"
        )
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index(
        "polls_question_text_trgm",
        "polls_question",
        ["text"],
        postgresql_using="gin",
        postgresql_ops={"text": "gin_trgm_ops"},
        if_not_exists=True,
    )
    # The default sample (100) sees a word in 1% of the rows as absent; 1000 tells 0.1% from none.
    op.execute("ALTER TABLE polls_question ALTER COLUMN text SET STATISTICS 1000")
    op.execute("ANALYZE polls_question")


def _upgrade_sqlite() -> None:
    if sqlite3.sqlite_version_info < (3, 34):
        raise RuntimeError(
            f"polls 0002 needs SQLite 3.34 or later (FTS5's trigram tokenizer); this Python has "
            f"{sqlite3.sqlite_version}: use a newer Python or PostgreSQL"
        )
    op.execute(
        "CREATE VIRTUAL TABLE polls_question_fts USING fts5("
        "text, content='polls_question', content_rowid='id', tokenize='trigram')"
    )
    op.execute("INSERT INTO polls_question_fts (polls_question_fts) VALUES ('rebuild')")  # the rows already there
    _create_triggers()


def _create_triggers() -> None:
    for sql in TRIGGERS.values():
        op.execute(sql)
