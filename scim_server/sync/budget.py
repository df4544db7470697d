"""Graph's write budget shared by every sync worker process on every machine.

Graph's budget is per app and tenant (3,000 writes per 150 s, graph.md), not per process: N
worker processes each pacing themselves to M365_WRITE_RATE would send N times the budget.
So the bucket lives in the database, one `sync_budgets` row per target, and a process takes
tokens from it in small grants (up to GRANT at a time, one short transaction) that its
threads then spend locally: the database is asked once per grant, not once per write.

A 429's Retry-After is shared too: it sets the row's `paused_until`, which every process
honours before the next grant it takes (so within at most GRANT writes of its own); the
process that got the 429 stops at once, as the local Pacer does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Engine, Insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from models import SyncBudget
from scim_server.db import begin
from scim_server.sync.pacer import Pacer

GRANT = 20  # tokens per grant: one $batch's worth
# The parts of one throttled $batch arrive milliseconds apart: a pause ending no later than
# this after the one already known is the same pause, not news for the database.
SAME_PAUSE = 0.5


class Source(Protocol):
    def take(self, need: float, want: float) -> tuple[float, float]:
        """Grant `want` tokens (want >= need): (tokens granted, seconds to wait before the first
        `need` of them may be spent). A paused target grants nothing: (0, seconds left)."""
        ...

    def pause(self, seconds: float) -> None:
        """Nobody writes to the target for `seconds` from now."""
        ...


class DatabaseBudget:
    """The `sync_budgets` row of one target as a token bucket refilled at `rate` per second,
    holding at most `burst`. A grant may take the bucket below zero, and the next taker waits
    until the rate has paid that debt back: over any time T the grants add up to at most
    burst + rate * T + one grant per process."""

    def __init__(
        self,
        engine: Engine,
        target: str,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.target = target
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock

    def _insert(self) -> Insert:
        """The target's row, full, unless it is there already (one statement, no race)."""
        values = {"target": self.target, "tokens": self.burst, "refilled_at": self._clock()}
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(SyncBudget).values(**values).on_conflict_do_nothing()
        return sqlite.insert(SyncBudget).values(**values).on_conflict_do_nothing()

    def take(self, need: float, want: float) -> tuple[float, float]:
        with begin(write=True, engine=self.engine) as conn:
            conn.execute(self._insert())
            row = conn.execute(
                select(SyncBudget.tokens, SyncBudget.refilled_at, SyncBudget.paused_until)
                .where(SyncBudget.target == self.target)
                .with_for_update()
            ).one()
            now = self._clock()
            tokens = min(self.burst, row.tokens + max(now - row.refilled_at, 0.0) * self.rate)
            if row.paused_until is not None and row.paused_until > now:
                granted, wait = 0.0, row.paused_until - now
            else:
                # The whole grant at once, so that a busy worker asks once per `want` writes;
                # its taker waits until the first `need` of them are paid for, and those
                # after it wait behind the debt the grant leaves.
                granted = max(need, want)
                wait = max(need - tokens, 0.0) / self.rate
            conn.execute(
                update(SyncBudget)
                .where(SyncBudget.target == self.target)
                .values(tokens=tokens - granted, refilled_at=now)
            )
        return granted, wait

    def pause(self, seconds: float) -> None:
        until = self._clock() + seconds
        with begin(write=True, engine=self.engine) as conn:
            conn.execute(self._insert())
            current = conn.execute(
                select(SyncBudget.paused_until)
                .where(SyncBudget.target == self.target)
                .with_for_update()
            ).scalar_one()
            if current is None or current < until:
                conn.execute(
                    update(SyncBudget)
                    .where(SyncBudget.target == self.target)
                    .values(paused_until=until)
                )


class SharedPacer(Pacer):
    """A Pacer whose tokens come from a shared Source in grants of up to `grant`.

    The worker sees the Pacer it knows: `acquire(cost)` waits until `cost` writes fit the
    budget, `hold(seconds)` pauses after a 429 for the longest Retry-After of a batch, not
    their sum. Grants are taken one thread at a time; the process's other threads wait
    behind it, as they would for the tokens it brings.
    """

    def __init__(
        self,
        source: Source,
        rate: float,
        grant: float = GRANT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rate, clock=clock, sleep=sleep)
        self.source = source
        self.grant = grant
        self._local = 0.0  # tokens granted, not spent yet
        self._paused_until = clock()  # this process's last known pause (its clock)
        self._fetching = threading.Lock()

    def acquire(self, cost: float = 1.0) -> float:
        waited = 0.0
        with self._fetching:
            while True:
                with self._lock:
                    pause = self._paused_until - self._clock()
                    if pause <= 0 and self._local >= cost:
                        self._local -= cost
                        return waited
                    need = cost - self._local
                if pause > 0:
                    self._sleep(pause)
                    waited += pause
                    continue
                granted, wait = self.source.take(need, max(need, self.grant))
                with self._lock:
                    self._local += granted
                if wait > 0:
                    self._sleep(wait)
                    waited += wait

    def hold(self, seconds: float) -> None:
        """Pause this process at once, and every other one before its next grant. The parts
        of one throttled $batch each say so: only a longer pause goes to the database."""
        with self._lock:
            until = self._clock() + seconds
            longer = until > self._paused_until + SAME_PAUSE
            self._paused_until = max(self._paused_until, until)
            self._local = 0.0  # Graph says the budget is spent: what is left is not ours
        if longer:
            self.source.pause(seconds)
