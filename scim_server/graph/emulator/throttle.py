"""A token bucket per app and tenant for Graph's identity write budget.

https://learn.microsoft.com/en-us/graph/throttling-limits (identity and access service limits:
3,000 write resource units per 150 s per app and tenant). The bucket holds `capacity` tokens and
refills at capacity/window per second; a write takes one token or is refused with the seconds
until one is back.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self, capacity: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.configure(capacity, window)

    def configure(self, capacity: int, window: float) -> None:
        if capacity < 1 or window <= 0:
            raise ValueError("the write budget needs capacity >= 1 and window > 0")
        with self._lock:
            self.capacity = capacity
            self.window = window
            self._tokens = float(capacity)
            self._stamp = self._clock()

    def _refill(self) -> None:
        now = self._clock()
        rate = self.capacity / self.window
        self._tokens = min(float(self.capacity), self._tokens + (now - self._stamp) * rate)
        self._stamp = now

    def take(self, cost: float = 1.0) -> int | None:
        """Take `cost` tokens: None when granted, else whole seconds to wait (Retry-After)."""
        with self._lock:
            self._refill()
            if self._tokens >= cost:
                self._tokens -= cost
                return None
            rate = self.capacity / self.window
            return max(1, math.ceil((cost - self._tokens) / rate))

    def remaining(self) -> float:
        with self._lock:
            self._refill()
            return self._tokens


class Budgets:
    """One bucket per (app id, tenant id), all sharing one configuration."""

    def __init__(self, capacity: int, window: float) -> None:
        self.capacity = capacity
        self.window = window
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()

    def configure(self, capacity: int, window: float) -> None:
        with self._lock:
            TokenBucket(capacity, window)  # validates
            self.capacity, self.window = capacity, window
            self._buckets.clear()

    def bucket(self, app_id: str, tenant_id: str) -> TokenBucket:
        with self._lock:
            key = (app_id, tenant_id)
            if key not in self._buckets:
                self._buckets[key] = TokenBucket(self.capacity, self.window)
            return self._buckets[key]
