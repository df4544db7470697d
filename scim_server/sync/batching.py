"""Delivering a backlog of user changes in JSON batches of up to 20 (json-batching).

When a worker claims several user changes at once, the common ones go together: the UPN
lookups before creates in one $batch, the creates in another, and property updates in a
third. Each part is paced, throttled and failed on its own, exactly like a single call; what
fits no batch (deletes, scope changes, a disable that must revoke sessions, binds and
conflicts) takes the worker's one-at-a-time path.

A new user joins the groups already in M365 in its create's $batch: each add is a part with
`dependsOn` on the create, naming the user by its UPN (a part cannot know the id another part
creates). Graph takes only three dependsOn shapes (parallel, serial, or every dependent naming
one root that depends on nothing; the emulator's `_check_sequencing`), so such a user leads a
$batch of its own, its create the root, and the creates with nothing to join fill it up to 20.
A serial chain would fit more, but one failed part would answer 424 for every later user;
here a failure stays with its user. A failed create's adds answer 424 and are not lost: the
user's change is retried whole, and its link stays "creating" until its groups are joined.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from models import utcnow
from scim_server import outbox, passwords
from scim_server.graph.client import BATCH_LIMIT, BatchRequest, BatchResult
from scim_server.graph.errors import Conflict, GraphError
from scim_server.logs import is_guid
from scim_server.sync import mapping, store

if TYPE_CHECKING:
    from scim_server.sync.worker import Worker

log = logging.getLogger("scim_server.sync")


@dataclass
class _Plan:
    event: outbox.Claimed
    upto: int
    link: store.Link | None
    doc: dict[str, Any]
    properties: dict[str, Any]
    object_id: str | None = None  # bound already (an update), or once created
    changes: dict[str, Any] | None = None
    joins: list[str] = field(default_factory=list)  # M365 groups to join in the create's $batch
    request_ids: list[str] = field(default_factory=list)  # the SCIM requests it carries out

    def headers(self) -> dict[str, str]:
        """Each part names the newest SCIM request it carries out (Worker._deliver)."""
        newest = self.request_ids[-1] if self.request_ids else None
        return {"client-request-id": newest} if newest and is_guid(newest) else {}


def deliver(worker: Worker, events: list[outbox.Claimed]) -> list[outbox.Claimed]:
    """Deliver what batches well; return the events left for the one-at-a-time path."""
    rest: list[outbox.Claimed] = []
    creates: list[_Plan] = []
    updates: list[_Plan] = []
    for event in events:
        plan = _plan(worker, event)
        if plan is None:
            rest.append(event)
        elif plan.object_id is None:
            creates.append(plan)
        else:
            updates.append(plan)
    if len(creates) + len(updates) < 2:  # nothing to gain: one at a time
        return rest + [p.event for p in (*creates, *updates)]
    rest += _updates(worker, updates)
    rest += _creates(worker, creates)
    return rest


def _plan(worker: Worker, event: outbox.Claimed) -> _Plan | None:
    if event.resource_type != "User":
        return None
    upto = store.last_pending_id("User", event.resource_id) or event.id
    link = store.link("User", event.resource_id)
    if link is not None and link.state in ("creating", "conflict", "unbound"):
        return None  # a bind, a crash to recover or a released account: one at a time
    pending = store.pending_through("User", event.resource_id, upto)
    if store.sealed_password(pending) or any(
        kind in ("unbind", "drift_restore") for _i, kind, _p in pending
    ):
        return None  # a password to push, a release or a restore: one at a time
    doc = store.user_doc(event.resource_id)
    if doc is None:
        return None
    properties = mapping.user_properties(doc, worker.settings.usage_location)
    if mapping.domain_of(properties["userPrincipalName"]) not in worker.domains:
        return None
    if worker.is_federated(properties):
        return None  # created without a password, with an immutable id: one at a time
    bound = link.object_id if link else None
    request_ids = store.request_ids_through("User", event.resource_id, upto)
    if bound is None:
        return _Plan(event, upto, link, doc, properties, request_ids=request_ids)
    changes = mapping.changes(link.synced if link else None, properties)
    delivered_manager = link.manager_id if link else None
    if changes.get("accountEnabled") is False or mapping.manager_id(doc) != delivered_manager:
        return None  # revoking sessions and managers take calls of their own
    return _Plan(event, upto, link, doc, properties, bound, changes, request_ids=request_ids)


def _send(worker: Worker, batches: list[list[BatchRequest]]) -> dict[str, BatchResult]:
    """Each batch one $batch, each part paced as the write (or read) it is. Every part gets a
    result: when a whole $batch fails, its parts and those of the batches not sent yet carry
    that error, and the batches already answered keep their answers."""
    results: dict[str, BatchResult] = {}
    failure: GraphError | None = None
    for chunk in batches:
        if failure is None:
            writes = sum(1 for p in chunk if p.method != "GET")
            if writes:
                worker.pacer.acquire(writes)
            try:
                results.update({r.id: r for r in worker.client.batch(chunk)})
                continue
            except GraphError as error:  # Graph down or throttling the batch itself
                failure = error
        status = failure.status or 0
        results.update({p.id: BatchResult(p.id, status, {}, None, failure) for p in chunk})
    return results


def _chunks(parts: list[BatchRequest]) -> list[list[BatchRequest]]:
    return [parts[start : start + BATCH_LIMIT] for start in range(0, len(parts), BATCH_LIMIT)]


def _done(worker: Worker, plan: _Plan, result: BatchResult | None) -> None:
    store.complete_through("User", plan.event.resource_id, plan.upto)
    headers = {k.lower(): v for k, v in (result.headers if result else {}).items()}
    worker.delivered(
        "User",
        plan.event.resource_id,
        plan.upto,
        plan.request_ids,
        headers.get("client-request-id"),
        headers.get("request-id"),
    )


def _updates(worker: Worker, plans: list[_Plan]) -> list[outbox.Claimed]:
    parts = []
    for i, plan in enumerate(plans):
        if plan.changes:
            oid = quote(plan.object_id or "", safe="")
            parts.append(
                BatchRequest(str(i), "PATCH", f"/users/{oid}", plan.changes, plan.headers())
            )
    results = _send(worker, _chunks(parts))
    for i, plan in enumerate(plans):
        result = results.get(str(i))
        if result is not None and result.error is not None:
            worker.failed(plan.event, plan.link, result.error, plan.request_ids)
            continue
        store.save_link("User", plan.event.resource_id, state="synced", synced=plan.properties)
        _done(worker, plan, result)
    return []


def _creates(worker: Worker, plans: list[_Plan]) -> list[outbox.Claimed]:
    """Look the UPNs up, then create the users nobody has (never a duplicate), each with its
    member adds for the groups already in M365."""
    if not plans:
        return []
    rest: list[outbox.Claimed] = []
    found = _send(worker, _chunks([_lookup(str(i), plan) for i, plan in enumerate(plans)]))
    fresh: list[tuple[str, _Plan]] = []
    for i, plan in enumerate(plans):
        result = found[str(i)]
        if result.error is not None:
            worker.failed(plan.event, plan.link, result.error, plan.request_ids)
        elif (result.body or {}).get("value"):
            rest.append(plan.event)  # the account exists: bind or report, one at a time
        else:
            fresh.append((str(i), plan))
    for _key, plan in fresh:
        # "creating" before the create: a worker killed after Graph created the account
        # recognises it as its own on the next try.
        upn = plan.properties["userPrincipalName"]
        store.save_link(
            "User", plan.event.resource_id, state="creating", synced={"userPrincipalName": upn}
        )
        plan.joins = worker.group_objects(plan.doc)[: BATCH_LIMIT - 1]  # the rest: after_create
    results = _send(worker, _create_batches(worker, fresh))
    for key, plan in fresh:
        error = results[key].error
        if isinstance(error, Conflict):
            rest.append(plan.event)  # created meanwhile: the one-at-a-time path finds it
        elif error is not None:
            # Its adds answered 424; the retry sends the create and the adds again.
            worker.failed(plan.event, plan.link, error, plan.request_ids)
        else:
            _created(worker, plan, key, results)
    return rest


def _lookup(key: str, plan: _Plan) -> BatchRequest:
    upn = _odata(plan.properties["userPrincipalName"])
    return BatchRequest(
        key,
        "GET",
        "/users?$select=id&$filter=" + quote(f"userPrincipalName eq {upn}"),
        headers=plan.headers(),
    )


def _create_batches(worker: Worker, fresh: list[tuple[str, _Plan]]) -> list[list[BatchRequest]]:
    """A $batch for each user with groups to join: its create, then its adds with dependsOn
    on the create (Graph's "same" shape). The creates that join nothing fill these up to 20,
    and those left over go twenty at a time."""
    led = [[_create(key, plan), *_adds(worker, key, plan)] for key, plan in fresh if plan.joins]
    alone = [_create(key, plan) for key, plan in fresh if not plan.joins]
    for batch in led:
        room = BATCH_LIMIT - len(batch)
        batch.extend(alone[:room])
        del alone[:room]
    return led + _chunks(alone)


def _create(key: str, plan: _Plan) -> BatchRequest:
    body = mapping.create_body(plan.properties, passwords.generate())
    return BatchRequest(key, "POST", "/users", body, plan.headers())


def _adds(worker: Worker, key: str, plan: _Plan) -> list[BatchRequest]:
    """POST /groups/{id}/members/$ref for each group to join, naming the user by its UPN (see
    GraphClient.user_ref): its id is not known until the create has answered."""
    upn = plan.properties["userPrincipalName"]
    return [
        BatchRequest(
            f"{key}.{j}",
            "POST",
            f"/groups/{quote(group, safe='')}/members/$ref",
            {"@odata.id": worker.client.user_ref(upn)},
            plan.headers(),
            depends_on=(key,),
        )
        for j, group in enumerate(plan.joins)
    ]


def _created(worker: Worker, plan: _Plan, key: str, results: dict[str, BatchResult]) -> None:
    """The create answered 201: keep the object id, then what its adds answered. An add that
    failed fails the change, and its retry joins what is missing; a 404 there is replication
    lag, measured from this create (Worker.failed)."""
    user_id = plan.event.resource_id
    object_id = str(results[key].body["id"])
    store.save_link(
        "User",
        user_id,
        object_id=object_id,
        state="creating",  # until after_create has landed
        synced=plan.properties,
        created_in_m365_at=utcnow(),
        password_state=store.unpushed_password_state(user_id),
    )
    joined = []
    for j, group in enumerate(plan.joins):
        error = results[f"{key}.{j}"].error
        if error is not None and not isinstance(error, Conflict):  # Conflict: a member already
            worker.failed(plan.event, plan.link, error, plan.request_ids)
            return
        joined.append(group)
    try:
        newest = plan.request_ids[-1] if plan.request_ids else None
        with worker.client.correlated(newest):
            worker.after_create(user_id, plan.doc, object_id, joined)
    except GraphError as error:
        worker.failed(plan.event, plan.link, error, plan.request_ids)
        return
    _done(worker, plan, results[key])


def _odata(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
