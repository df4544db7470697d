"""Drift detection's own state: the delta links of each target, the lease that lets one
worker at a time run a round, and the counts of drift found and repaired."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class DriftState(Base):
    """One row per target (a tenant id, or "sandbox").

    `users_delta_link` and `groups_delta_link` are Graph's @odata.deltaLink of the last round
    that finished: the next round asks only for what changed since (none: a full read). The
    lease (`locked_by` until `locked_until`, Unix seconds) is taken with one conditional
    UPDATE, so two workers on PostgreSQL never run a round at once; `next_round_at` is when
    the next round is due."""

    __tablename__ = "drift_state"

    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    users_delta_link: Mapped[str | None] = mapped_column(Text)
    groups_delta_link: Mapped[str | None] = mapped_column(Text)
    locked_by: Mapped[str | None] = mapped_column(String(128))
    locked_until: Mapped[float | None] = mapped_column(Float)
    next_round_at: Mapped[float | None] = mapped_column(Float)
    last_started_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # The last round's summary: {"mode", "found": {kind: n}, "graph_requests", "seconds"}.
    last_round: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class DriftCount(Base):
    """Drift found and repaired, by kind, since the schema was made: counters that only grow,
    written in the transactions that find (or repair) it, whichever process that is."""

    __tablename__ = "drift_counts"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    detected: Mapped[int] = mapped_column(BigInteger, default=0)
    repaired: Mapped[int] = mapped_column(BigInteger, default=0)
