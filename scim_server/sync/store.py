"""What the sync worker reads from and writes to the directory database.

Every function is its own short transaction: the worker never holds a transaction (and on
SQLite never the write lock) while it waits on Graph.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import g
from sqlalchemy import delete, func, insert, select, update

from models import Group, GroupMember, M365Link, OutboxEvent, User, utcnow
from scim_server import directory, outbox
from scim_server.db import db
from scim_server.errors import NotFound
from scim_server.scim import projection as proj
from scim_server.scim.schema import USER_TYPE

_FULL = proj.parse(USER_TYPE, None, None)


@contextmanager
def transaction() -> Iterator[Any]:
    try:
        yield db.session
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


@contextmanager
def reading() -> Iterator[Any]:
    """A transaction that only reads: on SQLite a deferred BEGIN, which WAL lets run beside
    the writer, instead of queueing for the write lock as every transaction outside a request
    does (db._sqlite_begin). Worker threads, and the SCIM writers, no longer wait for the
    worker's reads."""
    g.read_phase = True
    try:
        with transaction() as session:
            yield session
    finally:
        g.read_phase = False


@dataclass(frozen=True)
class Link:
    object_id: str | None
    state: str
    synced: dict[str, Any] | None
    manager_id: str | None
    created_in_m365_at: datetime | None
    password_state: str | None = None
    password_stamp: str | None = None


def link(resource_type: str, resource_id: str) -> Link | None:
    with reading() as session:
        row = session.get(M365Link, (resource_type, resource_id))
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


def save_link(resource_type: str, resource_id: str, **fields: Any) -> None:
    """Insert or update the link; `last_synced_at` is stamped when the state becomes synced."""
    now = utcnow()
    if fields.get("state") == "synced":
        fields.setdefault("last_synced_at", now)
        fields.setdefault("last_error", None)
    with transaction() as session:
        changed = session.execute(
            update(M365Link)
            .where(M365Link.resource_type == resource_type, M365Link.resource_id == resource_id)
            .values(updated_at=now, **fields)
        ).rowcount
        if not changed:
            session.execute(
                insert(M365Link).values(
                    resource_type=resource_type,
                    resource_id=resource_id,
                    updated_at=now,
                    **{"state": "pending", **fields},
                )
            )


def drop_link(resource_type: str, resource_id: str) -> None:
    with transaction() as session:
        session.execute(
            delete(M365Link).where(
                M365Link.resource_type == resource_type, M365Link.resource_id == resource_id
            )
        )


def object_ids(resource_ids: Sequence[str]) -> dict[str, str]:
    """Directory id → M365 object id, for the resources bound to one."""
    out: dict[str, str] = {}
    ids = list(dict.fromkeys(resource_ids))
    with reading() as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            out.update(
                {
                    rid: oid
                    for rid, oid in session.execute(
                        select(M365Link.resource_id, M365Link.object_id).where(
                            # Both key columns, so that the primary key finds the rows.
                            M365Link.resource_type.in_(("User", "Group")),
                            M365Link.resource_id.in_(chunk),
                            M365Link.object_id.is_not(None),
                        )
                    )
                    if oid
                }
            )
    return out


def user_doc(user_id: str) -> dict[str, Any] | None:
    """The user's canonical SCIM document (groups included), or None once deleted."""
    with reading():
        try:
            doc, _ = directory.get_user(user_id, "", _FULL)
        except NotFound:
            return None
        return doc


def group_names(group_id: str) -> tuple[str, str | None] | None:
    """(displayName, mailNickname of the M365 extension) of a group, or None once deleted."""
    with reading() as session:
        row = session.execute(
            select(Group.display_name, Group.mail_nickname).where(Group.id == group_id)
        ).first()
        return (row[0], row[1]) if row is not None else None


def group_member_ids(group_id: str) -> list[str]:
    with reading() as session:
        return list(
            session.scalars(select(GroupMember.member_id).where(GroupMember.group_id == group_id))
        )


def groups_of(user_id: str) -> list[str]:
    """The directory groups a user is a member of now."""
    with reading() as session:
        return list(
            session.scalars(select(GroupMember.group_id).where(GroupMember.member_id == user_id))
        )


def user_exists(user_id: str) -> bool:
    with reading() as session:
        return session.scalar(select(User.id).where(User.id == user_id)) is not None


# ---------------------------------------------------------------- events


def last_pending_id(resource_type: str, resource_id: str) -> int | None:
    with reading() as session:
        return outbox.last_pending_id(session, resource_type, resource_id)


def pending_through(
    resource_type: str, resource_id: str, upto: int
) -> list[tuple[int, str, dict[str, Any]]]:
    with reading() as session:
        return outbox.pending_through(session, resource_type, resource_id, upto)


def request_ids_through(resource_type: str, resource_id: str, upto: int) -> list[str]:
    with reading() as session:
        return outbox.request_ids_through(session, resource_type, resource_id, upto)


def complete_through(resource_type: str, resource_id: str, upto: int) -> None:
    """A user's delivery sends its whole current state, so it also covers that user's earlier
    dead letters; a group's member changes are deltas, so its dead letters stay. A user just
    created (or bound) is "creating" until what follows its create has landed: now it has.
    One transaction: each costs the write lock, which the worker threads share."""
    from scim_server.drift.repair import count_delivered

    with transaction() as session:
        count_delivered(session, resource_type, resource_id, upto)  # drift repairs it carries
        outbox.complete_through(
            session, resource_type, resource_id, upto, supersede_dead=resource_type == "User"
        )
        outbox.scrub_secrets(session, resource_type, resource_id)
        now = utcnow()
        session.execute(
            update(M365Link)
            .where(
                M365Link.resource_type == resource_type,
                M365Link.resource_id == resource_id,
                M365Link.state == "creating",
                M365Link.object_id.is_not(None),
            )
            .values(state="synced", last_synced_at=now, last_error=None, updated_at=now)
        )


def retry_later(event_id: int, at: datetime, counts: bool, error: str) -> None:
    with transaction() as session:
        outbox.retry_later(session, event_id, at, counts, error)


def dead(event_id: int, error: str) -> None:
    with transaction() as session:
        row = session.get(OutboxEvent, event_id)
        outbox.dead(session, event_id, error)
        if row is not None:
            outbox.scrub_secrets(session, row.resource_type, row.resource_id)
        if row is not None and row.event == "password":
            # The dead letter took the password with it (a later one may still be queued).
            session.execute(
                update(M365Link)
                .where(
                    M365Link.resource_type == row.resource_type,
                    M365Link.resource_id == row.resource_id,
                    M365Link.password_state == "pending",
                    ~select(OutboxEvent.id)
                    .where(
                        OutboxEvent.resource_type == row.resource_type,
                        OutboxEvent.resource_id == row.resource_id,
                        OutboxEvent.event == "password",
                        OutboxEvent.status == "pending",
                    )
                    .exists(),
                )
                .values(password_state="error")
            )


def backlog() -> dict[str, int]:
    """Outbox events by status."""
    with reading() as session:
        rows = session.execute(
            select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)
        )
        return {status: int(n) for status, n in rows}


@dataclass(frozen=True)
class SealedPassword:
    sealed: str = field(repr=False)
    force_change: bool  # a temporary password: M365 asks for a new one at sign-in
    # Only portal sign-ins asked for it: push only if M365's password is not the directory's.
    check_only: bool


def sealed_password(events: list[tuple[int, str, dict[str, Any]]]) -> SealedPassword | None:
    """The newest sealed password among a resource's pending events; None without one."""
    found = [p for _i, kind, p in events if kind == "password" and p.get("sealed")]
    if not found:
        return None
    return SealedPassword(
        str(found[-1]["sealed"]),
        bool(found[-1].get("force_change")),
        all(p.get("check") for p in found),
    )


def unpushed_password_state(user_id: str) -> str:
    """The password state of an account the directory has not given its password: "unknown"
    if the directory has one (the user's next portal sign-in sends it), "none" if not (an
    activation email gives the user one)."""
    with reading() as session:
        stored = session.scalar(select(User.password_hash).where(User.id == user_id))
    return "unknown" if stored is not None else "none"


def dead_passwords(user_id: str, upto: int, error: str) -> None:
    """A user's pending password events that cannot be delivered: dead, and scrubbed."""
    with transaction() as session:
        session.execute(
            update(OutboxEvent)
            .where(
                OutboxEvent.resource_type == "User",
                OutboxEvent.resource_id == user_id,
                OutboxEvent.event == "password",
                OutboxEvent.status == "pending",
                OutboxEvent.id <= upto,
            )
            .values(status="dead", last_error=error, completed_at=utcnow())
        )
        outbox.scrub_secrets(session, "User", user_id)
        session.execute(
            update(M365Link)
            .where(M365Link.resource_type == "User", M365Link.resource_id == user_id)
            .values(password_state="error", last_error=error)
        )


def reports_in_m365(manager_id: str) -> list[tuple[str, str]]:
    """(directory id, M365 object id) of the users whose manager is `manager_id` and who
    have an M365 account."""
    # The reports by the manager_id index, then their links by primary key. As a join,
    # SQLite walked every user link and looked each user up: a scan per created user.
    reports = select(User.id).where(User.manager_id == manager_id).scalar_subquery()
    with reading() as session:
        rows = session.execute(
            select(M365Link.resource_id, M365Link.object_id).where(
                M365Link.resource_type == "User",
                M365Link.resource_id.in_(reports),
                M365Link.object_id.is_not(None),
            )
        )
        return [(rid, str(oid)) for rid, oid in rows]
