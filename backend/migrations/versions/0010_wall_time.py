"""run_metrics.wall_time: when each probe ran (UNIX seconds), for the compare view's wall-time axis

Older rows keep NULL; the dashboard then places their points at the run's mean pace.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wall_time", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_metrics", schema=None) as batch_op:
        batch_op.drop_column("wall_time")
