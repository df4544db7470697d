"""Keeps the tenant in a SQLite file: one JSON snapshot, rewritten after each change."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS state (id INTEGER PRIMARY KEY, data TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path)

    def load(self) -> dict[str, Any] | None:
        conn = self._connect()
        try:
            row = conn.execute("SELECT data FROM state WHERE id = 1").fetchone()
        finally:
            conn.close()
        return json.loads(row[0]) if row else None

    def save(self, data: dict[str, Any]) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.execute(
                    "INSERT INTO state (id, data) VALUES (1, ?) "
                    "ON CONFLICT(id) DO UPDATE SET data = excluded.data",
                    (json.dumps(data),),
                )
        finally:
            conn.close()
