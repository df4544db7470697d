"""The brake on password guessing at the portal: failed sign-ins are counted per user name
and per client address over a window; past a limit the key is locked until the window ends,
and even a right password waits (else the lock would only slow guessing down).

Kept in the database, so every server process and machine shares one count. User names are
stored as their SHA-256: people type passwords into the user name field.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from scim_server.db import Tx, read_datetime


@dataclass(frozen=True)
class Limits:
    user_failures: int
    address_failures: int
    window: timedelta


@dataclass(frozen=True)
class Keys:
    user: str
    address: str

    @classmethod
    def of(cls, user_name: str, address: str) -> Keys:
        digest = hashlib.sha256(user_name.strip().lower().encode()).hexdigest()
        return cls(f"user:{digest}", f"addr:{address}"[:320])


def retry_after(tx: Tx, keys: Keys, now: datetime) -> int:
    """Seconds until neither key is locked (0: not locked)."""
    rows = tx.rows(
        "SELECT locked_until FROM login_throttle WHERE key IN (?, ?)", (keys.user, keys.address)
    )
    waits = [
        (until - now).total_seconds()
        for (raw,) in rows
        if (until := read_datetime(raw)) is not None and until > now
    ]
    return math.ceil(max(waits)) if waits else 0


def failed(tx: Tx, keys: Keys, limits: Limits, now: datetime) -> None:
    """Count a failed attempt against both keys."""
    cutoff = tx.timestamp(now - limits.window)
    # Rows whose window and lock are over say nothing any more.
    tx.execute(
        "DELETE FROM login_throttle WHERE window_started_at < ?"
        " AND (locked_until IS NULL OR locked_until < ?)",
        (cutoff, tx.timestamp(now)),
    )
    for key, limit in ((keys.user, limits.user_failures), (keys.address, limits.address_failures)):
        _count(tx, key, limit, limits.window, now)


def _count(tx: Tx, key: str, limit: int, window: timedelta, now: datetime) -> None:
    tx.execute(
        "INSERT INTO login_throttle (key, failures, window_started_at) VALUES (?, 0, ?)"
        " ON CONFLICT (key) DO NOTHING",
        (key, tx.timestamp(now)),
    )
    lock = "" if tx.sqlite else " FOR UPDATE"  # a SQLite writer holds the database already
    failures, started_raw, locked_raw = tx.first(
        f"SELECT failures, window_started_at, locked_until FROM login_throttle WHERE key = ?{lock}",
        (key,),
    )
    started, locked = read_datetime(started_raw), read_datetime(locked_raw)
    if started + window <= now or (locked is not None and locked <= now):
        failures, started = 0, now  # a new window
    failures += 1
    until = now + window if failures >= limit else None
    tx.execute(
        "UPDATE login_throttle SET failures = ?, window_started_at = ?, locked_until = ?"
        " WHERE key = ?",
        (failures, tx.timestamp(started), tx.timestamp(until), key),
    )


def succeeded(tx: Tx, keys: Keys) -> None:
    """A right password clears the user's count; the address's stays (one address may try
    many names)."""
    tx.execute("DELETE FROM login_throttle WHERE key = ?", (keys.user,))
