"""run_metrics.grad_cos: the gradient-noise probe (probe.grad_noise, docs/science.md §6)

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: runs without probe.grad_noise (and every earlier run) have no value.
    with op.batch_alter_table("run_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("grad_cos", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_metrics", schema=None) as batch_op:
        batch_op.drop_column("grad_cos")
