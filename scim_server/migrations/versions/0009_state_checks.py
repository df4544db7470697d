"""state checks: CHECK constraints on the outbox's status and kind, and on the M365 links'
state and password state (their enums in models/states.py)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 14:00:00.000000

"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The values as of this revision (a later one that adds a state replaces its constraint).
EVENT_STATUSES = ("pending", "done", "dead")
EVENT_KINDS = (
    "created",
    "replaced",
    "patched",
    "password_set",
    "password",
    "deleted",
    "bound",
    "unbind",
    "drift",
    "drift_restore",
)
LINK_STATES = ("pending", "creating", "synced", "out_of_scope", "conflict", "error", "unbound")
PASSWORD_STATES = (
    "pending",
    "synced",
    "temporary",
    "unknown",
    "none",
    "federated",
    "error",
    "drifted",
)


def _in(name, values, nullable=False):
    column = sa.column(name)
    allowed = column.in_(values)
    return sa.or_(column.is_(None), allowed) if nullable else allowed


def upgrade():
    # batch_alter_table: SQLite cannot add a constraint to a table, so there the table is
    # copied with it; PostgreSQL gets an ALTER TABLE … ADD CONSTRAINT.
    with op.batch_alter_table("outbox") as batch:
        batch.create_check_constraint(op.f("ck_outbox_status"), _in("status", EVENT_STATUSES))
        batch.create_check_constraint(op.f("ck_outbox_event"), _in("event", EVENT_KINDS))
    with op.batch_alter_table("m365_links") as batch:
        batch.create_check_constraint(op.f("ck_m365_links_state"), _in("state", LINK_STATES))
        batch.create_check_constraint(
            op.f("ck_m365_links_password_state"),
            _in("password_state", PASSWORD_STATES, nullable=True),
        )


def downgrade():
    with op.batch_alter_table("m365_links") as batch:
        batch.drop_constraint(op.f("ck_m365_links_password_state"), type_="check")
        batch.drop_constraint(op.f("ck_m365_links_state"), type_="check")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint(op.f("ck_outbox_event"), type_="check")
        batch.drop_constraint(op.f("ck_outbox_status"), type_="check")
