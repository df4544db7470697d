"""The outbox: change events written in the same transaction as the change itself.

Consumers (the Graph sync) claim events with `claim()`: per resource, only the oldest
pending event is claimable, so changes to one user or group are applied in order while
different resources proceed in parallel. On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets several
workers claim at once without blocking each other; a lease (`locked_until`) returns the
events of a crashed worker to the queue.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import g, has_request_context
from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.orm import Session, aliased, scoped_session

from models import OutboxEvent, utcnow
from scim_server.db import Tx, read_datetime

AnySession = Session | scoped_session[Any]


def current_request_id() -> str | None:
    """The id of the HTTP request being served (api's `g.request_id`), if any: the change
    it causes carries it to Graph as the client-request-id of its delivery."""
    if not has_request_context():
        return None
    found = g.get("request_id")
    return found if isinstance(found, str) else None


def record(
    session: AnySession,
    resource_type: str,
    resource_id: str,
    event: str,
    payload: dict[str, Any],
    *,
    request_id: str | None = None,
) -> None:
    """`request_id`: the request that made the change; by default the one being served."""
    # A Core insert: no unit-of-work bookkeeping on every write's hot path.
    session.execute(
        insert(OutboxEvent),
        [
            {
                "resource_type": resource_type,
                "resource_id": resource_id,
                "event": event,
                "payload": payload,
                "status": "pending",
                "attempts": 0,
                "created_at": utcnow(),
                "request_id": request_id or current_request_id(),
            }
        ],
    )


@dataclass(frozen=True)
class Claimed:
    """A claimed event, detached from the session: reading it opens no transaction."""

    id: int
    resource_type: str
    resource_id: str
    event: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    request_id: str | None = None


def record_sql(
    tx: Tx,
    resource_type: str,
    resource_id: str,
    event: str,
    payload: dict[str, Any],
    *,
    request_id: str | None = None,
) -> None:
    """`record` for the writes that run hand-written SQL (db.transaction)."""
    tx.execute(
        "INSERT INTO outbox (resource_type, resource_id, event, payload, status, attempts,"
        " created_at, request_id) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)",
        (
            resource_type,
            resource_id,
            event,
            tx.json(payload),
            tx.timestamp(utcnow()),
            request_id or current_request_id(),
        ),
    )


def claim(
    session: AnySession, worker: str, limit: int = 20, lease_seconds: int = 60
) -> list[Claimed]:
    """Claim up to `limit` events, each the head of its resource's queue. Commits."""
    now = utcnow()
    earlier = aliased(OutboxEvent)
    query = (
        select(OutboxEvent)
        .where(
            OutboxEvent.status == "pending",
            or_(OutboxEvent.locked_until.is_(None), OutboxEvent.locked_until < now),
            ~exists().where(
                and_(
                    earlier.resource_type == OutboxEvent.resource_type,
                    earlier.resource_id == OutboxEvent.resource_id,
                    earlier.status == "pending",
                    earlier.id < OutboxEvent.id,
                )
            ),
        )
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=OutboxEvent)
    events = [
        Claimed(
            e.id,
            e.resource_type,
            e.resource_id,
            e.event,
            dict(e.payload or {}),
            e.attempts,
            e.created_at,
            e.request_id,
        )
        for e in session.scalars(query)
    ]
    if events:
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_([e.id for e in events]))
            .values(locked_by=worker, locked_until=now + timedelta(seconds=lease_seconds))
        )
    session.commit()
    return events


def heartbeat(session: AnySession, worker: str, lease_seconds: int = 60) -> int:
    """Extend the leases this worker holds; returns how many."""
    result = session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.locked_by == worker, OutboxEvent.status == "pending")
        .values(locked_until=utcnow() + timedelta(seconds=lease_seconds))
    )
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def release(session: AnySession, worker: str) -> int:
    """Give back the leases this worker holds (it is stopping): its claimed events, not yet
    delivered, are claimable again at once instead of after the lease. Returns how many."""
    result = session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.locked_by == worker, OutboxEvent.status == "pending")
        .values(locked_by=None, locked_until=None)
    )
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def complete(session: AnySession, event_id: int) -> None:
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id)
        .values(status="done", locked_by=None, locked_until=None, completed_at=utcnow())
    )
    session.commit()


def pending_through(
    session: AnySession, resource_type: str, resource_id: str, upto: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, event, payload) of a resource's pending events up to `upto`, in order: what one
    delivery of the resource's current state covers."""
    rows = session.execute(
        select(OutboxEvent.id, OutboxEvent.event, OutboxEvent.payload)
        .where(
            OutboxEvent.resource_type == resource_type,
            OutboxEvent.resource_id == resource_id,
            OutboxEvent.status == "pending",
            OutboxEvent.id <= upto,
        )
        .order_by(OutboxEvent.id)
    )
    return [(i, e, dict(p or {})) for i, e, p in rows]


def request_ids_through(
    session: AnySession, resource_type: str, resource_id: str, upto: int
) -> list[str]:
    """The request ids of a resource's pending events up to `upto`, oldest first, each once:
    the SCIM requests one delivery carries out."""
    rows = session.scalars(
        select(OutboxEvent.request_id)
        .where(
            OutboxEvent.resource_type == resource_type,
            OutboxEvent.resource_id == resource_id,
            OutboxEvent.status == "pending",
            OutboxEvent.id <= upto,
            OutboxEvent.request_id.is_not(None),
        )
        .order_by(OutboxEvent.id)
    )
    return list(dict.fromkeys(r for r in rows if r))


def last_pending_id(session: AnySession, resource_type: str, resource_id: str) -> int | None:
    return session.scalar(
        select(OutboxEvent.id)
        .where(
            OutboxEvent.resource_type == resource_type,
            OutboxEvent.resource_id == resource_id,
            OutboxEvent.status == "pending",
        )
        .order_by(OutboxEvent.id.desc())
        .limit(1)
    )


def complete_through(
    session: AnySession,
    resource_type: str,
    resource_id: str,
    upto: int,
    *,
    supersede_dead: bool = False,
) -> None:
    """Coalescing: one delivery of the current state completes every event it covers. With
    `supersede_dead` (state-based deliveries), earlier dead letters are covered too; they
    keep their error."""
    covered = OutboxEvent.status == "pending"
    if supersede_dead:
        # Not a dead password: the new state does not carry it, so it stays undelivered.
        covered = or_(covered, and_(OutboxEvent.status == "dead", OutboxEvent.event != "password"))
    session.execute(
        update(OutboxEvent)
        .where(
            OutboxEvent.resource_type == resource_type,
            OutboxEvent.resource_id == resource_id,
            covered,
            OutboxEvent.id <= upto,
        )
        .values(
            status="done",
            locked_by=None,
            locked_until=None,
            completed_at=utcnow(),
        )
    )


def scrub_secrets(session: AnySession, resource_type: str, resource_id: str) -> None:
    """A sealed password leaves the outbox once delivered or dead (issue 6): its row stays,
    for the record, without it."""
    session.execute(
        update(OutboxEvent)
        .where(
            OutboxEvent.resource_type == resource_type,
            OutboxEvent.resource_id == resource_id,
            OutboxEvent.event == "password",
            OutboxEvent.status != "pending",
        )
        .values(payload={})
    )


def retry_later(session: AnySession, event_id: int, at: datetime, counts: bool, error: str) -> None:
    """Put a claimed event back, claimable again from `at`; later events of its resource wait."""
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id)
        .values(
            locked_by=None,
            locked_until=at,
            attempts=OutboxEvent.attempts + (1 if counts else 0),
            last_error=error[:4000],
        )
    )


def dead(session: AnySession, event_id: int, error: str) -> None:
    """The dead letters keep the error; the resource's later events proceed."""
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id)
        .values(
            status="dead",
            locked_by=None,
            locked_until=None,
            completed_at=utcnow(),
            attempts=OutboxEvent.attempts + 1,
            last_error=error[:4000],
        )
    )


def reseal_passwords(session: AnySession, reseal: Callable[[str], str | None]) -> tuple[int, int]:
    """Seal the passwords still waiting for Microsoft 365 again with `reseal` (under the
    first encryption key; None: no key opens it): (resealed, not opened). Only pending rows
    are touched, so a password delivered (and scrubbed) meanwhile stays gone."""
    done = broken = 0
    rows = session.execute(
        select(OutboxEvent.id, OutboxEvent.payload).where(
            OutboxEvent.event == "password", OutboxEvent.status == "pending"
        )
    ).all()
    for event_id, payload in rows:
        sealed = (payload or {}).get("sealed")
        if not sealed:
            continue
        fresh = reseal(str(sealed))
        if fresh is None:
            broken += 1
            continue
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id == event_id, OutboxEvent.status == "pending")
            .values(payload={**payload, "sealed": fresh})
        )
        done += 1
    return done, broken


def oldest_pending_seconds(session: AnySession) -> float | None:
    """The age of the oldest pending change, or None. Ids grow with time, so the first
    pending id by the (status, id) index is the oldest: one index seek, whatever the size
    of the outbox."""
    created = session.scalar(
        select(OutboxEvent.created_at)
        .where(OutboxEvent.status == "pending")
        .order_by(OutboxEvent.id)
        .limit(1)
    )
    if created is None:
        return None
    age: float = (utcnow() - read_datetime(created)).total_seconds()
    return max(age, 0.0)


PRUNE_BATCH = 500  # ids per DELETE: each batch is a short transaction of its own


def prune(
    session: AnySession,
    before: datetime,
    batch: int = PRUNE_BATCH,
    *,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Delete the delivered (`done`) events completed before `before`, `batch` ids per
    DELETE, committing after each, so no lock is held for long and deliveries go on in
    between. Pending events and dead letters stay. On PostgreSQL the ids are taken with
    `FOR UPDATE SKIP LOCKED`: several workers pruning at once never wait on each other (nor
    on a worker scrubbing a delivered password), each deletes rows the others left. `stop`,
    asked between batches, ends the prune early. Returns how many were deleted."""
    postgres = session.get_bind().dialect.name == "postgresql"
    total = 0
    while stop is None or not stop():
        query = (
            select(OutboxEvent.id)
            .where(OutboxEvent.status == "done", OutboxEvent.completed_at < before)
            .order_by(OutboxEvent.id)
            .limit(batch)
        )
        if postgres:
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        deleted = 0
        if ids:
            result = session.execute(
                delete(OutboxEvent).where(OutboxEvent.id.in_(ids), OutboxEvent.status == "done")
            )
            deleted = int(getattr(result, "rowcount", 0) or 0)
        session.commit()
        total += deleted
        if len(ids) < batch:
            break
    return total


def discard(session: AnySession, ids: Collection[int] = (), *, all_dead: bool = False) -> int:
    """Give up on dead letters for good: those of `ids` that are dead, or with `all_dead`
    every one. Their rows are deleted, and with them any sealed password a dead password
    event still held (issue 6); nothing waits on a dead letter, so the resource's later
    events are unaffected. Pending and delivered events are never touched. The caller
    commits. Returns how many were discarded."""
    query = delete(OutboxEvent).where(OutboxEvent.status == "dead")
    if not all_dead:
        if not ids:
            return 0
        query = query.where(OutboxEvent.id.in_(list(ids)))
    result = session.execute(query)
    return int(getattr(result, "rowcount", 0) or 0)
