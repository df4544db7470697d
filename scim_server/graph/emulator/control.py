"""Test-only controls: injected faults and the request log.

A fault is queued `count` times and taken by the next requests that match its method and path
prefix. Kinds: `status` (answer with a Graph error of that status; 429 and 503 carry
Retry-After), `timeout` (hold the request `seconds`, longer than the client's timeout, then 504)
and `drop` (close the connection without an answer).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

FAULT_KINDS = ("status", "timeout", "drop")


@dataclass
class Fault:
    kind: str
    status: int = 503
    retry_after: int | None = None
    seconds: float = 30.0
    count: int = 1
    method: str | None = None
    path: str = "/"

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        if not isinstance(data, dict) or data.get("kind") not in FAULT_KINDS:
            raise ValueError(f"a fault needs kind one of {', '.join(FAULT_KINDS)}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fault = cls(**known)
        if fault.kind == "status" and not (400 <= int(fault.status) <= 599):
            raise ValueError("a status fault needs a status from 400 to 599")
        if fault.count < 1:
            raise ValueError("count must be at least 1")
        if fault.method:
            fault.method = fault.method.upper()
        return fault

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and path.startswith(self.path)


class FaultQueue:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, method: str, path: str, kinds: tuple[str, ...] = FAULT_KINDS) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.matches(method, path):
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


class RequestLog:
    """Method, path, status and time of each request; never a body, a token or a password."""

    def __init__(self, limit: int = 10_000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, **entry: Any) -> None:
        entry.setdefault("time", time.time())
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
