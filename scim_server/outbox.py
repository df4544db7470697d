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

The functions take a Core connection (`db.begin`) and run in the caller's transaction,
except `prune`, which commits a batch at a time.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NotRequired, TypedDict, cast

from flask import g, has_request_context
from sqlalchemy import (
    Connection,
    Table,
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
from sqlalchemy.orm import aliased

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
from scim_server.db import begin

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


_RECORD = insert(cast(Table, OutboxEvent.__table__))


def record(
    conn: Connection,
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
    conn.execute(
        _RECORD,
        {
            "resource_type": resource_type,
            "resource_id": resource_id,
            "event": EventKind(event),
            "payload": checked,
            "status": PENDING,
            "attempts": 0,
            "created_at": utcnow(),
            "request_id": request_id or current_request_id(),
        },
    )


def queue_password(conn: Connection, user_id: str, payload: PasswordPayload) -> None:
    """Queue a sealed password for M365, and say so at once in the user's sync state, if the
    sync has seen the user (a user it has not seen shows no sync state yet)."""
    record(conn, "User", user_id, EventKind.PASSWORD, payload)
    conn.execute(_MARK_PASSWORD_PENDING, {"user_id": user_id})


_MARK_PASSWORD_PENDING = (
    update(M365Link)
    .where(M365Link.resource_type == "User", M365Link.resource_id == bindparam("user_id"))
    .values(password_state=PasswordState.PENDING)
)


def bind(conn: Connection, user_id: str, object_id: str, *, now: datetime | None = None) -> None:
    """Bind the directory user to an existing M365 account (`m365 import --bind`) and queue
    the takeover, in the caller's one transaction: a link without its event would never be
    delivered. M365 keeps its password until the directory sets its own: on the user's next
    portal sign-in, or when one is set (SCIM, a temporary one, an activation link)."""
    save_link(
        conn,
        "User",
        user_id,
        now=now,
        object_id=object_id,
        state=LinkState.PENDING,
        synced=None,
        password_state=unpushed_password_state(conn, user_id),
    )
    # The takeover: the next delivery sends the directory's whole state to the account.
    record(conn, "User", user_id, EventKind.BOUND, {"objectId": object_id})


# ---------------------------------------------------------------- claiming


@dataclass(frozen=True)
class Claimed:
    """A claimed event, read out of its row: reading it opens no transaction."""

    id: int
    resource_type: str
    resource_id: str
    event: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    request_id: str | None = None


_earlier = aliased(OutboxEvent)
# Per resource, only the oldest pending event: changes to one resource are applied in order.
_CLAIMABLE = (
    select(
        OutboxEvent.id,
        OutboxEvent.resource_type,
        OutboxEvent.resource_id,
        OutboxEvent.event,
        OutboxEvent.payload,
        OutboxEvent.attempts,
        OutboxEvent.created_at,
        OutboxEvent.request_id,
    )
    .where(
        OutboxEvent.status == PENDING,
        or_(OutboxEvent.locked_until.is_(None), OutboxEvent.locked_until < bindparam("now")),
        ~exists().where(
            and_(
                _earlier.resource_type == OutboxEvent.resource_type,
                _earlier.resource_id == OutboxEvent.resource_id,
                _earlier.status == PENDING,
                _earlier.id < OutboxEvent.id,
            )
        ),
    )
    .order_by(OutboxEvent.id)
    .limit(bindparam("limit"))
)
# PostgreSQL: several workers claim at once, each skipping the rows another has locked.
_CLAIMABLE_PG = _CLAIMABLE.with_for_update(skip_locked=True, of=OutboxEvent.__table__)
_LEASE = (
    update(OutboxEvent)
    .where(OutboxEvent.id.in_(bindparam("ids", expanding=True)))
    .values(locked_by=bindparam("worker"), locked_until=bindparam("until"))
)


def claim(
    conn: Connection,
    worker: str,
    limit: int = 20,
    lease_seconds: int = 60,
    *,
    now: datetime | None = None,
) -> list[Claimed]:
    """Claim up to `limit` events, each the head of its resource's queue, in the caller's
    write transaction (the lease holds once it commits). An event whose payload is not its
    kind's (written by hand) becomes a dead letter instead."""
    now = now or utcnow()
    query = _CLAIMABLE_PG if conn.dialect.name == "postgresql" else _CLAIMABLE
    events = []
    for e in conn.execute(query, {"now": now, "limit": limit}).all():
        try:
            payload = check_payload(e.resource_type, e.event, e.payload or {}, scrubbed=True)
        except PayloadError as exc:
            log.error("outbox event %d: %s; a dead letter now", e.id, exc)
            dead(conn, e.id, str(exc), now=now)
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
        conn.execute(
            _LEASE,
            {
                "ids": [e.id for e in events],
                "worker": worker,
                "until": now + timedelta(seconds=lease_seconds),
            },
        )
    return events


_HEARTBEAT = (
    update(OutboxEvent)
    .where(OutboxEvent.locked_by == bindparam("worker"), OutboxEvent.status == PENDING)
    .values(locked_until=bindparam("until"))
)
_RELEASE = (
    update(OutboxEvent)
    .where(OutboxEvent.locked_by == bindparam("worker"), OutboxEvent.status == PENDING)
    .values(locked_by=None, locked_until=None)
)


def heartbeat(
    conn: Connection, worker: str, lease_seconds: int = 60, *, now: datetime | None = None
) -> int:
    """Extend the leases this worker holds; returns how many."""
    until = (now or utcnow()) + timedelta(seconds=lease_seconds)
    return int(conn.execute(_HEARTBEAT, {"worker": worker, "until": until}).rowcount)


def release(conn: Connection, worker: str) -> int:
    """Give back the leases this worker holds (it is stopping): its claimed events, not yet
    delivered, are claimable again at once instead of after the lease. Returns how many."""
    return int(conn.execute(_RELEASE, {"worker": worker}).rowcount)


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Pending:
    """What one delivery of a resource covers, read once: its pending events through the
    newest (`upto`), in order, as (id, kind, payload), and the SCIM requests they carry out."""

    upto: int
    events: list[tuple[int, str, dict[str, Any]]]
    request_ids: list[str]


_PENDING = (
    select(OutboxEvent.id, OutboxEvent.event, OutboxEvent.payload, OutboxEvent.request_id)
    .where(
        OutboxEvent.resource_type == bindparam("rtype"),
        OutboxEvent.resource_id == bindparam("rid"),
        OutboxEvent.status == PENDING,
    )
    .order_by(OutboxEvent.id)
)


def pending(conn: Connection, resource_type: str, resource_id: str, head: int) -> Pending:
    """A resource's pending events, `head` (its claimed one) the first: one query."""
    rows = conn.execute(_PENDING, {"rtype": resource_type, "rid": resource_id}).all()
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


_COUNTS = select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)
# Ids grow with time, so the first pending id by the (status, id) index is the oldest.
_OLDEST_PENDING = (
    select(OutboxEvent.created_at)
    .where(OutboxEvent.status == PENDING)
    .order_by(OutboxEvent.id)
    .limit(1)
)


def counts(conn: Connection) -> dict[str, int]:
    """Outbox events by status."""
    return {str(status): int(n) for status, n in conn.execute(_COUNTS)}


def oldest_pending_seconds(conn: Connection) -> float | None:
    """The age of the oldest pending change, or None: one index seek, whatever the size
    of the outbox."""
    created = conn.scalar(_OLDEST_PENDING)
    if created is None:
        return None
    age: float = (utcnow() - created).total_seconds()
    return max(age, 0.0)


# ---------------------------------------------------------------- delivering

_COMPLETE = (
    update(OutboxEvent)
    .where(OutboxEvent.id == bindparam("event_id"))
    .values(status=DONE, locked_by=None, locked_until=None, completed_at=bindparam("now"))
)


def complete(conn: Connection, event_id: int, *, now: datetime | None = None) -> None:
    """One event delivered."""
    conn.execute(_COMPLETE, {"event_id": event_id, "now": now or utcnow()})


def _complete_through(supersede_dead: bool) -> Any:
    covered = OutboxEvent.status == PENDING
    if supersede_dead:
        # Not a dead password: the new state does not carry it, so it stays undelivered.
        covered = or_(
            covered, and_(OutboxEvent.status == DEAD, OutboxEvent.event != EventKind.PASSWORD)
        )
    return (
        update(OutboxEvent)
        .where(
            OutboxEvent.resource_type == bindparam("rtype"),
            OutboxEvent.resource_id == bindparam("rid"),
            covered,
            OutboxEvent.id <= bindparam("upto"),
        )
        .values(status=DONE, locked_by=None, locked_until=None, completed_at=bindparam("now"))
    )


_COMPLETE_THROUGH = {True: _complete_through(True), False: _complete_through(False)}
_SYNCED_NOW = (
    update(M365Link)
    .where(
        M365Link.resource_type == bindparam("rtype"),
        M365Link.resource_id == bindparam("rid"),
        M365Link.state == LinkState.CREATING,
        M365Link.object_id.is_not(None),
    )
    .values(
        state=LinkState.SYNCED,
        last_synced_at=bindparam("now"),
        last_error=None,
        updated_at=bindparam("now"),
    )
)


def complete_through(
    conn: Connection,
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
    if supersede_dead is None:
        supersede_dead = resource_type == "User"
    params = {"rtype": resource_type, "rid": resource_id, "now": now or utcnow()}
    conn.execute(_COMPLETE_THROUGH[supersede_dead], {**params, "upto": upto})
    scrub_secrets(conn, resource_type, resource_id)
    conn.execute(_SYNCED_NOW, params)


_RETRY_LATER = (
    update(OutboxEvent)
    .where(OutboxEvent.id == bindparam("event_id"))
    .values(
        locked_by=None,
        locked_until=bindparam("at"),
        attempts=OutboxEvent.attempts + bindparam("counted"),
        last_error=bindparam("error"),
    )
)


def retry_later(conn: Connection, event_id: int, at: datetime, counts: bool, error: str) -> None:
    """Put a claimed event back, claimable again from `at`; later events of its resource wait."""
    conn.execute(
        _RETRY_LATER,
        {"event_id": event_id, "at": at, "counted": 1 if counts else 0, "error": error[:4000]},
    )


_EVENT_OF = select(OutboxEvent.resource_type, OutboxEvent.resource_id, OutboxEvent.event).where(
    OutboxEvent.id == bindparam("event_id")
)
_DEAD = (
    update(OutboxEvent)
    .where(OutboxEvent.id == bindparam("event_id"))
    .values(
        status=DEAD,
        locked_by=None,
        locked_until=None,
        completed_at=bindparam("now"),
        attempts=OutboxEvent.attempts + 1,
        last_error=bindparam("error"),
    )
)
# The dead letter took the password with it (a later one may still be queued).
_PASSWORD_LOST = (
    update(M365Link)
    .where(
        M365Link.resource_type == bindparam("rtype"),
        M365Link.resource_id == bindparam("rid"),
        M365Link.password_state == PasswordState.PENDING,
        ~select(OutboxEvent.id)
        .where(
            OutboxEvent.resource_type == bindparam("rtype"),
            OutboxEvent.resource_id == bindparam("rid"),
            OutboxEvent.event == EventKind.PASSWORD,
            OutboxEvent.status == PENDING,
        )
        .exists(),
    )
    .values(password_state=PasswordState.ERROR)
)


def dead(
    conn: Connection,
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
    row = conn.execute(_EVENT_OF, {"event_id": event_id}).first()
    conn.execute(_DEAD, {"event_id": event_id, "now": now, "error": error[:4000]})
    if row is None:
        return
    rtype, rid, kind = row
    scrub_secrets(conn, rtype, rid)
    if kind == EventKind.PASSWORD:
        conn.execute(_PASSWORD_LOST, {"rtype": rtype, "rid": rid})
    if link_error:
        save_link(conn, rtype, rid, now=now, state=LinkState.ERROR, last_error=error)


_DEAD_PASSWORDS = (
    update(OutboxEvent)
    .where(
        OutboxEvent.resource_type == "User",
        OutboxEvent.resource_id == bindparam("user_id"),
        OutboxEvent.event == EventKind.PASSWORD,
        OutboxEvent.status == PENDING,
        OutboxEvent.id <= bindparam("upto"),
    )
    .values(status=DEAD, last_error=bindparam("error"), completed_at=bindparam("now"))
)
_PASSWORD_ERROR = (
    update(M365Link)
    .where(M365Link.resource_type == "User", M365Link.resource_id == bindparam("user_id"))
    .values(password_state=PasswordState.ERROR, last_error=bindparam("error"))
)


def dead_passwords(
    conn: Connection, user_id: str, upto: int, error: str, *, now: datetime | None = None
) -> None:
    """A user's pending password events that cannot be delivered (sealed under a key that
    is gone): dead, and scrubbed; the account's password is in error."""
    conn.execute(
        _DEAD_PASSWORDS,
        {"user_id": user_id, "upto": upto, "error": error, "now": now or utcnow()},
    )
    scrub_secrets(conn, "User", user_id)
    conn.execute(_PASSWORD_ERROR, {"user_id": user_id, "error": error})


# ---------------------------------------------------------------- dead letters


def retry_dead(conn: Connection, ids: Collection[int] = (), *, all_dead: bool = False) -> int:
    """Queue dead letters again (`sync retry`): those of `ids` that are dead, or with
    `all_dead` every one, pending with their attempts reset, in the caller's transaction.
    Returns how many."""
    query = update(OutboxEvent).where(OutboxEvent.status == DEAD)
    if not all_dead:
        if not ids:
            return 0
        query = query.where(OutboxEvent.id.in_(list(ids)))
    result = conn.execute(
        query.values(
            status=PENDING, attempts=0, locked_by=None, locked_until=None, completed_at=None
        )
    )
    return int(result.rowcount)


def discard(conn: Connection, ids: Collection[int] = (), *, all_dead: bool = False) -> int:
    """Give up on dead letters for good: those of `ids` that are dead, or with `all_dead`
    every one. Their rows are deleted, and with them any sealed password a dead password
    event still held (issue 6); nothing waits on a dead letter, so the resource's later
    events are unaffected. Pending and delivered events are never touched. In the caller's
    transaction; returns how many were discarded."""
    query = delete(OutboxEvent).where(OutboxEvent.status == DEAD)
    if not all_dead:
        if not ids:
            return 0
        query = query.where(OutboxEvent.id.in_(list(ids)))
    return int(conn.execute(query).rowcount)


# ---------------------------------------------------------------- secrets and retention

_SCRUB = (
    update(OutboxEvent)
    .where(
        OutboxEvent.resource_type == bindparam("rtype"),
        OutboxEvent.resource_id == bindparam("rid"),
        OutboxEvent.event == EventKind.PASSWORD,
        OutboxEvent.status != PENDING,
    )
    .values(payload={})
)


def scrub_secrets(conn: Connection, resource_type: str, resource_id: str) -> None:
    """A sealed password leaves the outbox once delivered or dead (issue 6): its row stays,
    for the record, without it."""
    conn.execute(_SCRUB, {"rtype": resource_type, "rid": resource_id})


_WAITING_PASSWORDS = select(OutboxEvent.id, OutboxEvent.payload).where(
    OutboxEvent.event == EventKind.PASSWORD, OutboxEvent.status == PENDING
)
_RESEAL = (
    update(OutboxEvent)
    .where(OutboxEvent.id == bindparam("event_id"), OutboxEvent.status == PENDING)
    .values(payload=bindparam("resealed"))
)


def reseal_passwords(conn: Connection, reseal: Callable[[str], str | None]) -> tuple[int, int]:
    """Seal the passwords still waiting for Microsoft 365 again with `reseal` (under the
    first encryption key; None: no key opens it): (resealed, not opened). Only pending rows
    are touched, so a password delivered (and scrubbed) meanwhile stays gone. In the
    caller's transaction."""
    done = broken = 0
    for event_id, payload in conn.execute(_WAITING_PASSWORDS).all():
        sealed = (payload or {}).get("sealed")
        if not sealed:
            continue
        fresh = reseal(str(sealed))
        if fresh is None:
            broken += 1
            continue
        conn.execute(_RESEAL, {"event_id": event_id, "resealed": {**payload, "sealed": fresh}})
        done += 1
    return done, broken


PRUNE_BATCH = 500  # ids per DELETE: each batch is a short transaction of its own

_PRUNABLE = (
    select(OutboxEvent.id)
    .where(OutboxEvent.status == DONE, OutboxEvent.completed_at < bindparam("before"))
    # Oldest first, along ix_outbox_status_completed: a batch reads its own rows, however
    # many delivered events are kept (by id, a round with nothing to prune read them all).
    .order_by(OutboxEvent.completed_at)
    .limit(bindparam("batch"))
)
# PostgreSQL: pruners skip the rows another has locked (or a worker scrubbing a password).
_PRUNABLE_PG = _PRUNABLE.with_for_update(skip_locked=True)
_PRUNE = delete(OutboxEvent).where(
    OutboxEvent.id.in_(bindparam("ids", expanding=True)), OutboxEvent.status == DONE
)


def prune(
    conn: Connection,
    before: datetime,
    batch: int = PRUNE_BATCH,
    *,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Delete the delivered (`done`) events completed before `before`, `batch` ids per
    DELETE, each batch a write transaction of its own on `conn` (a connection with none
    open), so no lock is held for long and deliveries go on in between. Pending events and
    dead letters stay. On PostgreSQL the ids are taken with `FOR UPDATE SKIP LOCKED`:
    several workers pruning at once never wait on each other (nor on a worker scrubbing a
    delivered password), each deletes rows the others left. `stop`, asked between batches,
    ends the prune early. Returns how many were deleted."""
    query = _PRUNABLE_PG if conn.dialect.name == "postgresql" else _PRUNABLE
    total = 0
    while stop is None or not stop():
        with begin(write=True, on=conn):
            ids = list(conn.scalars(query, {"before": before, "batch": batch}))
            if ids:
                total += int(conn.execute(_PRUNE, {"ids": ids}).rowcount)
        if len(ids) < batch:
            break
    return total


# ---------------------------------------------------------------- links


def save_link(
    conn: Connection,
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
    result = conn.execute(
        update(M365Link)
        .where(M365Link.resource_type == resource_type, M365Link.resource_id == resource_id)
        .values(updated_at=now, **fields)
    )
    if not result.rowcount:
        conn.execute(
            insert(M365Link).values(
                resource_type=resource_type,
                resource_id=resource_id,
                updated_at=now,
                **{"state": LinkState.PENDING, **fields},
            )
        )


def drift_found(
    conn: Connection,
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
    save_link(conn, resource_type, resource_id, now=now, drift_found_at=now, **fields)
    if event is not None:
        kind, payload = event
        record(conn, resource_type, resource_id, kind, payload, request_id=request_id)


_DROP_LINK = delete(M365Link).where(
    M365Link.resource_type == bindparam("rtype"), M365Link.resource_id == bindparam("rid")
)


def drop_link(conn: Connection, resource_type: str, resource_id: str) -> None:
    """The resource is gone from M365 and the directory (or was never created there)."""
    conn.execute(_DROP_LINK, {"rtype": resource_type, "rid": resource_id})


_PASSWORD_HASH = select(User.password_hash).where(User.id == bindparam("user_id"))


def unpushed_password_state(conn: Connection, user_id: str) -> PasswordState:
    """The password state of an account the directory has not given its password: unknown
    if the directory has one (the user's next portal sign-in sends it), none if not (an
    activation email gives the user one)."""
    stored = conn.scalar(_PASSWORD_HASH, {"user_id": user_id})
    return PasswordState.UNKNOWN if stored is not None else PasswordState.NONE
