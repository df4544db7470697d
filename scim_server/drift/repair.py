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
- a deleted user: `drift_restore`; the worker restores it from directory/deletedItems
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
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import M365Link, OutboxEvent
from scim_server import outbox
from scim_server.drift import state
from scim_server.drift.detect import Finding, Kind, by_kind
from scim_server.drift.directory import Link
from scim_server.drift.settings import Mode
from scim_server.graph.errors import NotFound

if TYPE_CHECKING:
    from scim_server.sync import store
    from scim_server.sync.worker import Worker

log = logging.getLogger("scim_server.drift")

DRIFT = "drift"
RESTORE = "drift_restore"
EVENTS = (DRIFT, RESTORE)
DRIFTED = "drifted"  # passwordState: M365's password is no longer the directory's
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
    session: Session,
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
    `items`: M365's values of the drifted properties, as Graph gave them."""
    row = session.get(M365Link, (link.resource_type, link.resource_id), with_for_update=True)
    if row is None or row.object_id != link.object_id or row.updated_at != link.updated_at:
        return False
    for finding in findings:
        _log(finding, mode)
    state.count(session, "detected", by_kind(findings))
    row.drift_found_at = now
    if mode is not Mode.REPAIR:
        return True
    kinds = {f.kind for f in findings}
    queued = by_kind(f for f in findings if f.kind is not Kind.PASSWORD)
    if Kind.PASSWORD in kinds:
        row.password_state = DRIFTED
        state.count(session, "repaired", {Kind.PASSWORD.value: 1})
    if link.resource_type == "User" and Kind.USER_DELETED in kinds:
        payload: dict[str, Any] = {"kinds": queued, "object_id": link.object_id}
        outbox.record(session, "User", link.resource_id, RESTORE, payload, request_id=request_id)
        return True
    if Kind.GROUP_DELETED in kinds:
        row.object_id = None
        row.synced = None
        row.state = "pending"
    synced = dict(row.synced or {})
    for finding in findings:
        if finding.kind in (Kind.ATTRIBUTE, Kind.ACCOUNT_ENABLED) and finding.attribute:
            synced[finding.attribute] = (items or {}).get(finding.attribute, finding.m365)
            if finding.attribute == "mailNickname":
                # The worker sends mailNickname only with a UPN change (sync.mapping.changes):
                # the UPN is sent again with it, unchanged.
                synced["userPrincipalName"] = None
        elif finding.kind is Kind.MANAGER:
            row.manager_id = finding.m365  # an M365 object id, or None: never the wanted one
    if row.synced is not None:
        row.synced = synced
    if queued:
        payload = {"kinds": queued}
        if kinds & {*MEMBERSHIP, Kind.GROUP_DELETED}:
            payload["replace_all"] = True
        outbox.record(
            session, link.resource_type, link.resource_id, DRIFT, payload, request_id=request_id
        )
    return True


def count_delivered(session: Session, resource_type: str, resource_id: str, upto: int) -> None:
    """The drift repairs a delivery carries out, counted as repaired in its transaction (the
    sync store's complete_through, before it marks them done)."""
    repaired: dict[str, int] = {}
    for (payload,) in session.execute(
        select(OutboxEvent.payload).where(
            OutboxEvent.resource_type == resource_type,
            OutboxEvent.resource_id == resource_id,
            OutboxEvent.status == "pending",
            OutboxEvent.event.in_(EVENTS),
            OutboxEvent.id <= upto,
        )
    ):
        for kind, n in ((payload or {}).get("kinds") or {}).items():
            repaired[kind] = repaired.get(kind, 0) + int(n)
    if repaired:
        state.count(session, "repaired", repaired)


def restore_user(
    worker: Worker, user_id: str, link: store.Link | None, upto: int
) -> store.Link | None:
    """Before a user's delivery: a `drift_restore` among its events brings its deleted M365
    account back from deletedItems; when that is gone (NotFound), the link forgets it and
    the delivery creates the account again and binds it. Another failure fails the
    delivery (retried, then a dead letter with the reason)."""
    from scim_server.sync import store

    if link is None or not link.object_id:
        return link  # not in M365 (yet): nothing to restore, and no read
    restores = [
        p for _i, kind, p in store.pending_through("User", user_id, upto) if kind == RESTORE
    ]
    if not restores:
        return link
    if link.object_id != restores[-1].get("object_id"):
        return link  # bound to another account since: nothing to restore
    try:
        worker.pacer.acquire(1.0)
        worker.client.restore_deleted(link.object_id)
        log.info("drift repaired resource=User/%s: restored %s", user_id, link.object_id)
    except NotFound:
        log.info(
            "drift resource=User/%s: %s is no longer in deletedItems; creating it again",
            user_id,
            link.object_id,
        )
        store.save_link(
            "User",
            user_id,
            object_id=None,
            state="pending",
            synced=None,
            manager_id=None,
            password_state=None,
            password_stamp=None,
        )
    return store.link("User", user_id)
