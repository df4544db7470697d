"""The outbox: change events written in the same transaction as the change itself, and the
one module that moves events and M365 links from one state to the next.

    event (EventStatus)                          link (LinkState)
    record ──▶ pending ──claim──▶ leased          pending ──▶ creating ──▶ synced
                 ▲   ◀──retry_later / release       │   save_link: out_of_scope,
    retry_dead   │   ──complete(_through)─▶ done ──prune──▶ (deleted)    conflict, error,
                 │   ──dead──▶ dead ──discard──▶ (deleted)               unbound
                 └───────────────┘

Consumers (the Graph sync) claim events with `claim()`: per resource, only the oldest
pending event is claimable, so changes to one user or group are applied in order while
different resources proceed in parallel. On PostgreSQL, `FOR UPDATE SKIP LOCKED` lets several
workers claim at once without blocking each other; a lease (`locked_until`) returns the
events of a crashed worker to the queue.

Payloads are typed by kind (the TypedDicts below): `record` refuses one that does not match
its kind, and loading checks them again, so a row written by hand cannot reach the worker
malformed. A password event's payload is scrubbed (emptied) once it is delivered or dead.

The functions take a session and leave committing to the caller, except those that say
they commit (`claim`, `heartbeat`, `release`, `complete`, `prune`).
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict

from flask import g, has_request_context
from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased, scoped_session

from models import (
    EventKind,
    EventStatus,
    LinkState,
    M365Link,
    OutboxEvent,
    PasswordState,
    User,
    utcnow,
)
from scim_server.db import Tx, read_datetime

AnySession = Session | scoped_session[Any]
# What runs a Core statement: a session, or a Core connection (db.begin).
Executor = AnySession | Connection
Clock = Callable[[], datetime]
log = logging.getLogger("scim_server.sync")

PENDING, DONE, DEAD = EventStatus.PENDING, EventStatus.DONE, EventStatus.DEAD

# ---------------------------------------------------------------- payloads


class UserCreated(TypedDict):
    version: int


class UserChanged(TypedDict):
    """replaced, patched, password_set."""

    version: int
    password_changed: NotRequired[bool]


class PasswordPayload(TypedDict):
    """A sealed password for M365 (sealing.py), or with `check` a portal sign-in's: pushed
    only if M365's password is not the directory's. Scrubbed to {} once delivered or dead."""

    sealed: str
    force_change: NotRequired[bool]
    check: NotRequired[bool]


class UserDeleted(TypedDict):
    userName: str


class Bound(TypedDict):
    objectId: str


class Unbind(TypedDict):
    suspend: bool


class GroupChanged(TypedDict):
    """created, replaced, patched: the member changes it made, if any, folded in order by
    the worker (a created or replace_all one reconciles every member)."""

    version: int
    replace_all: NotRequired[bool]
    added: NotRequired[list[str]]
    removed: NotRequired[list[str]]


class GroupDeleted(TypedDict):
    displayName: str


class Drift(TypedDict):
    """Drift found in M365 to repair (drift.repair): the findings by kind (counted as
    repaired when delivered); `replace_all` (groups): the delivery makes the group's
    members the directory's."""

    kinds: dict[str, int]
    replace_all: NotRequired[bool]


class DriftRestore(TypedDict):
    """A user's deleted M365 account (`object_id`) to restore before its delivery."""

    kinds: dict[str, int]
    object_id: str


Payload = (
    UserCreated
    | UserChanged
    | PasswordPayload
    | UserDeleted
    | Bound
    | Unbind
    | GroupChanged
    | GroupDeleted
    | Drift
    | DriftRestore
)

PAYLOADS: dict[tuple[str, EventKind], type[Any]] = {
    ("User", EventKind.CREATED): UserCreated,
    ("User", EventKind.REPLACED): UserChanged,
    ("User", EventKind.PATCHED): UserChanged,
    ("User", EventKind.PASSWORD_SET): UserChanged,
    ("User", EventKind.PASSWORD): PasswordPayload,
    ("User", EventKind.DELETED): UserDeleted,
    ("User", EventKind.BOUND): Bound,
    ("User", EventKind.UNBIND): Unbind,
    ("Group", EventKind.CREATED): GroupChanged,
    ("Group", EventKind.REPLACED): GroupChanged,
    ("Group", EventKind.PATCHED): GroupChanged,
    ("Group", EventKind.DELETED): GroupDeleted,
    ("User", EventKind.DRIFT): Drift,
    ("User", EventKind.DRIFT_RESTORE): DriftRestore,
    ("Group", EventKind.DRIFT): Drift,
}


class PayloadError(ValueError):
    """An event's kind or payload is not one the outbox knows."""


def _fits(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if typing.get_origin(hint) is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(
            _fits(k, key) and _fits(v, item) for k, v in value.items()
        )
    raise AssertionError(f"no check for {hint!r}")  # a payload type this module lacks


def _shape(spec: type[Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """A payload type's keys with their types, and the keys it requires. (Read from the
    annotations: with postponed annotations Python 3.11's __required_keys__ misses
    NotRequired.)"""
    hints = typing.get_type_hints(spec, include_extras=True)
    optional = {k for k, h in hints.items() if typing.get_origin(h) is NotRequired}
    plain = {k: typing.get_args(h)[0] if k in optional else h for k, h in hints.items()}
    return plain, frozenset(hints.keys() - optional)


_SHAPES = {key: _shape(spec) for key, spec in PAYLOADS.items()}


def check_payload(
    resource_type: str, kind: str, payload: Mapping[str, Any], *, scrubbed: bool = False
) -> dict[str, Any]:
    """The payload as a plain dict if it is the one of its kind; PayloadError if not.
    `scrubbed`: loading, so a password event's scrubbed (empty) payload is allowed too (a
    dead letter `sync retry` queued again: its delivery sends the user's state alone)."""
    try:
        hints, required = _SHAPES[(resource_type, EventKind(kind))]
    except (KeyError, ValueError):
        raise PayloadError(f"no {resource_type} event of kind {kind!r}") from None
    if scrubbed and kind == EventKind.PASSWORD and not payload:
        return {}
    missing = required - payload.keys()
    unknown = payload.keys() - hints.keys()
    wrong = sorted(k for k, v in payload.items() if k in hints and not _fits(v, hints[k]))
    if missing or unknown or wrong:
        raise PayloadError(
            f"{resource_type} {kind} payload: "
            + "; ".join(
                f"{what} {', '.join(sorted(keys))}"
                for what, keys in (("missing", missing), ("unknown", unknown), ("mistyped", wrong))
                if keys
            )
        )
    return dict(payload)


# ---------------------------------------------------------------- recording


def current_request_id() -> str | None:
    """The id of the HTTP request being served (api's `g.request_id`), if any: the change
    it causes carries it to Graph as the client-request-id of its delivery."""
    if not has_request_context():
        return None
    found = g.get("request_id")
    return found if isinstance(found, str) else None


def record(
    session: Executor,
    resource_type: str,
    resource_id: str,
    event: str,
    payload: Mapping[str, Any],
    *,
    request_id: str | None = None,
) -> None:
    """Queue an event (pending). `request_id`: the request that made the change; by
    default the one being served. PayloadError for a payload that is not its kind's."""
    checked = check_payload(resource_type, event, payload)
    # A Core insert: no unit-of-work bookkeeping on every write's hot path.
    session.execute(
        insert(OutboxEvent),
        [
            {
                "resource_type": resource_type,
                "resource_id": resource_id,
                "event": EventKind(event),
                "payload": checked,
                "status": PENDING,
                "attempts": 0,
                "created_at": utcnow(),
                "request_id": request_id or current_request_id(),
            }
        ],
    )


def queue_password(conn: Executor, user_id: str, payload: PasswordPayload) -> None:
    """Queue a sealed password for M365, and say so at once in the user's sync state, if the
    sync has seen the user (a user it has not seen shows no sync state yet)."""
    record(conn, "User", user_id, EventKind.PASSWORD, payload)
    conn.execute(_MARK_PASSWORD_PENDING, {"user_id": user_id})


_MARK_PASSWORD_PENDING = (
    update(M365Link)
    .where(M365Link.resource_type == "User", M365Link.resource_id == bindparam("user_id"))
    .values(password_state=PasswordState.PENDING)
)


def record_sql(
    tx: Tx,
    resource_type: str,
    resource_id: str,
    event: str,
    payload: Mapping[str, Any],
    *,
    request_id: str | None = None,
) -> None:
    """`record` for the writes that run hand-written SQL (db.transaction)."""
    checked = check_payload(resource_type, event, payload)
    tx.execute(
        "INSERT INTO outbox (resource_type, resource_id, event, payload, status, attempts,"
        " created_at, request_id) VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
        (
            resource_type,
            resource_id,
            EventKind(event).value,
            tx.json(checked),
            PENDING.value,
            tx.timestamp(utcnow()),
            request_id or current_request_id(),
        ),
    )


def queue_password_sql(tx: Tx, user_id: str, payload: PasswordPayload) -> None:
    """Queue a sealed password for M365, and say so at once in the user's sync state, if the
    sync has seen the user (a user it has not seen shows no sync state yet)."""
    record_sql(tx, "User", user_id, EventKind.PASSWORD, payload)
    tx.execute(
        "UPDATE m365_links SET password_state = ? WHERE resource_type = 'User' AND resource_id = ?",
        (PasswordState.PENDING.value, user_id),
    )


def bind(session: AnySession, user_id: str, object_id: str, *, now: datetime | None = None) -> None:
    """Bind the directory user to an existing M365 account (`m365 import --bind`) and queue
    the takeover, in the caller's one transaction: a link without its event would never be
    delivered. M365 keeps its password until the directory sets its own: on the user's next
    portal sign-in, or when one is set (SCIM, a temporary one, an activation link)."""
    has_password = session.scalar(select(User.password_hash).where(User.id == user_id)) is not None
    save_link(
        session,
        "User",
        user_id,
        now=now,
        object_id=object_id,
        state=LinkState.PENDING,
        synced=None,
        password_state=PasswordState.UNKNOWN if has_password else PasswordState.NONE,
    )
    # The takeover: the next delivery sends the directory's whole state to the account.
    record(session, "User", user_id, EventKind.BOUND, {"objectId": object_id})


# ---------------------------------------------------------------- claiming


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


def claim(
    session: AnySession,
    worker: str,
    limit: int = 20,
    lease_seconds: int = 60,
    *,
    now: datetime | None = None,
) -> list[Claimed]:
    """Claim up to `limit` events, each the head of its resource's queue. Commits. An event
    whose payload is not its kind's (written by hand) becomes a dead letter instead."""
    now = now or utcnow()
    earlier = aliased(OutboxEvent)
    query = (
        select(OutboxEvent)
        .where(
            OutboxEvent.status == PENDING,
            or_(OutboxEvent.locked_until.is_(None), OutboxEvent.locked_until < now),
            ~exists().where(
                and_(
                    earlier.resource_type == OutboxEvent.resource_type,
                    earlier.resource_id == OutboxEvent.resource_id,
                    earlier.status == PENDING,
                    earlier.id < OutboxEvent.id,
                )
            ),
        )
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=OutboxEvent)
    events = []
    for e in list(session.scalars(query)):
        try:
            payload = check_payload(e.resource_type, e.event, e.payload or {}, scrubbed=True)
        except PayloadError as exc:
            log.error("outbox event %d: %s; a dead letter now", e.id, exc)
            dead(session, e.id, str(exc), now=now)
            continue
        events.append(
            Claimed(
                e.id,
                e.resource_type,
                e.resource_id,
                e.event,
                payload,
                e.attempts,
                e.created_at,
                e.request_id,
            )
        )
    if events:
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_([e.id for e in events]))
            .values(locked_by=worker, locked_until=now + timedelta(seconds=lease_seconds))
        )
    session.commit()
    return events


def heartbeat(
    session: AnySession, worker: str, lease_seconds: int = 60, *, now: datetime | None = None
) -> int:
    """Extend the leases this worker holds; returns how many. Commits."""
    result = session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.locked_by == worker, OutboxEvent.status == PENDING)
        .values(locked_until=(now or utcnow()) + timedelta(seconds=lease_seconds))
    )
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def release(session: AnySession, worker: str) -> int:
    """Give back the leases this worker holds (it is stopping): its claimed events, not yet
    delivered, are claimable again at once instead of after the lease. Returns how many.
    Commits."""
    result = session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.locked_by == worker, OutboxEvent.status == PENDING)
        .values(locked_by=None, locked_until=None)
    )
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Pending:
    """What one delivery of a resource covers, read once: its pending events through the
    newest (`upto`), in order, as (id, kind, payload), and the SCIM requests they carry out."""

    upto: int
    events: list[tuple[int, str, dict[str, Any]]]
    request_ids: list[str]


def pending(session: AnySession, resource_type: str, resource_id: str, head: int) -> Pending:
    """A resource's pending events, `head` (its claimed one) the first: one query."""
    rows = session.execute(
        select(OutboxEvent.id, OutboxEvent.event, OutboxEvent.payload, OutboxEvent.request_id)
        .where(
            OutboxEvent.resource_type == resource_type,
            OutboxEvent.resource_id == resource_id,
            OutboxEvent.status == PENDING,
        )
        .order_by(OutboxEvent.id)
    ).all()
    events = []
    for event_id, kind, payload, _request_id in rows:
        try:
            checked = check_payload(resource_type, kind, payload or {}, scrubbed=True)
            events.append((event_id, kind, checked))
        except PayloadError as exc:
            # Not the head (claim dead-letters that): this delivery covers it as it is.
            log.error("outbox event %d: %s; delivered without it", event_id, exc)
    upto = max([head, *(i for i, _k, _p in events)])
    request_ids = list(dict.fromkeys(r for _i, _k, _p, r in rows if r))
    return Pending(upto, events, request_ids)


def counts(session: AnySession) -> dict[str, int]:
    """Outbox events by status."""
    rows = session.execute(select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status))
    return {str(status): int(n) for status, n in rows}


def oldest_pending_seconds(session: AnySession) -> float | None:
    """The age of the oldest pending change, or None. Ids grow with time, so the first
    pending id by the (status, id) index is the oldest: one index seek, whatever the size
    of the outbox."""
    created = session.scalar(
        select(OutboxEvent.created_at)
        .where(OutboxEvent.status == PENDING)
        .order_by(OutboxEvent.id)
        .limit(1)
    )
    if created is None:
        return None
    age: float = (utcnow() - read_datetime(created)).total_seconds()
    return max(age, 0.0)


# ---------------------------------------------------------------- delivering


def complete(session: AnySession, event_id: int, *, now: datetime | None = None) -> None:
    """One event delivered. Commits."""
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id)
        .values(status=DONE, locked_by=None, locked_until=None, completed_at=now or utcnow())
    )
    session.commit()


def complete_through(
    session: AnySession,
    resource_type: str,
    resource_id: str,
    upto: int,
    *,
    supersede_dead: bool | None = None,
    now: datetime | None = None,
) -> None:
    """Coalescing: one delivery of the current state completes every event it covers, and
    scrubs the passwords delivered. With `supersede_dead` (state-based deliveries: by
    default a user's, whose delivery sends its whole state; a group's member changes are
    deltas, so its dead letters stay), earlier dead letters are covered too; they keep their
    error. A user just created (or bound) is "creating" until what follows its create has
    landed: now it has, so it is "synced"."""
    now = now or utcnow()
    if supersede_dead is None:
        supersede_dead = resource_type == "User"
    covered = OutboxEvent.status == PENDING
    if supersede_dead:
        # Not a dead password: the new state does not carry it, so it stays undelivered.
        covered = or_(
            covered, and_(OutboxEvent.status == DEAD, OutboxEvent.event != EventKind.PASSWORD)
        )
    session.execute(
        update(OutboxEvent)
        .where(
            OutboxEvent.resource_type == resource_type,
            OutboxEvent.resource_id == resource_id,
            covered,
            OutboxEvent.id <= upto,
        )
        .values(status=DONE, locked_by=None, locked_until=None, completed_at=now)
    )
    scrub_secrets(session, resource_type, resource_id)
    session.execute(
        update(M365Link)
        .where(
            M365Link.resource_type == resource_type,
            M365Link.resource_id == resource_id,
            M365Link.state == LinkState.CREATING,
            M365Link.object_id.is_not(None),
        )
        .values(state=LinkState.SYNCED, last_synced_at=now, last_error=None, updated_at=now)
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


def dead(
    session: AnySession,
    event_id: int,
    error: str,
    *,
    link_error: bool = False,
    now: datetime | None = None,
) -> None:
    """Give up on a claimed event: the dead letter keeps the error, and the resource's later
    events proceed. Any password it held is scrubbed; a dead password leaves the account's
    password in error unless another is queued. `link_error`: the resource's link says so
    too (state error)."""
    now = now or utcnow()
    row = session.execute(
        select(OutboxEvent.resource_type, OutboxEvent.resource_id, OutboxEvent.event).where(
            OutboxEvent.id == event_id
        )
    ).first()
    session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id)
        .values(
            status=DEAD,
            locked_by=None,
            locked_until=None,
            completed_at=now,
            attempts=OutboxEvent.attempts + 1,
            last_error=error[:4000],
        )
    )
    if row is None:
        return
    rtype, rid, kind = row
    scrub_secrets(session, rtype, rid)
    if kind == EventKind.PASSWORD:
        # The dead letter took the password with it (a later one may still be queued).
        session.execute(
            update(M365Link)
            .where(
                M365Link.resource_type == rtype,
                M365Link.resource_id == rid,
                M365Link.password_state == PasswordState.PENDING,
                ~select(OutboxEvent.id)
                .where(
                    OutboxEvent.resource_type == rtype,
                    OutboxEvent.resource_id == rid,
                    OutboxEvent.event == EventKind.PASSWORD,
                    OutboxEvent.status == PENDING,
                )
                .exists(),
            )
            .values(password_state=PasswordState.ERROR)
        )
    if link_error:
        save_link(session, rtype, rid, now=now, state=LinkState.ERROR, last_error=error)


def dead_passwords(
    session: AnySession, user_id: str, upto: int, error: str, *, now: datetime | None = None
) -> None:
    """A user's pending password events that cannot be delivered (sealed under a key that
    is gone): dead, and scrubbed; the account's password is in error."""
    session.execute(
        update(OutboxEvent)
        .where(
            OutboxEvent.resource_type == "User",
            OutboxEvent.resource_id == user_id,
            OutboxEvent.event == EventKind.PASSWORD,
            OutboxEvent.status == PENDING,
            OutboxEvent.id <= upto,
        )
        .values(status=DEAD, last_error=error, completed_at=now or utcnow())
    )
    scrub_secrets(session, "User", user_id)
    session.execute(
        update(M365Link)
        .where(M365Link.resource_type == "User", M365Link.resource_id == user_id)
        .values(password_state=PasswordState.ERROR, last_error=error)
    )


# ---------------------------------------------------------------- dead letters


def retry_dead(session: AnySession, ids: Collection[int] = (), *, all_dead: bool = False) -> int:
    """Queue dead letters again (`sync retry`): those of `ids` that are dead, or with
    `all_dead` every one, pending with their attempts reset. The caller commits. Returns how
    many."""
    query = update(OutboxEvent).where(OutboxEvent.status == DEAD)
    if not all_dead:
        if not ids:
            return 0
        query = query.where(OutboxEvent.id.in_(list(ids)))
    result = session.execute(
        query.values(
            status=PENDING, attempts=0, locked_by=None, locked_until=None, completed_at=None
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def discard(session: AnySession, ids: Collection[int] = (), *, all_dead: bool = False) -> int:
    """Give up on dead letters for good: those of `ids` that are dead, or with `all_dead`
    every one. Their rows are deleted, and with them any sealed password a dead password
    event still held (issue 6); nothing waits on a dead letter, so the resource's later
    events are unaffected. Pending and delivered events are never touched. The caller
    commits. Returns how many were discarded."""
    query = delete(OutboxEvent).where(OutboxEvent.status == DEAD)
    if not all_dead:
        if not ids:
            return 0
        query = query.where(OutboxEvent.id.in_(list(ids)))
    result = session.execute(query)
    return int(getattr(result, "rowcount", 0) or 0)


# ---------------------------------------------------------------- secrets and retention


def scrub_secrets(session: AnySession, resource_type: str, resource_id: str) -> None:
    """A sealed password leaves the outbox once delivered or dead (issue 6): its row stays,
    for the record, without it."""
    session.execute(
        update(OutboxEvent)
        .where(
            OutboxEvent.resource_type == resource_type,
            OutboxEvent.resource_id == resource_id,
            OutboxEvent.event == EventKind.PASSWORD,
            OutboxEvent.status != PENDING,
        )
        .values(payload={})
    )


def reseal_passwords(session: AnySession, reseal: Callable[[str], str | None]) -> tuple[int, int]:
    """Seal the passwords still waiting for Microsoft 365 again with `reseal` (under the
    first encryption key; None: no key opens it): (resealed, not opened). Only pending rows
    are touched, so a password delivered (and scrubbed) meanwhile stays gone."""
    done = broken = 0
    rows = session.execute(
        select(OutboxEvent.id, OutboxEvent.payload).where(
            OutboxEvent.event == EventKind.PASSWORD, OutboxEvent.status == PENDING
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
            .where(OutboxEvent.id == event_id, OutboxEvent.status == PENDING)
            .values(payload={**payload, "sealed": fresh})
        )
        done += 1
    return done, broken


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
            .where(OutboxEvent.status == DONE, OutboxEvent.completed_at < before)
            .order_by(OutboxEvent.id)
            .limit(batch)
        )
        if postgres:
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query))
        deleted = 0
        if ids:
            result = session.execute(
                delete(OutboxEvent).where(OutboxEvent.id.in_(ids), OutboxEvent.status == DONE)
            )
            deleted = int(getattr(result, "rowcount", 0) or 0)
        session.commit()
        total += deleted
        if len(ids) < batch:
            break
    return total


# ---------------------------------------------------------------- links


def save_link(
    session: AnySession,
    resource_type: str,
    resource_id: str,
    *,
    now: datetime | None = None,
    **fields: Any,
) -> None:
    """Insert or update the link (a new one is pending unless `state` says otherwise);
    `last_synced_at` is stamped, and the error cleared, when the state becomes synced."""
    now = now or utcnow()
    if "state" in fields:
        fields["state"] = LinkState(fields["state"])
    if fields.get("password_state") is not None:
        fields["password_state"] = PasswordState(fields["password_state"])
    if fields.get("state") == LinkState.SYNCED:
        fields.setdefault("last_synced_at", now)
        fields.setdefault("last_error", None)
    result = session.execute(
        update(M365Link)
        .where(M365Link.resource_type == resource_type, M365Link.resource_id == resource_id)
        .values(updated_at=now, **fields)
    )
    if not getattr(result, "rowcount", 0):
        session.execute(
            insert(M365Link).values(
                resource_type=resource_type,
                resource_id=resource_id,
                updated_at=now,
                **{"state": LinkState.PENDING, **fields},
            )
        )


def drift_found(
    session: AnySession,
    resource_type: str,
    resource_id: str,
    *,
    now: datetime,
    event: tuple[EventKind, Mapping[str, Any]] | None = None,
    request_id: str | None = None,
    **fields: Any,
) -> None:
    """Drift found on a resource's M365 object (drift.repair), in the caller's transaction:
    its link records when (`drift_found_at`) and takes `fields` (what M365 now has, so that
    the state-based delivery sends the directory's back); `event` (a `drift` or
    `drift_restore` and its payload) queues the repair."""
    save_link(session, resource_type, resource_id, now=now, drift_found_at=now, **fields)
    if event is not None:
        kind, payload = event
        record(session, resource_type, resource_id, kind, payload, request_id=request_id)


def drop_link(session: AnySession, resource_type: str, resource_id: str) -> None:
    """The resource is gone from M365 and the directory (or was never created there)."""
    session.execute(
        delete(M365Link).where(
            M365Link.resource_type == resource_type, M365Link.resource_id == resource_id
        )
    )


def unpushed_password_state(session: AnySession, user_id: str) -> PasswordState:
    """The password state of an account the directory has not given its password: unknown
    if the directory has one (the user's next portal sign-in sends it), none if not (an
    activation email gives the user one)."""
    stored = session.scalar(select(User.password_hash).where(User.id == user_id))
    return PasswordState.UNKNOWN if stored is not None else PasswordState.NONE
