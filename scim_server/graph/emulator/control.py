"""Test-only controls: injected faults, the request log, and the mail sent.

A fault is queued `count` times and taken by the next requests that match its method and path
prefix. Kinds: `status` (answer with a Graph error of that status, and of that `code` and
`message` when given, e.g. 403 ErrorSendAsDenied; 429 and 503 carry Retry-After), `timeout`
(hold the request `seconds`, longer than the client's timeout, then 504) and `drop` (close
the connection without an answer).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

FAULT_KINDS = ("status", "timeout", "drop")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_FAULT_SECONDS = 3600.0


def checked_int(data: dict[str, Any], name: str, low: int, high: int | None = None) -> int:
    """data[name] as an int in [low, high]; a bool, float or string is a ValueError (400)."""
    value = data[name]
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}")
    return value


def checked_number(
    data: dict[str, Any], name: str, low: float, high: float, *, low_open: bool = False
) -> float:
    """data[name] as a finite int or float in [low, high] (or (low, high]), else ValueError."""
    value = data[name]
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    if value > high or value < low or (low_open and value == low):
        bound = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bound}{low:g}, {high:g}]")
    return float(value)


@dataclass
class Fault:
    kind: str
    status: int = 503
    retry_after: int | None = None
    seconds: float = 30.0
    count: int = 1
    method: str | None = None
    path: str = "/"
    code: str | None = None  # a status fault's error code; by default one for the status
    message: str | None = None  # … and its message

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """A fault from the control endpoint's JSON, each field type- and range-checked (a
        bad one is a ValueError, so a 400, never a fault that breaks later requests)."""
        if not isinstance(data, dict) or data.get("kind") not in FAULT_KINDS:
            raise ValueError(f"a fault needs kind one of {', '.join(FAULT_KINDS)}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        fault = cls(kind=data["kind"])
        if "status" in data:
            fault.status = checked_int(data, "status", 400, 599)
        if data.get("retry_after") is not None:
            fault.retry_after = checked_int(data, "retry_after", 0, 86_400)
        if "seconds" in data:
            fault.seconds = checked_number(data, "seconds", 0.0, MAX_FAULT_SECONDS)
        if "count" in data:
            fault.count = checked_int(data, "count", 1)
        if data.get("method") is not None:
            method = data["method"]
            if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
                raise ValueError(f"method must be one of {', '.join(HTTP_METHODS)}")
            fault.method = method.upper()
        for name in ("code", "message"):
            if data.get(name) is not None:
                value = data[name]
                if not isinstance(value, str) or not value or len(value) > 1000:
                    raise ValueError(f"{name} must be a non-empty string")
                setattr(fault, name, value)
        if "path" in data:
            path = data["path"]
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError("path must be a string that starts with '/'")
            fault.path = path
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


class SentMail:
    """The messages sendMail accepted, oldest first, for tests to read (GET /_emulator/mail)
    and clear (DELETE). Kept in memory only, and at most `limit`."""

    def __init__(self, limit: int = 10_000) -> None:
        self._messages: deque[dict[str, Any]] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._messages.append(message)

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
