"""The monitor tables as they were before migrations (created by `tables()` at start-up).

A database made by that code is recognised and stamped at this revision on its first
upgrade, with no data touched; a new database is created by it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('monitor_change',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target', sa.String(length=63), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('previous', sa.String(length=10), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('error', sa.String(length=20), nullable=True),
    sa.Column('detail', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('monitor_change', schema=None) as batch_op:
        batch_op.create_index('monitor_change_target_id', ['target', 'id'], unique=False)

    op.create_table('monitor_check',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('target', sa.String(length=63), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('error', sa.String(length=20), nullable=True),
    sa.Column('detail', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('monitor_check', schema=None) as batch_op:
        batch_op.create_index('monitor_check_target_id', ['target', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('monitor_check', schema=None) as batch_op:
        batch_op.drop_index('monitor_check_target_id')

    op.drop_table('monitor_check')
    with op.batch_alter_table('monitor_change', schema=None) as batch_op:
        batch_op.drop_index('monitor_change_target_id')

    op.drop_table('monitor_change')
