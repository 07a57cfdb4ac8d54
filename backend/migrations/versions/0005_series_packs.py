"""series_packs: packed copies of ended runs' series, for fast reads

Reading a run's 8 layers x 1000 steps row by row costs PostgreSQL ~15 ms of aggregation, and a
compare view of 20 runs ~300 ms; reading one packed bytea per series costs well under 1 ms per
run. Packs are a cache (crud/packs.py): built on the first read of an ended run, checked against
the run row's signature on every read, removed with the run (ON DELETE CASCADE). The data
column is stored EXTERNAL on PostgreSQL: float values barely compress, so no pglz attempt.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "series_packs",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=200), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_series_packs_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "kind", "key", name=op.f("pk_series_packs")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE series_packs ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("series_packs")
