"""The kernel's first table: form logins, so that logout ends a login for every copy of its cookie."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nestor_login",
        sa.Column("id", sa.String(length=43), nullable=False),
        sa.Column("setting", sa.String(length=63), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("nestor_login")
