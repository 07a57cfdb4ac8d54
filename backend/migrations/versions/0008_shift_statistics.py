"""layer_stats: Li et al.'s layer statistic, the noise floors and the log-ratio quartiles

shift_li (Li et al. 2019's max(a/b, b/a) of channel-averaged variances), shift_floor and
shift_li_floor (what `shift` and `shift_li` read with no shift at the probe's sample sizes),
shift_log_q1 / shift_log_median / shift_log_q3 (quartiles over channels of the signed
log(eval_var/running_var)). docs/science.md §1 defines each. Older rows keep NULL.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "shift_li",
    "shift_floor",
    "shift_li_floor",
    "shift_log_q1",
    "shift_log_median",
    "shift_log_q3",
)


def upgrade() -> None:
    with op.batch_alter_table("layer_stats") as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("layer_stats") as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
