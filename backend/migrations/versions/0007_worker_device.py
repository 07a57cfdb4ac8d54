"""workers.device: what each worker process trains on (issue 16: health for orchestrators)

A JSON object the worker writes when it registers: CUDA_VISIBLE_DEVICES it was pinned to,
whether CUDA started, the GPU's name, the driver version, and the error when CUDA could not
start on this host's driver (the worker then refuses runs instead of training on the CPU).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch_op:
        batch_op.add_column(sa.Column("device", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch_op:
        batch_op.drop_column("device")
