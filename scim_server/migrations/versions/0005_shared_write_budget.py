"""shared write budget: one Graph write budget per target, shared by all sync workers

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:10:00.000000

"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "sync_budgets",
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.Float(), nullable=False),
        sa.Column("paused_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("target", name=op.f("pk_sync_budgets")),
    )


def downgrade():
    op.drop_table("sync_budgets")
