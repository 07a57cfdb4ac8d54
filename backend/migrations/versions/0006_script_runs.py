"""script runs: runs.kind, script_keys, extra_metrics (issue 15, the bnlab SDK)

A run is either trained by a bnlab worker from a config (kind "engine", every existing row) or
streamed from a user's own training loop through the SDK (kind "script"). A script client
holds a secret per run (script_keys stores its SHA-256): creating a run with a known key
returns that run, and ingest into a run needs one of its keys. Scalar metrics a script logs
under other names than run_metrics' columns go to extra_metrics, one row per (run, key, step).

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="engine")
        )
        batch_op.create_index(batch_op.f("ix_runs_kind"), ["kind"], unique=False)
    op.create_table(
        "script_keys",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_script_keys_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_script_keys")),
    )
    op.create_index(op.f("ix_script_keys_run_id"), "script_keys", ["run_id"], unique=False)
    op.create_table(
        "extra_metrics",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_extra_metrics_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "key", "step", name=op.f("pk_extra_metrics")),
    )


def downgrade() -> None:
    op.drop_table("extra_metrics")
    op.drop_index(op.f("ix_script_keys_run_id"), table_name="script_keys")
    op.drop_table("script_keys")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_kind"))
        batch_op.drop_column("kind")
