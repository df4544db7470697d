"""What the sync worker reads from and writes to the directory database.

A `Store` stands on its own: it opens connections on the engine it is given (no Flask app
context) and asks its clock for the time. Every method is its own short transaction: the
worker never holds a transaction (and on SQLite never the write lock) while it waits on
Graph. The transitions themselves are `scim_server.outbox`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Flask
from sqlalchemy import Connection, Engine, bindparam, select

from models import EventKind, Group, GroupMember, M365Link, User, utcnow
from scim_server import directory, outbox
from scim_server.db import begin, db
from scim_server.drift.repair import count_delivered
from scim_server.scim import projection as proj
from scim_server.scim.schema import USER_TYPE

_FULL = proj.parse(USER_TYPE, None, None)


@dataclass(frozen=True)
class Link:
    object_id: str | None
    state: str  # a LinkState
    synced: dict[str, Any] | None
    manager_id: str | None
    created_in_m365_at: datetime | None
    password_state: str | None = None  # a PasswordState
    password_stamp: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """What one delivery of a resource reads before it talks to Graph, in one transaction:
    its pending events (each read once) and its link."""

    pending: outbox.Pending
    link: Link | None

    @property
    def upto(self) -> int:
        return self.pending.upto

    @property
    def events(self) -> list[tuple[int, str, dict[str, Any]]]:
        return self.pending.events

    @property
    def request_ids(self) -> list[str]:
        return self.pending.request_ids

    def kinds(self, kind: EventKind) -> list[dict[str, Any]]:
        """The payloads of the pending events of this kind, in order."""
        return [p for _i, k, p in self.events if k == kind]


@dataclass(frozen=True)
class SealedPassword:
    sealed: str = field(repr=False)
    force_change: bool  # a temporary password: M365 asks for a new one at sign-in
    # Only portal sign-ins asked for it: push only if M365's password is not the directory's.
    check_only: bool


def sealed_password(events: list[tuple[int, str, dict[str, Any]]]) -> SealedPassword | None:
    """The newest sealed password among a resource's pending events; None without one."""
    found = [p for _i, kind, p in events if kind == EventKind.PASSWORD and p.get("sealed")]
    if not found:
        return None
    return SealedPassword(
        str(found[-1]["sealed"]),
        bool(found[-1].get("force_change")),
        all(p.get("check") for p in found),
    )


_LINK = select(
    M365Link.object_id,
    M365Link.state,
    M365Link.synced,
    M365Link.manager_id,
    M365Link.created_in_m365_at,
    M365Link.password_state,
    M365Link.password_stamp,
).where(M365Link.resource_type == bindparam("rtype"), M365Link.resource_id == bindparam("rid"))


def _link(conn: Connection, resource_type: str, resource_id: str) -> Link | None:
    row = conn.execute(_LINK, {"rtype": resource_type, "rid": resource_id}).first()
    if row is None:
        return None
    return Link(
        row.object_id,
        row.state,
        dict(row.synced) if row.synced is not None else None,
        row.manager_id,
        row.created_in_m365_at,
        row.password_state,
        row.password_stamp,
    )


_GROUP_NAMES = select(Group.display_name, Group.mail_nickname).where(
    Group.id == bindparam("group_id")
)
_MEMBER_IDS = select(GroupMember.member_id).where(GroupMember.group_id == bindparam("group_id"))
_GROUPS_OF = select(GroupMember.group_id).where(GroupMember.member_id == bindparam("user_id"))
# The reports by the manager_id index, then their links by primary key. As a join, SQLite
# walked every user link and looked each user up: a scan per created user.
_REPORTS_IN_M365 = select(M365Link.resource_id, M365Link.object_id).where(
    M365Link.resource_type == "User",
    M365Link.resource_id.in_(
        select(User.id).where(User.manager_id == bindparam("manager_id")).scalar_subquery()
    ),
    M365Link.object_id.is_not(None),
)
_OBJECT_IDS = select(M365Link.resource_id, M365Link.object_id).where(
    # Both key columns, so that the primary key finds the rows.
    M365Link.resource_type.in_(("User", "Group")),
    M365Link.resource_id.in_(bindparam("ids", expanding=True)),
    M365Link.object_id.is_not(None),
)


class Store:
    """`engine` is the directory database's (connections are opened on it); `clock` says
    the time (naive UTC), for every timestamp the worker writes."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.clock = clock

    @classmethod
    def of(cls, app: Flask, clock: Callable[[], datetime] = utcnow) -> Store:
        """A store on the app's database engine; from then on no app context is needed."""
        with app.app_context():
            engine = db.engine
        return cls(engine, clock)

    def transaction(self) -> AbstractContextManager[Connection]:
        """A transaction that writes: on SQLite it queues for the write lock."""
        return begin(write=True, engine=self.engine)

    def reading(self) -> AbstractContextManager[Connection]:
        """A transaction that only reads: on SQLite a deferred BEGIN, which WAL lets run
        beside the writer, instead of queueing for the write lock. Worker threads, and the
        SCIM writers, do not wait for the worker's reads."""
        return begin(write=False, engine=self.engine)

    # ------------------------------------------------------------ reads

    def snapshot(self, resource_type: str, resource_id: str, head: int) -> Snapshot:
        """The resource's pending events from `head` (its claimed one) on, and its link."""
        with self.reading() as conn:
            found = outbox.pending(conn, resource_type, resource_id, head)
            return Snapshot(found, _link(conn, resource_type, resource_id))

    def link(self, resource_type: str, resource_id: str) -> Link | None:
        with self.reading() as conn:
            return _link(conn, resource_type, resource_id)

    def object_ids(self, resource_ids: Sequence[str]) -> dict[str, str]:
        """Directory id → M365 object id, for the resources bound to one."""
        out: dict[str, str] = {}
        ids = list(dict.fromkeys(resource_ids))
        if not ids:
            return out  # no transaction at all
        with self.reading() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                out.update(
                    {rid: oid for rid, oid in conn.execute(_OBJECT_IDS, {"ids": chunk}) if oid}
                )
        return out

    def user_doc(self, user_id: str) -> dict[str, Any] | None:
        """The user's canonical SCIM document (groups included), or None once deleted."""
        with self.reading() as conn:
            found = directory.read_user(conn, user_id, "", _FULL)
            return found[0] if found is not None else None

    def group_names(self, group_id: str) -> tuple[str, str | None] | None:
        """(displayName, mailNickname of the M365 extension) of a group, or None once
        deleted."""
        with self.reading() as conn:
            row = conn.execute(_GROUP_NAMES, {"group_id": group_id}).first()
            return (row[0], row[1]) if row is not None else None

    def group_member_ids(self, group_id: str) -> list[str]:
        with self.reading() as conn:
            return list(conn.scalars(_MEMBER_IDS, {"group_id": group_id}))

    def groups_of(self, user_id: str) -> list[str]:
        """The directory groups a user is a member of now."""
        with self.reading() as conn:
            return list(conn.scalars(_GROUPS_OF, {"user_id": user_id}))

    def group_objects(self, doc: dict[str, Any]) -> list[str]:
        """The M365 object ids of a user's directory groups that are in M365."""
        group_ids = [g["value"] for g in doc.get("groups") or [] if g.get("value")]
        return list(self.object_ids(group_ids).values())

    def reports_in_m365(self, manager_id: str) -> list[tuple[str, str]]:
        """(directory id, M365 object id) of the users whose manager is `manager_id` and who
        have an M365 account."""
        with self.reading() as conn:
            rows = conn.execute(_REPORTS_IN_M365, {"manager_id": manager_id})
            return [(rid, str(oid)) for rid, oid in rows]

    def unpushed_password_state(self, user_id: str) -> str:
        with self.reading() as conn:
            return outbox.unpushed_password_state(conn, user_id)

    def backlog(self) -> dict[str, int]:
        """Outbox events by status."""
        with self.reading() as conn:
            return outbox.counts(conn)

    # ------------------------------------------------------------ transitions

    def claim(self, worker: str, limit: int, lease_seconds: int) -> list[outbox.Claimed]:
        with self.transaction() as conn:
            return outbox.claim(conn, worker, limit, lease_seconds, now=self.clock())

    def heartbeat(self, worker: str, lease_seconds: int) -> int:
        with self.transaction() as conn:
            return outbox.heartbeat(conn, worker, lease_seconds, now=self.clock())

    def release(self, worker: str) -> int:
        with self.transaction() as conn:
            return outbox.release(conn, worker)

    def save_link(self, resource_type: str, resource_id: str, **fields: Any) -> None:
        with self.transaction() as conn:
            outbox.save_link(conn, resource_type, resource_id, now=self.clock(), **fields)

    def drop_link(self, resource_type: str, resource_id: str) -> None:
        with self.transaction() as conn:
            outbox.drop_link(conn, resource_type, resource_id)

    def complete_through(self, resource_type: str, resource_id: str, upto: int) -> None:
        """One transaction: each costs the write lock, which the worker threads share. The
        drift repairs the delivery carries out are counted as repaired in it."""
        with self.transaction() as conn:
            count_delivered(conn, resource_type, resource_id, upto)
            outbox.complete_through(conn, resource_type, resource_id, upto, now=self.clock())

    def retry_later(self, event_id: int, at: datetime, counts: bool, error: str) -> None:
        with self.transaction() as conn:
            outbox.retry_later(conn, event_id, at, counts, error)

    def dead(self, event_id: int, error: str) -> None:
        """The event is a dead letter, and its resource's link in error."""
        with self.transaction() as conn:
            outbox.dead(conn, event_id, error, link_error=True, now=self.clock())

    def dead_passwords(self, user_id: str, upto: int, error: str) -> None:
        with self.transaction() as conn:
            outbox.dead_passwords(conn, user_id, upto, error, now=self.clock())


def transaction() -> AbstractContextManager[Connection]:
    """A write transaction on the app's engine (CLI commands, in an app context)."""
    return begin(write=True)


def reading() -> AbstractContextManager[Connection]:
    """A transaction that only reads, on the app's engine (in an app context)."""
    return begin(write=False)


def backlog() -> dict[str, int]:
    """Outbox events by status, on the app's engine (in an app context)."""
    with begin(write=False) as conn:
        return outbox.counts(conn)


def save_link(resource_type: str, resource_id: str, **fields: Any) -> None:
    """`Store.save_link` on the app's engine (in an app context)."""
    with begin(write=True) as conn:
        outbox.save_link(conn, resource_type, resource_id, now=utcnow(), **fields)
