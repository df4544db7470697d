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

from scim_server.db import Tx, read_datetime

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


def retry_after(tx: Tx, keys: Keys | Sequence[str], now: datetime) -> int:
    """Seconds until none of the keys is locked (0: not locked)."""
    names = [keys.user, keys.address] if isinstance(keys, Keys) else list(keys)
    if len(names) == 1:
        rows = tx.rows("SELECT locked_until FROM login_throttle WHERE key = ?", names)
    else:
        rows = tx.rows(
            "SELECT locked_until FROM login_throttle WHERE key IN (?, ?)", (names[0], names[1])
        )
    waits = [
        (until - now).total_seconds()
        for (raw,) in rows
        if (until := read_datetime(raw)) is not None and until > now
    ]
    return math.ceil(max(waits)) if waits else 0


def failed(tx: Tx, keys: Keys, limits: Limits, now: datetime) -> None:
    """Count a failed portal sign-in against both of its keys."""
    count(
        tx,
        [(keys.user, limits.user_failures), (keys.address, limits.address_failures)],
        limits.window,
        now,
    )


def count(tx: Tx, limits: Sequence[tuple[str, int]], window: timedelta, now: datetime) -> None:
    """Count a failed attempt against each (key, limit)."""
    _prune(tx, window, now)
    for key, limit in limits:
        _count(tx, key, limit, window, now)


def _prune(tx: Tx, window: timedelta, now: datetime) -> None:
    """Rows whose window and lock are over say nothing any more: delete them, at most once a
    minute in this process (the index on window_started_at finds them)."""
    global _pruned_at
    with _prune_lock:
        if time.monotonic() - _pruned_at < PRUNE_EVERY_SECONDS:
            return
        _pruned_at = time.monotonic()
    tx.execute(
        "DELETE FROM login_throttle WHERE window_started_at < ?"
        " AND (locked_until IS NULL OR locked_until < ?)",
        (tx.timestamp(now - window), tx.timestamp(now)),
    )


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
