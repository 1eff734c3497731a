"""The Alembic environment of every sub-app's migrations.

Alembic runs this file; `nestor.migrations.run` passes it the connection and the sub-app's
history (its version table and MetaData) in the Config's attributes. Only that sub-app's
tables are compared and migrated: the database holds every sub-app's, and their version tables.
"""

from typing import Any

from alembic import context

connection = context.config.attributes.get("connection")
history = context.config.attributes.get("nestor.history")
if connection is None or history is None or context.is_offline_mode():
    raise RuntimeError("Nestor's migrations run through `nestor db ...`, not Alembic's own command line")
names = {table.name for table in history.tables()}


def include(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
    """Compare and migrate this sub-app's tables (and their columns and indexes) only."""
    table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table in names


context.configure(
    connection=connection,
    target_metadata=history.metadata,
    version_table=history.version_table,
    render_as_batch=True,  # ALTERs SQLite lacks become a copy of the table
    compare_type=True,
    include_object=include,
)
with context.begin_transaction():
    context.run_migrations()
