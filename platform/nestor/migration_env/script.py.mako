"""${message}

Revision ${up_revision} of this sub-app's tables${", after " + down_revision if isinstance(down_revision, str) else ""}, written ${create_date}.
Review it before applying (`nestor db upgrade`): autogenerate cannot see renames, and writes a drop and an add.
"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
