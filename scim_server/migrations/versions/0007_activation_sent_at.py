"""activation links: when each was handed to the mail transport

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:10:00.000000

"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("activation_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sent_at", sa.DateTime(), nullable=True))
    # Links made before this revision went out as they were made.
    op.execute("UPDATE activation_tokens SET sent_at = created_at")


def downgrade():
    with op.batch_alter_table("activation_tokens", schema=None) as batch_op:
        batch_op.drop_column("sent_at")
