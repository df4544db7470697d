"""Retry as a pure policy: given a failure and the attempts so far, when to try again, or
whether to give up. No I/O, no clock: the caller passes `now` and a random source.

- Throttled: wait what Graph's Retry-After says (else back off); never counts toward giving
  up, because a 429 says nothing about the change itself.
- Transient (5xx, timeouts, dropped connections): exponential backoff with full jitter.
- NotFound within `lag_window` of the object's creation: replication lag, retried like a
  transient error (graph.md: "Treat it as lag and retry with backoff").
- Anything else (Invalid, Conflict, AuthError, a NotFound long after creation): permanent for
  this change; it goes to the dead letters at once unless the caller handles it.
- After `max_attempts` failures, give up and keep the error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from scim_server.graph.errors import GraphError, NotFound, Throttled, Transient


@dataclass(frozen=True)
class Retry:
    at: datetime
    counts: bool  # whether this failure counts toward max_attempts


@dataclass(frozen=True)
class GiveUp:
    reason: str


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 8
    base_seconds: float = 2.0
    cap_seconds: float = 600.0
    lag_window_seconds: float = 300.0

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempts)], at least base / 2."""
        ceiling = min(self.cap_seconds, self.base_seconds * (2 ** max(attempts, 0)))
        return max(self.base_seconds / 2, rng.uniform(0, ceiling))

    def decide(
        self,
        error: GraphError,
        attempts: int,
        now: datetime,
        rng: random.Random,
        created_at: datetime | None = None,
    ) -> Retry | GiveUp:
        """`attempts`: failures counted so far, this one excluded."""
        if isinstance(error, Throttled):
            wait = error.retry_after if error.retry_after is not None else None
            if wait is None:
                wait = self.backoff(attempts, rng)
            return Retry(now + timedelta(seconds=wait), counts=False)
        lagging = (
            isinstance(error, NotFound)
            and created_at is not None
            and (now - created_at).total_seconds() <= self.lag_window_seconds
        )
        if not (isinstance(error, Transient) or lagging):
            return GiveUp(f"{type(error).__name__}: {error}")
        if attempts + 1 >= self.max_attempts:
            return GiveUp(f"gave up after {attempts + 1} attempts: {type(error).__name__}: {error}")
        return Retry(now + timedelta(seconds=self.backoff(attempts, rng)), counts=True)
