"""A summary row per room, so that the room list stops grouping every message.

`chat_room` holds, for each room with history, how many messages it has (`messages`), the
id of its newest one (`last_id`) and when that one came (`last_message_at`); the index
`chat_room_last_id` gives the list's order (the most recently active first). The room list
(`GET /chat/` and `GET /chat/api/rooms`) grouped every message of chat_message on each
request: 3.6 s at a million messages. From now on `add_message` keeps the row in step in the
transaction of its insert, and the pruning of old messages (`keep_days`) takes them off it.

Upgrade fills the table from the messages already there (one pass over chat_message, while
writes to it wait). Downgrade drops the table and its index and keeps every message.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # IF NOT EXISTS: a database made by `metadata.create_all` (adopted at 0001) may have it already;
    # it is filled again below, from the messages, either way.
    op.create_table(
        "chat_room",
        sa.Column("room", sa.String(length=40), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("room"),
        if_not_exists=True,
    )
    with op.batch_alter_table("chat_room", schema=None) as batch_op:
        batch_op.create_index("chat_room_last_id", ["last_id"], unique=False, if_not_exists=True)
    op.execute("DELETE FROM chat_room")
    op.execute(
        "INSERT INTO chat_room (room, messages, last_id, last_message_at) "
        "SELECT room, count(*), max(id), max(created_at) FROM chat_message GROUP BY room"
    )


def downgrade() -> None:
    with op.batch_alter_table("chat_room", schema=None) as batch_op:
        batch_op.drop_index("chat_room_last_id")

    op.drop_table("chat_room")
