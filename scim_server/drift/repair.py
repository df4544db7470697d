"""Recording drift, and putting it right through the outbox.

Each drifted object is one transaction: its link (what was sent, as M365 now has it, so that
the worker's state-based delivery sends the directory's values back), the counts, and the
outbox event (`drift`, or `drift_restore` for a deleted user), like every other change:
ordered per resource, coalesced with the changes waiting beside it, paced within the one
write budget, retried, and a dead letter with its reason when it keeps failing.

- an attribute or accountEnabled: the link's `synced` takes M365's value; the delivery sends
  the directory's (a disable it reverts also revokes sessions, as any disable does);
- the manager: the link's `manager_id` takes M365's (its object id, which no directory id
  equals, or none); the delivery sets the directory's manager again, or removes it;
- a deleted user: `drift_restore`; the worker (sync.worker, before the user's delivery)
  restores it from directory/deletedItems
  (directory-deleteditems-restore: "A recently deleted item will remain available for up to
  30 days"), or, once it cannot be (purged, past 30 days), creates
  it again and binds it;
- a deleted group: security groups cannot be restored (directory-deleteditems-restore: "This
  is not applicable to security groups, which are deleted permanently"), so the link
  forgets the object and the delivery creates the group again with its members;
- members added or removed in M365: a delivery that makes the group's members the
  directory's (`replace_all`): the strangers removed, the missing added back;
- a password changed in M365: `passwordState: drifted`; the user's next portal sign-in sets
  the directory's password again (nothing is queued: the directory has no password to send
  until then, it keeps only a hash).

https://learn.microsoft.com/en-us/graph/api/directory-deleteditems-restore
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from models import EventKind, EventStatus, LinkState, M365Link, OutboxEvent, PasswordState
from scim_server import outbox
from scim_server.drift import state
from scim_server.drift.detect import Finding, Kind, by_kind
from scim_server.drift.directory import Link
from scim_server.drift.settings import Mode

log = logging.getLogger("scim_server.drift")

EVENTS = (EventKind.DRIFT, EventKind.DRIFT_RESTORE)
MEMBERSHIP = (Kind.MEMBER_ADDED, Kind.MEMBER_REMOVED)


def _log(finding: Finding, mode: Mode) -> None:
    resource = f"{finding.resource_type}/{finding.resource_id}"
    log.warning(
        "drift found resource=%s object=%s kind=%s attribute=%s m365=%r directory=%r action=%s",
        resource,
        finding.object_id,
        finding.kind.value,
        finding.attribute,
        finding.m365,
        finding.directory,
        mode.value,
        extra={"resource": resource},
    )


def record(
    conn: Connection,
    link: Link,
    items: dict[str, Any] | None,
    findings: Sequence[Finding],
    mode: Mode,
    now: datetime,
    request_id: str | None = None,
) -> bool:
    """Record one object's drift (and, with `repair`, queue its repair) in the caller's
    transaction. False, recording nothing, when the sync changed the link since it was
    read: what was compared is stale, and the next round sees the object again.
    `items`: M365's values of the drifted properties, as Graph gave them. The link and the
    event are written by `scim_server.outbox`, which owns their transitions."""
    row = conn.execute(
        select(M365Link.object_id, M365Link.updated_at, M365Link.synced)
        .where(
            M365Link.resource_type == link.resource_type,
            M365Link.resource_id == link.resource_id,
        )
        .with_for_update()
    ).first()
    if row is None or row.object_id != link.object_id or row.updated_at != link.updated_at:
        return False
    for finding in findings:
        _log(finding, mode)
    state.count(conn, "detected", by_kind(findings))
    fields: dict[str, Any] = {}
    kinds = {f.kind for f in findings}
    queued = by_kind(f for f in findings if f.kind is not Kind.PASSWORD)
    event: tuple[EventKind, dict[str, Any]] | None = None
    if mode is Mode.REPAIR:
        if Kind.PASSWORD in kinds:
            fields["password_state"] = PasswordState.DRIFTED
            state.count(conn, "repaired", {Kind.PASSWORD.value: 1})
        if link.resource_type == "User" and Kind.USER_DELETED in kinds:
            event = (EventKind.DRIFT_RESTORE, {"kinds": queued, "object_id": link.object_id})
        else:
            before = row.synced
            if Kind.GROUP_DELETED in kinds:
                fields.update(object_id=None, synced=None, state=LinkState.PENDING)
                before = None
            synced = dict(row.synced or {})
            for finding in findings:
                if finding.kind in (Kind.ATTRIBUTE, Kind.ACCOUNT_ENABLED) and finding.attribute:
                    synced[finding.attribute] = (items or {}).get(finding.attribute, finding.m365)
                    if finding.attribute == "mailNickname":
                        # The worker sends mailNickname only with a UPN change
                        # (sync.mapping.changes): the UPN is sent again with it, unchanged.
                        synced["userPrincipalName"] = None
                elif finding.kind is Kind.MANAGER:
                    # An M365 object id, or None: never the wanted one.
                    fields["manager_id"] = finding.m365
            if before is not None:
                fields["synced"] = synced
            if queued:
                payload: dict[str, Any] = {"kinds": queued}
                if kinds & {*MEMBERSHIP, Kind.GROUP_DELETED}:
                    payload["replace_all"] = True
                event = (EventKind.DRIFT, payload)
    outbox.drift_found(
        conn,
        link.resource_type,
        link.resource_id,
        now=now,
        event=event,
        request_id=request_id,
        **fields,
    )
    return True


def count_delivered(conn: Connection, resource_type: str, resource_id: str, upto: int) -> None:
    """The drift repairs a delivery carries out, counted as repaired in its transaction (the
    sync store's complete_through, before it marks them done)."""
    repaired: dict[str, int] = {}
    for (payload,) in conn.execute(
        select(OutboxEvent.payload).where(
            OutboxEvent.resource_type == resource_type,
            OutboxEvent.resource_id == resource_id,
            OutboxEvent.status == EventStatus.PENDING,
            OutboxEvent.event.in_(EVENTS),
            OutboxEvent.id <= upto,
        )
    ):
        for kind, n in ((payload or {}).get("kinds") or {}).items():
            repaired[kind] = repaired.get(kind, 0) + int(n)
    if repaired:
        state.count(conn, "repaired", repaired)
