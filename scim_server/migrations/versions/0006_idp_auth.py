"""idp auth: token lifecycle and schemes, OAuth clients and access tokens

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 14:00:00.000000

"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scheme", sa.String(length=8), server_default="bearer", nullable=False)
        )
        batch_op.add_column(
            sa.Column("header_auth", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("basic_user", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_api_tokens_scheme"), "scheme IN ('bearer', 'basic')"
        )
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_clients")),
        sa.UniqueConstraint("client_id", name=op.f("uq_oauth_clients_client_id")),
    )
    op.create_table(
        "oauth_access_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_oauth_access_tokens_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_oauth_access_tokens")),
    )
    op.create_index(
        "ix_oauth_access_tokens_expires_at", "oauth_access_tokens", ["expires_at"], unique=False
    )
    op.create_index(
        op.f("ix_oauth_access_tokens_client_id"), "oauth_access_tokens", ["client_id"], unique=False
    )
    op.create_index(
        "ix_login_throttle_window_started_at", "login_throttle", ["window_started_at"], unique=False
    )


def downgrade():
    op.drop_index("ix_login_throttle_window_started_at", table_name="login_throttle")
    op.drop_index(op.f("ix_oauth_access_tokens_client_id"), table_name="oauth_access_tokens")
    op.drop_index("ix_oauth_access_tokens_expires_at", table_name="oauth_access_tokens")
    op.drop_table("oauth_access_tokens")
    op.drop_table("oauth_clients")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_api_tokens_scheme"), type_="check")
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("basic_user")
        batch_op.drop_column("header_auth")
        batch_op.drop_column("scheme")
