"""Alembic environment: runs against the Flask app's engine and the models' metadata."""

from __future__ import annotations

from alembic import context
from flask import current_app

from scim_server.db import begin

config = context.config
migrate_ext = current_app.extensions["migrate"]
target_metadata = migrate_ext.db.metadata


def process_revision_directives(ctx, revision, directives):  # type: ignore[no-untyped-def]
    # `db migrate` with no model change writes no empty revision.
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []


def run_offline() -> None:
    context.configure(
        url=str(migrate_ext.db.engine.url), target_metadata=target_metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    args = dict(migrate_ext.configure_args)
    args.setdefault("process_revision_directives", process_revision_directives)
    # The whole upgrade is one transaction, begun as every writer's is (on SQLite: the write
    # lock, then BEGIN IMMEDIATE, so the DDL is transactional too); Alembic runs inside it.
    with migrate_ext.db.engine.connect() as connection, begin(write=True, on=connection):
        context.configure(connection=connection, target_metadata=target_metadata, **args)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
