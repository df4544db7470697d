"""The data layer: the SQLAlchemy handle, `begin`, and what SQLite needs to serve
concurrent writers well.

Every table is reached one way: SQLAlchemy Core statements (on the tables that models/
declares) executed on a connection that `begin` opens, one transaction per change. The
statements that run on every request are built once, at import, with bound parameters, so
SQLAlchemy compiles each once per process. There is no ORM unit of work: the server reads
rows and writes statements, and nothing holds a second connection while it holds the
first, so no thread can wait on its own write lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import ConnectionPoolEntry, Pool

from models import Base

db = SQLAlchemy(model_class=Base)

LOCK_KEY = "scim_write_lock"
# SQLite copies the WAL back into the database file (a checkpoint: page writes and two
# fsyncs) inside the COMMIT that takes the WAL past wal_autocheckpoint pages, so with the
# default the writer queued behind our flock waited for it every 60-odd creates. Instead,
# after every CHECKPOINT_EVERY writes of a process, its checkpointer thread runs one: other
# writers go on meanwhile (a PASSIVE checkpoint never blocks them), and so does the request
# that asked for it (an HTTP worker runs one request at a time: scim_server.gate).
CHECKPOINT_EVERY = 64
WAL_BACKSTOP_PAGES = 10000  # 40 MiB: a Bulk request of thousands of users
PATH_KEY = "scim_sqlite_path"
_writes = 0


def _is_sqlite(dbapi_connection: Any) -> bool:
    return type(dbapi_connection).__module__.startswith("sqlite3")


@event.listens_for(Engine, "connect")
def _sqlite_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    if not _is_sqlite(dbapi_connection):
        return
    # Autocommit while the PRAGMAs below run (journal_mode cannot change in a transaction).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # Foreign keys for ON DELETE CASCADE; WAL so readers run beside the writer.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # A commit survives a crash of the process, not a power loss: the WAL is synced only at
    # checkpoints. FULL (a sync per commit, under the write lock) cost ~30% of write
    # throughput; README "Durability on SQLite" says what is traded.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # The checkpointer thread checkpoints (see Checkpointer); SQLite's own
    # checkpoint, which runs inside a COMMIT, is left as a backstop for large transactions.
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
    # Index pages of a large directory stay in memory: 32 MiB of cache, reads through mmap.
    cursor.execute("PRAGMA cache_size=-32768")
    cursor.execute("PRAGMA mmap_size=268435456")
    cursor.execute("PRAGMA temp_store=MEMORY")
    path = next((row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main"), "")
    cursor.close()
    if path:
        record.info[PATH_KEY] = path
        # One descriptor per connection: flock() then queues threads and processes alike.
        record.info[LOCK_KEY] = os.open(path + ".writelock", os.O_RDWR | os.O_CREAT, 0o600)
    # `begin` says BEGIN itself (_sqlite_begin). A transaction that does not go through it (a
    # test's session, a tool's engine.begin()) has the driver's own: BEGIN DEFERRED before
    # its first write, so its writes still commit together or not at all.
    dbapi_connection.isolation_level = "DEFERRED"


def _sqlite_begin(pooled: Any, write: bool) -> None:
    """On SQLite a writing transaction takes the write lock when it begins.

    A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    another writer committed in between, and SQLite's busy handler waits by sleeping and
    polling, which starves writers under load. So writers first queue on an flock() (woken
    the moment it is free, across the server's processes), then BEGIN IMMEDIATE. Reads begin
    deferred: WAL lets them run beside the writer, on one snapshot for all their statements.
    """
    if write:
        fd = pooled.info.get(LOCK_KEY)
        if fd is not None and not pooled.info.get("locked"):
            fcntl.flock(fd, fcntl.LOCK_EX)
            pooled.info["locked"] = True
    pooled.dbapi_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")


@contextmanager
def begin(
    *, write: bool, on: Connection | None = None, engine: Engine | None = None
) -> Iterator[Connection]:
    """One transaction, as a SQLAlchemy Core connection: it commits when the block ends
    normally and rolls back if it raises. `write=False` promises that it only reads: on
    SQLite it then runs beside the writer instead of queueing for the write lock.

    It runs on `on`, a connection kept for several transactions in a row (a read, then a
    write: one check-out from the pool), or else on one of `engine`'s (by default the app's)
    checked out for it alone.

    SQLite's BEGIN is said here, not in a "begin" event listener: a connection-event
    listener puts every statement and transaction of the engine on SQLAlchemy's
    event-dispatching path, which cost 9% of the instructions of a GET and 8% of a create
    (callgrind; benchmarks/RESULTS.md, "One data layer").
    """
    conn = on if on is not None else (engine if engine is not None else db.engine).connect()
    pooled = conn.connection
    try:
        if conn.dialect.name == "sqlite":
            _sqlite_begin(pooled, write)
        with conn.begin():
            yield conn
    finally:
        # Now, not at check-in: the next writer need not wait for the pool's bookkeeping,
        # and a connection kept for another transaction does not hold the lock meanwhile.
        release_write_lock(pooled.dbapi_connection, pooled.info)
        if on is None:
            conn.close()


def release_write_lock(dbapi_connection: Any, info: dict[Any, Any]) -> None:
    """Release the flock a writer took, once its transaction has ended; then ask for a
    checkpoint if this process's turn has come."""
    global _writes
    if not info.pop("locked", False):
        return
    fcntl.flock(info[LOCK_KEY], fcntl.LOCK_UN)
    _writes += 1
    if _writes % CHECKPOINT_EVERY == 0 and PATH_KEY in info:
        checkpointer.request(info[PATH_KEY])


class Checkpointer:
    """A thread of the process that runs SQLite's PASSIVE checkpoints when asked, on a
    connection of its own, so no request waits for the checkpoint's writes and fsyncs."""

    def __init__(self) -> None:
        self._init()
        os.register_at_fork(after_in_child=self._init)  # threads do not survive a fork

    def _init(self) -> None:
        self._lock = threading.Lock()
        self._wanted = threading.Condition(self._lock)
        self._paths: set[str] = set()
        self._thread: threading.Thread | None = None
        self.done = 0  # checkpoints run, for tests and curious operators

    def request(self, path: str) -> None:
        with self._lock:
            self._paths.add(path)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sqlite-checkpoint", daemon=True
                )
                self._thread.start()
            self._wanted.notify()

    def _run(self) -> None:
        connections: dict[str, sqlite3.Connection] = {}
        while True:
            with self._lock:
                while not self._paths:
                    self._wanted.wait()
                paths, self._paths = self._paths, set()
            for path in paths:
                # Should it fail (another process checkpointing, say), the next turn catches up.
                with contextlib.suppress(sqlite3.Error):
                    if path not in connections:
                        connections[path] = sqlite3.connect(
                            path, isolation_level=None, check_same_thread=False
                        )
                    connections[path].execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                with self._lock:
                    self.done += 1


checkpointer = Checkpointer()


@event.listens_for(Pool, "close")
def _close_lock(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info.pop("locked", None)
    fd = record.info.pop(LOCK_KEY, None)
    if fd is not None:
        os.close(fd)  # closing the descriptor also releases its lock
