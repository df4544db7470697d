"""Microsoft 365 sync state: which M365 object a directory user or group is bound to, and
what was last delivered to it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, Float, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow
from models.states import LinkState, PasswordState, check


class M365Link(Base):
    __tablename__ = "m365_links"
    __table_args__ = (
        # A bound M365 object belongs to one directory resource only.
        Index("ux_m365_links_object_id", "object_id", unique=True),
        Index("ix_m365_links_state", "state"),
        CheckConstraint(check("state", LinkState), name="state"),
        CheckConstraint(
            check("password_state", PasswordState, nullable=True), name="password_state"
        ),
    )

    resource_type: Mapped[str] = mapped_column(String(16), primary_key=True)  # User | Group
    resource_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    object_id: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=LinkState.PENDING)  # LinkState
    # The Graph properties last delivered (users) or the displayName (groups).
    synced: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    manager_id: Mapped[str | None] = mapped_column(String(36))  # directory id last delivered
    created_in_m365_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Users: whether the account's password is the directory's (a PasswordState), and
    # M365's lastPasswordChangeDateTime as it
    # was right after the directory set it: a later value means it was changed in M365.
    password_state: Mapped[str | None] = mapped_column(String(16))
    password_synced_at: Mapped[datetime | None] = mapped_column(DateTime)
    password_stamp: Mapped[str | None] = mapped_column(String(40))
    # When drift detection last found M365 differing from what the directory sent.
    drift_found_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class SyncWorker(Base):
    """A sync worker process's heartbeat and its counters since it started.

    Each `scim-server worker` process (wherever it runs) keeps one row, `host:pid`, and
    rewrites it every few seconds: /readyz reads the newest beat, /metrics sums the counters.
    A row that stopped beating long ago is folded into the row `retired` (its counters
    added there), so the sums never go down while the table stays small.
    """

    __tablename__ = "sync_workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid, or "retired"
    target: Mapped[str | None] = mapped_column(String(64))  # "sandbox" or the tenant id
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # {"delivered": {"user": n, "group": n}, "graph_requests": {"200": n, …},
    #  "graph_throttled": n}: monotonic within the row.
    counters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SyncBudget(Base):
    """Graph's write budget for one target (a tenant id, or "sandbox"), shared by every sync
    worker process on every machine: a token bucket that refills at M365_WRITE_RATE.

    A worker takes a grant of a few tokens in one short transaction (the row locked with
    SELECT … FOR UPDATE on PostgreSQL) and spends them locally. `tokens` may go below zero:
    the worker that took the grant then waits until the debt is paid back at the rate.
    Times are Unix seconds (time.time()), comparable across processes and machines.
    """

    __tablename__ = "sync_budgets"

    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float, default=0.0)
    refilled_at: Mapped[float] = mapped_column(Float)  # when `tokens` was last brought up to date
    # A 429's Retry-After: no worker writes to this target before then.
    paused_until: Mapped[float | None] = mapped_column(Float)
