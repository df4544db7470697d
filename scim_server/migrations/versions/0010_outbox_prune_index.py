"""outbox prune index: delivered events by completion time, for retention's batches

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 21:30:00.000000

"""

from alembic import op


# revision identifiers, used by Alembic.
revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_status_completed", ["status", "completed_at"], unique=False
        )


def downgrade():
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_status_completed")
