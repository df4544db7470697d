"""Keeps the tenant in a SQLite file, one row per object and per change-log entry.

A save writes what changed since the last one (`TenantChanges`), so a write to the tenant
costs the same whether it holds ten users or a hundred thousand. The file of earlier versions
(one JSON snapshot of the whole tenant in a `state` table, rewritten after every change) is
converted when it is first opened.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scim_server.graph.emulator.tenant import TenantChanges

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenant (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY, deleted INTEGER NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, object_id TEXT NOT NULL, member_id TEXT
);
"""
# The three change logs of the tenant share one sequence: a row's kind says which it is in.
_USER, _GROUP, _MEMBER = "user", "group", "member"


class StateFile:
    """The tenant's file, on one connection that the emulator's threads share behind a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=10000")
        # WAL with synchronous=NORMAL: a commit survives the process (the sandbox runs in the
        # sync worker, which may be killed) without an fsync per write.
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._transaction() as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            self._convert_snapshot(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN … COMMIT, or ROLLBACK on an error; IMMEDIATE (the write lock at once) to
        write."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _convert_snapshot(self, conn: sqlite3.Connection) -> None:
        """Rewrite an earlier version's single JSON snapshot as rows, in the transaction that
        creates them."""
        legacy = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'state'"
        ).fetchone()
        if legacy is None:
            return
        row = conn.execute("SELECT data FROM state WHERE id = 1").fetchone()
        if row is not None:
            data = json.loads(row[0])
            _write(conn, TenantChanges.everything(data))
        conn.execute("DROP TABLE state")

    def tenant_id(self) -> str | None:
        with self._transaction(write=False) as conn:
            row = conn.execute("SELECT value FROM tenant WHERE key = 'tenant_id'").fetchone()
        return json.loads(row[0]) if row else None

    def load(self) -> dict[str, Any] | None:
        """The saved tenant, in the shape of `Tenant.to_dict`, or None if nothing was saved."""
        with self._transaction(write=False) as conn:
            meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM tenant")}
            if "tenant_id" not in meta:
                return None
            objects: list[dict[str, Any]] = []
            deleted: list[dict[str, Any]] = []
            for is_deleted, data in conn.execute(
                "SELECT deleted, data FROM objects ORDER BY rowid"
            ):
                (deleted if is_deleted else objects).append(json.loads(data))
            logs: dict[str, list[Any]] = {_USER: [], _GROUP: [], _MEMBER: []}
            for seq, kind, object_id, member_id in conn.execute(
                "SELECT seq, kind, object_id, member_id FROM log ORDER BY seq"
            ):
                entry = (seq, object_id, member_id) if kind == _MEMBER else (seq, object_id)
                logs[kind].append(entry)
        return {
            "tenant_id": meta["tenant_id"],
            "domains": meta.get("domains", []),
            "objects": objects,
            "deleted": deleted,
            "changes": logs[_USER],
            "group_changes": logs[_GROUP],
            "member_changes": logs[_MEMBER],
            # The sequence goes on after the last entry saved, whatever the file says of it.
            "seq": max(
                [meta.get("seq", 0), *(entries[-1][0] for entries in logs.values() if entries)]
            ),
        }

    def save(self, changes: TenantChanges) -> None:
        with self._transaction() as conn:
            _write(conn, changes)


def saved_tenant_id(path: Path) -> str | None:
    """The id of the tenant kept in `path`, or None (no file, or nothing saved in it)."""
    if not path.exists():
        return None
    store = StateFile(path)
    try:
        return store.tenant_id()
    finally:
        store.close()


def _write(conn: sqlite3.Connection, changes: TenantChanges) -> None:
    if changes.whole:
        conn.execute("DELETE FROM objects")
        conn.execute("DELETE FROM log")
    meta = {"tenant_id": changes.tenant_id, "domains": changes.domains, "seq": changes.seq}
    conn.executemany(
        "INSERT INTO tenant (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [(k, json.dumps(v)) for k, v in meta.items()],
    )
    for deleted, objects in ((0, changes.objects), (1, changes.deleted)):
        for obj in objects:
            data = json.dumps(obj)
            # In place while the object stays live (or deleted): its place in listings holds.
            # Moved between the two (a delete, a restore), it goes to the end, as in memory.
            updated = conn.execute(
                "UPDATE objects SET data = ? WHERE id = ? AND deleted = ?",
                (data, obj["id"], deleted),
            )
            if updated.rowcount == 0:
                conn.execute("DELETE FROM objects WHERE id = ?", (obj["id"],))
                conn.execute(
                    "INSERT INTO objects (id, deleted, data) VALUES (?, ?, ?)",
                    (obj["id"], deleted, data),
                )
    conn.executemany("DELETE FROM objects WHERE id = ?", [(i,) for i in changes.gone])
    conn.executemany(
        # One emulator at a time keeps a file. A second one started on it while the first runs
        # (`m365 plan` on the sandbox, beside the worker's) only reads, and saves nothing; if
        # it wrote, its entries would take the first's numbers: those stay, these are dropped.
        "INSERT OR IGNORE INTO log (seq, kind, object_id, member_id) VALUES (?, ?, ?, ?)",
        [
            *_log_rows(_USER, changes.changes),
            *_log_rows(_GROUP, changes.group_changes),
            *((seq, _MEMBER, gid, mid) for seq, gid, mid in changes.member_changes),
        ],
    )


def _log_rows(kind: str, entries: Iterable[tuple[int, str]]) -> Iterable[tuple[Any, ...]]:
    return ((seq, kind, object_id, None) for seq, object_id in entries)
