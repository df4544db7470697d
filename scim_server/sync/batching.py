"""Delivering a backlog of user changes in JSON batches of up to 20 (json-batching).

When a worker claims several user changes at once, the common ones go together: the UPN
lookups before creates in one $batch, the creates in another, and property updates in a
third. Each part is paced, throttled and failed on its own, exactly like a single call; what
fits no batch (deletes, scope changes, a disable that must revoke sessions, binds and
conflicts) takes the worker's one-at-a-time path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from models import utcnow
from scim_server import outbox, passwords
from scim_server.graph.client import BATCH_LIMIT, BatchRequest, BatchResult
from scim_server.graph.errors import Conflict, GraphError
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
    if store.sealed_password(pending) or any(kind == "unbind" for _i, kind, _p in pending):
        return None  # a password to push, or a release: one at a time
    doc = store.user_doc(event.resource_id)
    if doc is None:
        return None
    properties = mapping.user_properties(doc, worker.settings.usage_location)
    if mapping.domain_of(properties["userPrincipalName"]) not in worker.domains:
        return None
    if worker.is_federated(properties):
        return None  # created without a password, with an immutable id: one at a time
    bound = link.object_id if link else None
    if bound is None:
        return _Plan(event, upto, link, doc, properties)
    changes = mapping.changes(link.synced if link else None, properties)
    delivered_manager = link.manager_id if link else None
    if changes.get("accountEnabled") is False or mapping.manager_id(doc) != delivered_manager:
        return None  # revoking sessions and managers take calls of their own
    return _Plan(event, upto, link, doc, properties, bound, changes)


def _send(worker: Worker, parts: list[BatchRequest]) -> dict[str, BatchResult]:
    """One $batch per twenty parts, each part paced as the write (or read) it is."""
    results: dict[str, BatchResult] = {}
    for start in range(0, len(parts), BATCH_LIMIT):
        chunk = parts[start : start + BATCH_LIMIT]
        writes = sum(1 for p in chunk if p.method != "GET")
        if writes:
            worker.pacer.acquire(writes)
        results.update({r.id: r for r in worker.client.batch(chunk)})
    return results


def _done(worker: Worker, plan: _Plan, request_id: str | None) -> None:
    store.complete_through("User", plan.event.resource_id, plan.upto)
    worker.counters.delivered += 1
    log.info(
        "sync delivered resource=User/%s through_event=%d graph_request_id=%s",
        plan.event.resource_id,
        plan.upto,
        request_id,
    )


def _updates(worker: Worker, plans: list[_Plan]) -> list[outbox.Claimed]:
    parts = []
    for i, plan in enumerate(plans):
        if plan.changes:
            oid = quote(plan.object_id or "", safe="")
            parts.append(BatchRequest(str(i), "PATCH", f"/users/{oid}", plan.changes))
    try:
        results = _send(worker, parts) if parts else {}
    except GraphError as error:  # the whole batch failed: each change retries on its own
        for plan in plans:
            worker.failed(plan.event, plan.link, error)
        return []
    for i, plan in enumerate(plans):
        result = results.get(str(i))
        if result is not None and result.error is not None:
            worker.failed(plan.event, plan.link, result.error)
            continue
        store.save_link("User", plan.event.resource_id, state="synced", synced=plan.properties)
        _done(worker, plan, _request_id(results.get(str(i))))
    return []


def _creates(worker: Worker, plans: list[_Plan]) -> list[outbox.Claimed]:
    """Look the UPNs up, then create the users nobody has: never a duplicate."""
    if not plans:
        return []
    lookups = [
        BatchRequest(
            str(i),
            "GET",
            "/users?$select=id&$filter="
            + quote(f"userPrincipalName eq {_odata(p.properties['userPrincipalName'])}"),
        )
        for i, p in enumerate(plans)
    ]
    rest: list[outbox.Claimed] = []
    try:
        found = _send(worker, lookups)
        fresh: list[tuple[int, _Plan]] = []
        for i, plan in enumerate(plans):
            result = found.get(str(i))
            if result is None or result.error is not None:
                missing = GraphError("$batch answered nothing for a lookup")
                worker.failed(plan.event, plan.link, (result and result.error) or missing)
            elif (result.body or {}).get("value"):
                rest.append(plan.event)  # the account exists: bind or report, one at a time
            else:
                fresh.append((i, plan))
        for _i, plan in fresh:
            upn = plan.properties["userPrincipalName"]
            store.save_link(
                "User",
                plan.event.resource_id,
                state="creating",
                synced={"userPrincipalName": upn},
            )
        bodies = [
            BatchRequest(
                str(i),
                "POST",
                "/users",
                mapping.create_body(plan.properties, passwords.generate()),
            )
            for i, plan in fresh
        ]
        created = _send(worker, bodies) if bodies else {}
    except GraphError as error:
        for plan in plans:
            worker.failed(plan.event, plan.link, error)
        return []
    for i, plan in fresh:
        result = created.get(str(i))
        problem = result.error if result is not None else GraphError("$batch answered nothing")
        if isinstance(problem, Conflict):
            rest.append(plan.event)  # created meanwhile: the one-at-a-time path finds it
            continue
        if problem is not None or result is None:
            worker.failed(plan.event, plan.link, problem or GraphError("no answer"))
            continue
        object_id = str(result.body["id"])
        store.save_link(
            "User",
            plan.event.resource_id,
            object_id=object_id,
            state="synced",
            synced=plan.properties,
            created_in_m365_at=utcnow(),
            password_state=store.unpushed_password_state(plan.event.resource_id),
        )
        try:
            worker.after_create(plan.event.resource_id, plan.doc, object_id)
        except GraphError as error:
            worker.failed(plan.event, plan.link, error)
            continue
        _done(worker, plan, _request_id(result))
    return rest


def _request_id(result: BatchResult | None) -> str | None:
    if result is None:
        return None
    headers = {k.lower(): v for k, v in result.headers.items()}
    return headers.get("request-id")


def _odata(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
