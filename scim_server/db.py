"""The SQLAlchemy handle, and what SQLite needs to serve concurrent writers well."""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from flask import has_request_context, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry, Pool

from models import Base

db = SQLAlchemy(model_class=Base)

# Set while the sync worker's thread runs a transaction that only reads (sync.store): on
# SQLite it begins deferred instead of queueing for the write lock. A context variable, so
# each thread says it for itself, with or without a Flask app context.
read_phase: contextvars.ContextVar[bool] = contextvars.ContextVar("read_phase", default=False)

READ_METHODS = {"GET", "HEAD", "OPTIONS"}
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


@event.listens_for(Engine, "begin")
def _sqlite_begin(conn: Connection) -> None:
    """On SQLite a writing transaction takes the write lock when it begins.

    A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    another writer committed in between, and SQLite's busy handler waits by sleeping and
    polling, which starves writers under load. So writers first queue on an flock() (woken
    the moment it is free, across the server's processes), then BEGIN IMMEDIATE. Reads stay
    deferred, so WAL lets them run beside the writer.
    """
    if conn.dialect.name != "sqlite":
        return
    # `begin` says what the transaction does. A transaction that does not say may write.
    mode = conn.get_execution_options().get(MODE)
    if mode is None:
        reading = read_phase.get()
        writing = not reading and (not has_request_context() or is_write_request())
    else:
        writing = mode == "write"
    pooled = conn.connection
    if writing:
        fd = pooled.info.get(LOCK_KEY)
        if fd is not None and not pooled.info.get("locked"):
            fcntl.flock(fd, fcntl.LOCK_EX)
            pooled.info["locked"] = True
    # On the driver's connection: a statement through `conn` would cost a second trip
    # through SQLAlchemy's execution machinery for every transaction.
    pooled.dbapi_connection.execute("BEGIN IMMEDIATE" if writing else "BEGIN")  # type: ignore[union-attr]


MODE = "scim_transaction"  # the execution option by which `begin` tells _sqlite_begin


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
    """
    if on is None:
        engine = engine if engine is not None else db.engine
        with engine.connect() as conn, begin(write=write, on=conn) as same:
            yield same
        return
    on.execution_options(**{MODE: "write" if write else "read"})
    try:
        with on.begin():
            yield on
    finally:
        # Now, not at check-in: the next writer need not wait for the pool's bookkeeping,
        # and a connection kept for another transaction does not hold the lock meanwhile.
        pooled = on.connection
        release_write_lock(pooled.dbapi_connection, pooled.info)


@event.listens_for(Pool, "checkin")
def _unlock(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # The transaction has ended (committed, or rolled back on return to the pool).
    release_write_lock(dbapi_connection, record.info)


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


# ---------------------------------------------------------------- hand-written SQL
#
# The hot paths (GET, filter, create and PATCH of users, and token lookups) run a handful of
# short, fixed statements. Through the ORM session each costs 100-300 µs of Python (session
# and transaction bookkeeping, cache keys, result processing) against a few µs in SQLite
# itself, so they run here instead: hand-written SQL on the DBAPI connection, with `?`
# placeholders (rewritten to `%s` for psycopg). The transaction rules stay those above:
# on SQLite a writer takes the flock() and BEGIN IMMEDIATE, a reader a deferred BEGIN.


def _sqlite_datetime(moment: datetime | None) -> str | None:
    """SQLAlchemy's storage format for DateTime on SQLite (always six fraction digits), so
    rows written here and through the ORM compare and sort alike."""
    if moment is None:
        return None
    return moment.isoformat(" ", "microseconds")


def read_datetime(value: Any) -> Any:
    """A DateTime column read by hand: SQLite returns the text _sqlite_datetime wrote."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class Tx:
    """A transaction on one DBAPI connection. Statements are written with `?` placeholders.

    `timestamp` and `json` convert parameters that the driver does not map itself: SQLite
    keeps datetimes as text (and booleans as integers: readers convert what they read).
    """

    __slots__ = ("_sql", "connection", "dbapi", "rollback_only", "sqlite", "writing")

    def __init__(self, dbapi_connection: Any, sqlite: bool, dbapi: Any, writing: bool) -> None:
        self.connection = dbapi_connection
        self.sqlite = sqlite
        self.dbapi = dbapi
        self.writing = writing
        # Set when a write transaction turned out to have nothing to keep: no COMMIT.
        self.rollback_only = False
        self._sql: dict[str, str] = _SQL_SQLITE if sqlite else _SQL_PG

    def _text(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = self._sql[sql] = sql if self.sqlite else sql.replace("?", "%s")
        return text

    def _run(self, sql: str, params: Sequence[Any], many: bool = False) -> Any:
        cursor = self.connection.cursor()
        try:
            if many:
                cursor.executemany(self._text(sql), params)
            else:
                cursor.execute(self._text(sql), params)
        except self.dbapi.Error as exc:
            # The ORM's exception classes, so the handlers for IntegrityError (409) and
            # DataError (400) apply here too.
            raise DBAPIError.instance(sql, params, exc, self.dbapi.Error) from exc
        return cursor

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self._run(sql, params).fetchall())

    def first(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._run(sql, params).fetchone()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a write; returns the number of rows it changed."""
        return int(self._run(sql, params).rowcount)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        self._run(sql, params, many=True)

    def timestamp(self, moment: datetime | None) -> Any:
        return _sqlite_datetime(moment) if self.sqlite else moment

    def json(self, value: Any) -> Any:
        if self.sqlite:
            return json.dumps(value)  # as SQLAlchemy's JSON type stores it
        from psycopg.types.json import Json

        return Json(value)


_SQL_SQLITE: dict[str, str] = {}
_SQL_PG: dict[str, str] = {}


def session_tx(session: Any = None) -> Tx:
    """The current transaction of `session` (by default the app's) as a Tx: hand-written
    reads beside ORM queries, in the same snapshot."""
    connection = (session or db.session).connection()
    dialect = connection.dialect
    fairy = connection.connection
    return Tx(fairy.dbapi_connection, dialect.name == "sqlite", dialect.loaded_dbapi, False)


@contextmanager
def connection() -> Iterator[Any]:
    """A pooled connection kept for several transactions in a row (a read, then a write):
    one check-out and check-in instead of one per transaction. Pass it to `transaction`."""
    fairy = db.engine.raw_connection()
    try:
        yield fairy
    finally:
        fairy.close()


@contextmanager
def transaction(write: bool, on: Any = None) -> Iterator[Tx]:
    """One transaction on a pooled connection, without the ORM session; commits a write when
    the block ends normally, rolls back otherwise (and after every read). It runs on `on`, a
    connection from `connection()`, or else on one checked out for it alone.

    A request must not write through this and the session at once: on SQLite both would
    queue on the write lock.
    """
    engine = db.engine
    dialect = engine.dialect
    sqlite = dialect.name == "sqlite"
    if write and sqlite and db.session.registry.has() and db.session().in_transaction():
        # The session may hold the write lock (a write request's session transactions take
        # it, and outside requests every one does): waiting for the lock here would wait for
        # ourselves for ever, so fail loudly instead.
        raise RuntimeError("A session transaction is open; end it before db.transaction.")
    fairy = on if on is not None else engine.raw_connection()
    raw: Any = fairy.dbapi_connection
    try:
        if sqlite:
            if write:
                fd = fairy.info.get(LOCK_KEY)
                if fd is not None and not fairy.info.get("locked"):
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    fairy.info["locked"] = True  # released after COMMIT, else at check-in
            raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        tx = Tx(raw, sqlite, dialect.loaded_dbapi, write)
        yield tx
        if write and not tx.rollback_only:
            try:
                raw.commit()
            except dialect.loaded_dbapi.Error as exc:
                raise DBAPIError.instance("COMMIT", (), exc, dialect.loaded_dbapi.Error) from exc
        else:
            raw.rollback()
        if sqlite and write:
            # Now, not at check-in: the next writer need not wait for the pool's bookkeeping.
            release_write_lock(raw, fairy.info)
    except BaseException:
        if on is not None:
            # The connection outlives this transaction: end it now, as check-in would.
            with contextlib.suppress(dialect.loaded_dbapi.Error):
                raw.rollback()
            release_write_lock(raw, fairy.info)
        raise
    finally:
        if on is None:
            fairy.close()  # back to the pool, which rolls back whatever is still open
