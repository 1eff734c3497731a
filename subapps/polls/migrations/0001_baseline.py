"""The polls tables as they were before migrations (created by `tables()` at start-up).

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
    op.create_table('polls_question',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('text', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('polls_seed',
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('polls_choice',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('question_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.String(length=200), nullable=False),
    sa.Column('votes', sa.Integer(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['question_id'], ['polls_question.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('polls_choice', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_polls_choice_question_id'), ['question_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('polls_choice', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_polls_choice_question_id'))

    op.drop_table('polls_choice')
    op.drop_table('polls_seed')
    op.drop_table('polls_question')
