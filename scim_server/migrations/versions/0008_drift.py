"""drift: delta links, the round's lease, drift counts, and when drift was last found

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 14:00:00.000000

"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "drift_state",
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("users_delta_link", sa.Text(), nullable=True),
        sa.Column("groups_delta_link", sa.Text(), nullable=True),
        sa.Column("locked_by", sa.String(length=128), nullable=True),
        sa.Column("locked_until", sa.Float(), nullable=True),
        sa.Column("next_round_at", sa.Float(), nullable=True),
        sa.Column("last_started_at", sa.DateTime(), nullable=True),
        sa.Column("last_finished_at", sa.DateTime(), nullable=True),
        sa.Column("last_round", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("target", name=op.f("pk_drift_state")),
    )
    op.create_table(
        "drift_counts",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("detected", sa.BigInteger(), nullable=False),
        sa.Column("repaired", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_drift_counts")),
    )
    with op.batch_alter_table("m365_links", schema=None) as batch_op:
        batch_op.add_column(sa.Column("drift_found_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("m365_links", schema=None) as batch_op:
        batch_op.drop_column("drift_found_at")

    op.drop_table("drift_counts")
    op.drop_table("drift_state")
