"""The transactional outbox: every directory write adds rows here in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow
from models.states import EventKind, EventStatus, check


class OutboxEvent(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        # Claim order: oldest pending first; per resource, events are taken in id order.
        Index("ix_outbox_status_id", "status", "id"),
        Index("ix_outbox_resource", "resource_type", "resource_id", "id"),
        # Retention: a prune's batch is the oldest delivered events, found without walking
        # every delivered event still kept.
        Index("ix_outbox_status_completed", "status", "completed_at"),
        CheckConstraint(check("status", EventStatus), name="status"),
        CheckConstraint(check("event", EventKind), name="event"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    resource_type: Mapped[str] = mapped_column(String(16))  # "User" | "Group"
    resource_id: Mapped[str] = mapped_column(String(36))
    # An EventKind. A group's member changes ride on its replaced/patched events (payload).
    event: Mapped[str] = mapped_column(String(32))
    # Typed by kind: scim_server.outbox's payload types, checked when recorded and loaded.
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.PENDING)  # EventStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_by: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime)  # done or dead
    # The id of the request that made the change (X-Request-Id), sent to Graph as the
    # client-request-id of its delivery.
    request_id: Mapped[str | None] = mapped_column(String(64))
