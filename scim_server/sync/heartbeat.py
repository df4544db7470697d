"""Sync worker heartbeats and counters, kept in the database (`sync_workers`).

A worker process may run on another machine than the HTTP server (`serve --no-sync` and
`scim-server worker` elsewhere), so what /readyz and /metrics say about the sync comes from
the database, never from the memory or the files of a process: each worker process rewrites
its row every SYNC_HEARTBEAT_SECONDS with the time and its counters since it started.

Counters only ever grow: /metrics reports the sum over all rows. A row that stopped beating
over STALE_AFTER ago (a crashed or killed worker), or the row of a worker that stops
cleanly, is folded into the row `retired`: its counters added there and the row deleted, in
one transaction. So the sums never go down and the table holds the live workers, the
recently dead and `retired`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from models import SyncWorker, utcnow

RETIRED = "retired"
STALE_AFTER = timedelta(hours=1)


def process_id() -> str:
    """This process as a worker: `host:pid`."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}"


def merge(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """Counters added: numbers summed, nested dicts merged key by key."""
    out = dict(total)
    for key, value in more.items():
        if isinstance(value, dict):
            out[key] = merge(out.get(key) or {}, value)
        elif isinstance(value, int | float):
            out[key] = (out.get(key) or 0) + value
    return out


_BEAT = (
    update(SyncWorker)
    .where(SyncWorker.id == bindparam("worker_id"))
    .values(beat_at=bindparam("now"), target=bindparam("to"), counters=bindparam("totals"))
)
_INSERT = insert(SyncWorker)
_ROWS = select(SyncWorker.id, SyncWorker.started_at, SyncWorker.beat_at, SyncWorker.counters).where(
    SyncWorker.id != RETIRED
)
_RETIRED = select(SyncWorker.beat_at, SyncWorker.counters).where(SyncWorker.id == RETIRED)
_FOLD_INTO_RETIRED = (
    update(SyncWorker)
    .where(SyncWorker.id == RETIRED)
    .values(beat_at=bindparam("now"), counters=bindparam("totals"))
)
_DELETE = delete(SyncWorker).where(SyncWorker.id.in_(bindparam("ids", expanding=True)))


def beat(
    conn: Connection,
    worker_id: str,
    target: str,
    started_at: datetime,
    counters: dict[str, Any],
) -> None:
    """Write this worker's heartbeat and counters, in the caller's transaction."""
    now = utcnow()
    params = {"worker_id": worker_id, "now": now, "to": target[:64], "totals": counters}
    if not conn.execute(_BEAT, params).rowcount:
        conn.execute(
            _INSERT,
            {
                "id": worker_id,
                "target": target[:64],
                "started_at": started_at,
                "beat_at": now,
                "counters": counters,
            },
        )


def fold(conn: Connection, worker_ids: list[str] | None = None) -> int:
    """Fold rows into `retired`: those named, else those stale for over STALE_AFTER, in the
    caller's transaction. Returns how many. Rows are locked first (PostgreSQL): two workers
    folding at once fold each row once."""
    postgres = conn.dialect.name == "postgresql"
    query = _ROWS
    if worker_ids is not None:
        query = query.where(SyncWorker.id.in_(worker_ids))
    else:
        query = query.where(SyncWorker.beat_at < utcnow() - STALE_AFTER)
    if postgres:
        query = query.with_for_update()
    rows = conn.execute(query).all()
    if not rows:
        return 0
    retired = conn.execute(_RETIRED.with_for_update() if postgres else _RETIRED).first()
    total = dict(retired.counters or {}) if retired is not None else {}
    newest = max(r.beat_at for r in rows)
    for row in rows:
        total = merge(total, row.counters or {})
    if retired is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    _INSERT,
                    {
                        "id": RETIRED,
                        "target": None,
                        "started_at": min(r.started_at for r in rows),
                        "beat_at": newest,
                        "counters": total,
                    },
                )
        except IntegrityError:  # another worker made `retired` meanwhile: fold next time
            return 0
    else:
        conn.execute(_FOLD_INTO_RETIRED, {"now": max(retired.beat_at, newest), "totals": total})
    conn.execute(_DELETE, {"ids": [r.id for r in rows]})
    return len(rows)


@dataclass(frozen=True)
class Summary:
    """What the rows say: the newest beat of any worker (None: none ever beat), the workers
    that beat within `fresh_within` and what they deliver to (SANDBOX, or a tenant id), and
    the summed counters."""

    newest_beat: datetime | None
    fresh: int
    counters: dict[str, Any]
    targets: tuple[str, ...] = ()

    def age_seconds(self, now: datetime) -> float | None:
        if self.newest_beat is None:
            return None
        return max((now - self.newest_beat).total_seconds(), 0.0)


_SUMMARY = select(SyncWorker.id, SyncWorker.target, SyncWorker.beat_at, SyncWorker.counters)


def summary(conn: Connection, fresh_within: timedelta) -> Summary:
    now = utcnow()
    newest: datetime | None = None
    fresh = 0
    counters: dict[str, Any] = {}
    targets: set[str] = set()
    for row in conn.execute(_SUMMARY):
        counters = merge(counters, row.counters or {})
        newest = row.beat_at if newest is None else max(newest, row.beat_at)
        if row.id != RETIRED and now - row.beat_at <= fresh_within:
            fresh += 1
            targets.add("SANDBOX" if row.target == "sandbox" else row.target or "unknown")
    return Summary(newest, fresh, counters, tuple(sorted(targets)))
