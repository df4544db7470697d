"""The database schema's version: Alembic's revisions under scim_server/migrations.

Migrating is a step of its own (`scim-server db upgrade`, or `serve`/`worker --migrate`).
Every other command only checks that the schema is at this release's head, and refuses with
one line when it is behind. An upgrade holds a lock, so nodes that start together take turns:
a PostgreSQL advisory lock, or on SQLite a file lock beside the database file.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from sqlalchemy import bindparam, func, make_url, select

from scim_server.config import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_lock's key for schema upgrades: any constant no other code of ours takes.
ADVISORY_LOCK_KEY = 0x5C1_0001


class SchemaBehind(ConfigError):
    """The database's schema is older than this release's (or not there at all)."""


@dataclass(frozen=True)
class Revisions:
    current: str | None  # None: an empty database
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def revisions() -> Revisions:
    """Where the database's schema stands, against this release's newest revision."""
    from scim_server.db import begin

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None, "the migrations have a head"
    with begin(write=False) as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return Revisions(current, head)


def require_head() -> None:
    """SchemaBehind, with what to do, unless the schema is at this release's head."""
    found = revisions()
    if found.at_head:
        return
    where = "empty" if found.current is None else f"at revision {found.current}"
    raise SchemaBehind(
        f"the database schema is {where}; this release needs revision {found.head}: "
        "run `scim-server db upgrade` (or start with --migrate)"
    )


def upgrade() -> Revisions:
    """Upgrade the schema to the head, holding the upgrade lock."""
    from flask_migrate import upgrade as alembic_upgrade

    with _upgrade_lock():
        alembic_upgrade(directory=str(MIGRATIONS))
    return revisions()


_ADVISORY_LOCK = select(func.pg_advisory_lock(bindparam("key")))
_ADVISORY_UNLOCK = select(func.pg_advisory_unlock(bindparam("key")))


@contextmanager
def _upgrade_lock() -> Iterator[None]:
    from scim_server.db import db

    url = make_url(current_app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "postgresql":
        with db.engine.connect() as conn:
            conn.execute(_ADVISORY_LOCK, {"key": ADVISORY_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(_ADVISORY_UNLOCK, {"key": ADVISORY_LOCK_KEY})
        return
    database = url.database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
