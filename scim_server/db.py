from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from models import Base

db = SQLAlchemy(model_class=Base)

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _is_sqlite(dbapi_connection: Any) -> bool:
    return type(dbapi_connection).__module__.startswith("sqlite3")


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # SQLite: enforce foreign keys (ON DELETE CASCADE) and let readers run beside the writer.
    if _is_sqlite(dbapi_connection):
        # The driver's own implicit BEGIN is replaced by the one below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()


@event.listens_for(Engine, "begin")
def _sqlite_begin(conn: Connection) -> None:
    """On SQLite a write request takes the write lock when its transaction begins.

    A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    another writer committed in between (busy_timeout cannot help); BEGIN IMMEDIATE waits
    for the lock instead. Reads stay deferred, so WAL lets them run beside the writer.
    """
    if conn.dialect.name != "sqlite":
        return
    writing = not has_request_context() or (
        request.method in WRITE_METHODS and not request.path.endswith("/.search")
    )
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")
