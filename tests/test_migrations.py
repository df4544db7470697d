"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from sqlalchemy.exc import IntegrityError

from models import Base
from scim_server import create_app


def test_migrations_match_models(app: Flask) -> None:
    from scim_server.db import db

    with app.app_context(), db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def _insert(conn: sa.Connection, table: str, **row: object) -> None:
    conn.execute(sa.table(table, *(sa.column(c) for c in row)).insert().values(**row))


OUTBOX_ROW = {
    "resource_type": "User",
    "resource_id": "u1",
    "payload": "{}",
    "attempts": 0,
    "created_at": datetime(2026, 12, 2),
}


@pytest.mark.parametrize(
    ("table", "row"),
    [
        ("outbox", {**OUTBOX_ROW, "event": "created", "status": "sent"}),
        ("outbox", {**OUTBOX_ROW, "event": "members_added", "status": "pending"}),
        ("m365_links", {"resource_type": "User", "resource_id": "u1", "state": "gone"}),
        (
            "m365_links",
            {
                "resource_type": "User",
                "resource_id": "u1",
                "state": "synced",
                "password_state": "x",
            },
        ),
    ],
)
def test_states_are_checked_and_0009_goes_down_and_up(
    fresh_database_url: str, table: str, row: dict[str, object]
) -> None:
    """Revision 0009's CHECK constraints refuse a state (or kind) outside its enum, on SQLite
    (a table copied by batch mode) as on PostgreSQL; its downgrade drops them, and the
    upgrade after it builds the models' schema again."""
    from flask_migrate import downgrade

    from scim_server.db import db
    from scim_server.dbschema import MIGRATIONS, upgrade

    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": fresh_database_url})
    if table == "m365_links":
        row = {**row, "updated_at": datetime(2026, 12, 2)}
    with app.app_context():
        upgrade()
        with pytest.raises(IntegrityError), db.engine.begin() as conn:
            _insert(conn, table, **row)
        downgrade(directory=str(MIGRATIONS), revision="0008")
        with db.engine.begin() as conn:  # no constraint: taken
            _insert(conn, table, **row)
            conn.execute(sa.text(f"DELETE FROM {table}"))
        upgrade()
        with db.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            valid = (
                {**row, "status": "pending"} if table == "outbox" else {**row, "state": "synced"}
            )
            valid.update({"event": "created"} if table == "outbox" else {"password_state": None})
            _insert(conn, table, **valid)  # the enums' values are taken
            conn.rollback()
        db.engine.dispose()


def test_the_checks_of_0009_allow_exactly_the_enums_values() -> None:
    """Revision 0009's CHECK constraints hold every state the code knows (drift's kinds and
    `drifted` among them): a state added to an enum needs a migration that says so."""
    import importlib.util

    from models import EventKind, EventStatus, LinkState, PasswordState
    from scim_server.dbschema import MIGRATIONS

    path = MIGRATIONS / "versions" / "0009_state_checks.py"
    spec = importlib.util.spec_from_file_location("state_checks_0009", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.EVENT_STATUSES) == {s.value for s in EventStatus}
    assert set(module.EVENT_KINDS) == {s.value for s in EventKind}
    assert set(module.LINK_STATES) == {s.value for s in LinkState}
    assert set(module.PASSWORD_STATES) == {s.value for s in PasswordState}
    assert {"drift", "drift_restore"} <= set(module.EVENT_KINDS)
    assert "drifted" in module.PASSWORD_STATES
