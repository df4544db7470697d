"""The brakes on guessing: failed attempts are counted per key (a portal user name, a client
address) over a window; past a key's limit it is locked until the window ends, and even a
right credential waits (else the lock would only slow guessing down).

Used by the portal's sign-in (keys per user name and per address) and by the SCIM API and
the OAuth token endpoint (a key per address, `api:` + the address). Kept in the database, so
every server process and machine shares one count. User names are stored as their SHA-256:
people type passwords into the user name field.

Each call costs O(1): primary-key reads and writes of the keys named, and a prune of rows
whose window and lock are over that runs at most once a minute per process, through the
index on `window_started_at`.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import request
from sqlalchemy import Connection, bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from models import LoginThrottle

PRUNE_EVERY_SECONDS = 60.0
_pruned_at = -math.inf
_prune_lock = threading.Lock()


def client_address() -> str:
    """The client's address. Behind SCIM_TRUSTED_PROXIES reverse proxies, ProxyFix (set up
    in create_app) has put the address their X-Forwarded-For gives here."""
    return request.remote_addr or "unknown"


def address_key(namespace: str, address: str) -> str:
    return f"{namespace}:{address}"[:320]


@dataclass(frozen=True)
class Limits:
    user_failures: int
    address_failures: int
    window: timedelta


@dataclass(frozen=True)
class Keys:
    """The portal's two keys for one sign-in."""

    user: str
    address: str

    @classmethod
    def of(cls, user_name: str, address: str) -> Keys:
        digest = hashlib.sha256(user_name.strip().lower().encode()).hexdigest()
        return cls(f"user:{digest}", address_key("addr", address))


_LOCK_OF_ONE = select(LoginThrottle.locked_until).where(LoginThrottle.key == bindparam("key"))
_LOCKS_OF_TWO = select(LoginThrottle.locked_until).where(
    LoginThrottle.key.in_([bindparam("key"), bindparam("other")])
)
_PRUNE = delete(LoginThrottle).where(
    LoginThrottle.window_started_at < bindparam("window_start"),
    or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < bindparam("now")),
)
# A row to count in, unless the key has one already (ON CONFLICT DO NOTHING), per dialect.
_NEW_ROW: dict[str, Insert] = {
    "sqlite": sqlite.insert(LoginThrottle).on_conflict_do_nothing(
        index_elements=[LoginThrottle.key]
    ),
    "postgresql": postgresql.insert(LoginThrottle).on_conflict_do_nothing(
        index_elements=[LoginThrottle.key]
    ),
}
# FOR UPDATE on PostgreSQL; SQLite's dialect leaves it out (a SQLite writer holds the database).
_COUNTED = (
    select(LoginThrottle.failures, LoginThrottle.window_started_at, LoginThrottle.locked_until)
    .where(LoginThrottle.key == bindparam("key"))
    .with_for_update()
)
_SET_COUNT = (
    update(LoginThrottle)
    .where(LoginThrottle.key == bindparam("row_key"))
    .values(
        failures=bindparam("count"),
        window_started_at=bindparam("started"),
        locked_until=bindparam("until"),
    )
)
_FORGET = delete(LoginThrottle).where(LoginThrottle.key == bindparam("key"))


def retry_after(conn: Connection, keys: Keys | Sequence[str], now: datetime) -> int:
    """Seconds until none of the keys is locked (0: not locked)."""
    names = [keys.user, keys.address] if isinstance(keys, Keys) else list(keys)
    if len(names) == 1:
        rows = conn.execute(_LOCK_OF_ONE, {"key": names[0]})
    else:
        rows = conn.execute(_LOCKS_OF_TWO, {"key": names[0], "other": names[1]})
    return wait_for([until for (until,) in rows], now)


def wait_for(locks: Sequence[datetime | None], now: datetime) -> int:
    """Seconds until none of the `locked_until` values is ahead of `now` (0: none is)."""
    waits = [(until - now).total_seconds() for until in locks if until is not None and until > now]
    return math.ceil(max(waits)) if waits else 0


def failed(conn: Connection, keys: Keys, limits: Limits, now: datetime) -> None:
    """Count a failed portal sign-in against both of its keys."""
    count(
        conn,
        [(keys.user, limits.user_failures), (keys.address, limits.address_failures)],
        limits.window,
        now,
    )


def count(
    conn: Connection, limits: Sequence[tuple[str, int]], window: timedelta, now: datetime
) -> None:
    """Count a failed attempt against each (key, limit), in the caller's write transaction."""
    _prune(conn, window, now)
    for key, limit in limits:
        _count(conn, key, limit, window, now)


def _prune(conn: Connection, window: timedelta, now: datetime) -> None:
    """Rows whose window and lock are over say nothing any more: delete them, at most once a
    minute in this process (the index on window_started_at finds them)."""
    global _pruned_at
    with _prune_lock:
        if time.monotonic() - _pruned_at < PRUNE_EVERY_SECONDS:
            return
        _pruned_at = time.monotonic()
    conn.execute(_PRUNE, {"window_start": now - window, "now": now})


def _count(conn: Connection, key: str, limit: int, window: timedelta, now: datetime) -> None:
    conn.execute(_NEW_ROW[conn.dialect.name], {"key": key, "failures": 0, "window_started_at": now})
    failures, started, locked = conn.execute(_COUNTED, {"key": key}).one()
    if started + window <= now or (locked is not None and locked <= now):
        failures, started = 0, now  # a new window
    failures += 1
    until = now + window if failures >= limit else None
    conn.execute(
        _SET_COUNT, {"row_key": key, "count": failures, "started": started, "until": until}
    )


def succeeded(conn: Connection, keys: Keys) -> None:
    """A right password clears the user's count; the address's stays (one address may try
    many names)."""
    conn.execute(_FORGET, {"key": keys.user})
