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

`Batcher.deliver` never calls back into the worker: it yields an outcome for each event
(delivered, failed, created and to be finished, or to be delivered one at a time) as soon as
it is known, and the worker applies it before the next is computed, so the order of writes
is the one a worker delivering one at a time would make.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from models import EventKind, LinkState
from scim_server import outbox, passwords
from scim_server.graph.client import BATCH_LIMIT, BatchRequest, BatchResult, GraphClient
from scim_server.graph.errors import Conflict, GraphError
from scim_server.logs import is_guid
from scim_server.sync import mapping
from scim_server.sync.pacer import Pacer
from scim_server.sync.scope import Scope
from scim_server.sync.store import Link, Snapshot, Store, sealed_password

log = logging.getLogger("scim_server.sync")

# A bind, a crash to recover or a released account: one at a time.
ONE_AT_A_TIME = (LinkState.CREATING, LinkState.CONFLICT, LinkState.UNBOUND)


# ---------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Done:
    """Delivered: the worker completes the events it covers and counts it."""

    event: outbox.Claimed
    upto: int
    request_ids: list[str]
    client_request_id: str | None
    graph_request_id: str | None


@dataclass(frozen=True)
class Failed:
    """Graph refused it: the worker's retry policy decides what comes next."""

    event: outbox.Claimed
    link: Link | None
    error: GraphError
    request_ids: list[str]


@dataclass(frozen=True)
class Created:
    """Created in a $batch, having joined `joined` there: the worker finishes the create
    (its other groups, its manager, its reports), then completes it as `done` says."""

    done: Done
    link: Link | None
    doc: dict[str, Any]
    object_id: str
    joined: list[str]


@dataclass(frozen=True)
class Single:
    """Not for a batch: the worker delivers it one at a time, from `snapshot` if read."""

    event: outbox.Claimed
    snapshot: Snapshot | None = None


Outcome = Done | Failed | Created | Single


@dataclass
class _Plan:
    event: outbox.Claimed
    snapshot: Snapshot
    doc: dict[str, Any]
    properties: dict[str, Any]
    object_id: str | None = None  # bound already (an update), or once created
    changes: dict[str, Any] | None = None
    joins: list[str] = field(default_factory=list)  # M365 groups to join in the create's $batch

    @property
    def upto(self) -> int:
        return self.snapshot.upto

    @property
    def link(self) -> Link | None:
        return self.snapshot.link

    @property
    def request_ids(self) -> list[str]:
        """The SCIM requests it carries out."""
        return self.snapshot.request_ids

    def headers(self) -> dict[str, str]:
        """Each part names the newest SCIM request it carries out (Worker._deliver)."""
        newest = self.request_ids[-1] if self.request_ids else None
        return {"client-request-id": newest} if newest and is_guid(newest) else {}

    def failed(self, error: GraphError) -> Failed:
        return Failed(self.event, self.link, error, self.request_ids)

    def done(self, result: BatchResult | None) -> Done:
        headers = {k.lower(): v for k, v in (result.headers if result else {}).items()}
        return Done(
            self.event,
            self.upto,
            self.request_ids,
            headers.get("client-request-id"),
            headers.get("request-id"),
        )


@dataclass
class Batcher:
    """What delivering in batches needs: the worker's store, Graph client, write pacer,
    usage location and scope; never the worker itself."""

    store: Store
    client: GraphClient
    pacer: Pacer
    usage_location: str | None
    scope: Scope

    def deliver(self, events: list[outbox.Claimed]) -> Iterator[Outcome]:
        """Deliver what batches well; the rest comes out as `Single`."""
        rest: list[Single] = []
        creates: list[_Plan] = []
        updates: list[_Plan] = []
        for event in events:
            plan = self._plan(event)
            if isinstance(plan, Single):
                rest.append(plan)
            elif plan.object_id is None:
                creates.append(plan)
            else:
                updates.append(plan)
        if len(creates) + len(updates) < 2:  # nothing to gain: one at a time
            yield from rest
            yield from (Single(p.event, p.snapshot) for p in (*creates, *updates))
            return
        yield from self._updates(updates)
        yield from self._creates(creates)
        yield from rest

    def _plan(self, event: outbox.Claimed) -> _Plan | Single:
        if event.resource_type != "User":
            return Single(event)
        snapshot = self.store.snapshot("User", event.resource_id, event.id)
        link = snapshot.link
        if link is not None and link.state in ONE_AT_A_TIME:
            return Single(event, snapshot)
        if (
            sealed_password(snapshot.events)
            or snapshot.kinds(EventKind.UNBIND)
            or snapshot.kinds(EventKind.DRIFT_RESTORE)
        ):
            # A password to push, a release or a restore (drift repair): one at a time.
            return Single(event, snapshot)
        doc = self.store.user_doc(event.resource_id)
        if doc is None:
            return Single(event, snapshot)
        properties = mapping.user_properties(doc, self.usage_location)
        if not self.scope.includes(properties):
            return Single(event, snapshot)
        if self.scope.is_federated(properties):
            # Created without a password, with an immutable id: one at a time.
            return Single(event, snapshot)
        bound = link.object_id if link else None
        if bound is None:
            return _Plan(event, snapshot, doc, properties)
        changes = mapping.changes(link.synced if link else None, properties)
        delivered_manager = link.manager_id if link else None
        if changes.get("accountEnabled") is False or mapping.manager_id(doc) != delivered_manager:
            return Single(event, snapshot)  # revoking sessions and managers take calls of their own
        return _Plan(event, snapshot, doc, properties, bound, changes)

    def _send(self, batches: list[list[BatchRequest]]) -> dict[str, BatchResult]:
        """Each batch one $batch, each part paced as the write (or read) it is. Every part
        gets a result: when a whole $batch fails, its parts and those of the batches not sent
        yet carry that error, and the batches already answered keep their answers."""
        results: dict[str, BatchResult] = {}
        failure: GraphError | None = None
        for chunk in batches:
            if failure is None:
                writes = sum(1 for p in chunk if p.method != "GET")
                if writes:
                    self.pacer.acquire(writes)
                try:
                    results.update({r.id: r for r in self.client.batch(chunk)})
                    continue
                except GraphError as error:  # Graph down or throttling the batch itself
                    failure = error
            status = failure.status or 0
            results.update({p.id: BatchResult(p.id, status, {}, None, failure) for p in chunk})
        return results

    def _updates(self, plans: list[_Plan]) -> Iterator[Outcome]:
        parts = []
        for i, plan in enumerate(plans):
            if plan.changes:
                oid = quote(plan.object_id or "", safe="")
                parts.append(
                    BatchRequest(str(i), "PATCH", f"/users/{oid}", plan.changes, plan.headers())
                )
        results = self._send(_chunks(parts))
        for i, plan in enumerate(plans):
            result = results.get(str(i))
            if result is not None and result.error is not None:
                yield plan.failed(result.error)
                continue
            self.store.save_link(
                "User", plan.event.resource_id, state=LinkState.SYNCED, synced=plan.properties
            )
            yield plan.done(result)

    def _creates(self, plans: list[_Plan]) -> Iterator[Outcome]:
        """Look the UPNs up, then create the users nobody has (never a duplicate), each with
        its member adds for the groups already in M365."""
        if not plans:
            return
        rest: list[Single] = []
        found = self._send(_chunks([_lookup(str(i), plan) for i, plan in enumerate(plans)]))
        fresh: list[tuple[str, _Plan]] = []
        for i, plan in enumerate(plans):
            result = found[str(i)]
            if result.error is not None:
                yield plan.failed(result.error)
            elif (result.body or {}).get("value"):
                rest.append(Single(plan.event))  # the account exists: bind or report, alone
            else:
                fresh.append((str(i), plan))
        for _key, plan in fresh:
            # "creating" before the create: a worker killed after Graph created the account
            # recognises it as its own on the next try.
            upn = plan.properties["userPrincipalName"]
            self.store.save_link(
                "User",
                plan.event.resource_id,
                state=LinkState.CREATING,
                synced={"userPrincipalName": upn},
            )
            # The rest: after_create.
            plan.joins = self.store.group_objects(plan.doc)[: BATCH_LIMIT - 1]
        results = self._send(self._create_batches(fresh))
        for key, plan in fresh:
            error = results[key].error
            if isinstance(error, Conflict):
                rest.append(Single(plan.event))  # created meanwhile: the one-at-a-time path
            elif error is not None:
                # Its adds answered 424; the retry sends the create and the adds again.
                yield plan.failed(error)
            else:
                yield self._created(plan, key, results)
        yield from rest

    def _create_batches(self, fresh: list[tuple[str, _Plan]]) -> list[list[BatchRequest]]:
        """A $batch for each user with groups to join: its create, then its adds with
        dependsOn on the create (Graph's "same" shape). The creates that join nothing fill
        these up to 20, and those left over go twenty at a time."""
        led = [[_create(key, plan), *self._adds(key, plan)] for key, plan in fresh if plan.joins]
        alone = [_create(key, plan) for key, plan in fresh if not plan.joins]
        for batch in led:
            room = BATCH_LIMIT - len(batch)
            batch.extend(alone[:room])
            del alone[:room]
        return led + _chunks(alone)

    def _adds(self, key: str, plan: _Plan) -> list[BatchRequest]:
        """POST /groups/{id}/members/$ref for each group to join, naming the user by its UPN
        (see GraphClient.user_ref): its id is not known until the create has answered."""
        upn = plan.properties["userPrincipalName"]
        return [
            BatchRequest(
                f"{key}.{j}",
                "POST",
                f"/groups/{quote(group, safe='')}/members/$ref",
                {"@odata.id": self.client.user_ref(upn)},
                plan.headers(),
                depends_on=(key,),
            )
            for j, group in enumerate(plan.joins)
        ]

    def _created(self, plan: _Plan, key: str, results: dict[str, BatchResult]) -> Outcome:
        """The create answered 201: keep the object id, then what its adds answered. An add
        that failed fails the change, and its retry joins what is missing; a 404 there is
        replication lag, measured from this create (Worker.failed)."""
        user_id = plan.event.resource_id
        object_id = str(results[key].body["id"])
        self.store.save_link(
            "User",
            user_id,
            object_id=object_id,
            state=LinkState.CREATING,  # until after_create has landed
            synced=plan.properties,
            created_in_m365_at=self.store.clock(),
            password_state=self.store.unpushed_password_state(user_id),
        )
        joined = []
        for j, group in enumerate(plan.joins):
            error = results[f"{key}.{j}"].error
            if error is not None and not isinstance(error, Conflict):  # Conflict: a member
                return plan.failed(error)
            joined.append(group)
        return Created(plan.done(results[key]), plan.link, plan.doc, object_id, joined)


def _chunks(parts: list[BatchRequest]) -> list[list[BatchRequest]]:
    return [parts[start : start + BATCH_LIMIT] for start in range(0, len(parts), BATCH_LIMIT)]


def _lookup(key: str, plan: _Plan) -> BatchRequest:
    upn = _odata(plan.properties["userPrincipalName"])
    return BatchRequest(
        key,
        "GET",
        "/users?$select=id&$filter=" + quote(f"userPrincipalName eq {upn}"),
        headers=plan.headers(),
    )


def _create(key: str, plan: _Plan) -> BatchRequest:
    body = mapping.create_body(plan.properties, passwords.generate())
    return BatchRequest(key, "POST", "/users", body, plan.headers())


def _odata(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
