"""The SQLAlchemy handle, and what SQLite needs to serve concurrent writers well."""

from __future__ import annotations

import fcntl
import os
from typing import Any

from flask import g, has_request_context, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry, Pool

from models import Base

db = SQLAlchemy(model_class=Base)

READ_METHODS = {"GET", "HEAD", "OPTIONS"}
LOCK_KEY = "scim_write_lock"


def is_write_request() -> bool:
    """Whether the current request may change the directory. POST /.search only reads: it is
    a POST to keep the filter out of URLs (RFC 7644 §3.4.3)."""
    is_search = request.method == "POST" and request.path.rstrip("/").endswith("/.search")
    return request.method not in READ_METHODS and not is_search


def _is_sqlite(dbapi_connection: Any) -> bool:
    return type(dbapi_connection).__module__.startswith("sqlite3")


@event.listens_for(Engine, "connect")
def _sqlite_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    if not _is_sqlite(dbapi_connection):
        return
    # The driver's own implicit BEGIN is replaced by the one in _sqlite_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # Foreign keys for ON DELETE CASCADE; WAL so readers run beside the writer.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Index pages of a large directory stay in memory: 32 MiB of cache, reads through mmap.
    cursor.execute("PRAGMA cache_size=-32768")
    cursor.execute("PRAGMA mmap_size=268435456")
    cursor.execute("PRAGMA temp_store=MEMORY")
    path = next((row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main"), "")
    cursor.close()
    if path:
        # One descriptor per connection: flock() then queues threads and processes alike.
        record.info[LOCK_KEY] = os.open(path + ".writelock", os.O_RDWR | os.O_CREAT, 0o600)


@event.listens_for(Engine, "begin")
def _sqlite_begin(conn: Connection) -> None:
    """On SQLite a write request takes the write lock when its transaction begins.

    A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    another writer committed in between, and SQLite's busy handler waits by sleeping and
    polling, which starves writers under load. So writers first queue on an flock() (woken
    the moment it is free, across gunicorn's processes), then BEGIN IMMEDIATE. Reads stay
    deferred, so WAL lets them run beside the writer.
    """
    if conn.dialect.name != "sqlite":
        return
    writing = not has_request_context() or (is_write_request() and not g.get("read_phase", False))
    if writing:
        fd = conn.connection.info.get(LOCK_KEY)
        if fd is not None and not conn.connection.info.get("locked"):
            fcntl.flock(fd, fcntl.LOCK_EX)
            conn.connection.info["locked"] = True
    conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


@event.listens_for(Pool, "checkin")
def _unlock(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # The transaction has ended (committed, or rolled back on return to the pool).
    if record.info.pop("locked", False):
        fcntl.flock(record.info[LOCK_KEY], fcntl.LOCK_UN)


@event.listens_for(Pool, "close")
def _close_lock(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info.pop("locked", None)
    fd = record.info.pop(LOCK_KEY, None)
    if fd is not None:
        os.close(fd)  # closing the descriptor also releases its lock
