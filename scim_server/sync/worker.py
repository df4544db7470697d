"""The outbox worker: claims change events and makes Microsoft 365 match the directory.

Delivery is state-based. An event says only that a user or group changed; the worker reads
the resource's current state and sends Graph what differs from the last delivery, so ten
PATCHes still waiting become one Graph PATCH (coalescing), and a redelivery after a crash
sends nothing twice. Changes to one resource go in order (`outbox.claim` hands out only the
head of each resource's queue); different resources run in parallel. Group memberships are
the exception: member events carry the ids added and removed, folded in order, so a
50,000-member group is never listed to add one member.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from flask import Flask

from models import EventKind, EventStatus, LinkState, PasswordState
from scim_server import outbox, passwords, sealing
from scim_server.graph.client import GraphClient
from scim_server.graph.errors import Conflict, GraphError, NotFound
from scim_server.sync import batching, mapping
from scim_server.sync.pacer import Pacer
from scim_server.sync.policy import GiveUp, Policy
from scim_server.sync.scope import Scope, ScopeError, scope, sync_domains
from scim_server.sync.settings import SyncSettings
from scim_server.sync.store import Link, Snapshot, Store, sealed_password

log = logging.getLogger("scim_server.sync")

__all__ = ["Scope", "ScopeError", "Worker", "scope", "sync_domains"]


FEDERATED = (
    "the user's domain is federated: Microsoft 365 takes the password from the federation's "
    "identity provider, so the directory never sends it"
)


@dataclass(frozen=True)
class Password:
    """A directory password on its way to M365 (never logged: repr hides it)."""

    text: str = field(repr=False)
    force_change: bool = False
    # From a portal sign-in: push only if M365's password is not already the directory's.
    check_only: bool = False


@dataclass
class Counters:
    """What one worker did; the process's heartbeat (runtime) reports their sums."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    graph_errors: dict[str, int] = field(default_factory=dict)
    delivered_by_kind: dict[str, int] = field(default_factory=dict)  # "user" | "group"

    def count_delivered(self, resource_type: str) -> None:
        kind = resource_type.lower()
        self.delivered += 1
        self.delivered_by_kind[kind] = self.delivered_by_kind.get(kind, 0) + 1


class Worker:
    """Delivers the outbox to one Graph target. It needs no Flask app context: `store`
    opens its own connections and carries the clock. Given a Flask app instead, the worker
    makes that store from the app's engine and takes the app's instance folder (where the
    default encryption key lives) once, here."""

    def __init__(
        self,
        store: Store | Flask,
        client: GraphClient,
        settings: SyncSettings,
        domains: tuple[str, ...],
        *,
        name: str | None = None,
        pacer: Pacer | None = None,
        policy: Policy | None = None,
        rng: random.Random | None = None,
        federated: Iterable[str] = (),
        instance_path: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if isinstance(store, Flask):
            instance_path = instance_path or store.instance_path
            store = Store.of(store, clock) if clock else Store.of(store)
        elif clock is not None:
            store = Store(store.engine, clock)
        if instance_path is None:
            raise ValueError("the worker needs the instance folder (the encryption key file)")
        self.store = store
        self.instance_path = instance_path
        self.client = client
        self.settings = settings
        self.scope = Scope(
            tuple(d.lower() for d in domains), frozenset(d.lower() for d in federated)
        )
        self.name = name or f"{socket.gethostname()}:{threading.get_native_id()}"
        self.pacer = pacer or Pacer(settings.write_rate)
        self.policy = policy or Policy(max_attempts=settings.max_attempts)
        self.rng = rng or random.Random()
        self.counters = Counters()
        self.batcher = batching.Batcher(
            self.store, client, self.pacer, settings.usage_location, self.scope
        )

    @property
    def domains(self) -> tuple[str, ...]:
        return self.scope.domains

    def now(self) -> datetime:
        return self.store.clock()

    # ------------------------------------------------------------ loop

    def run_once(self, limit: int | None = None) -> int:
        """Claim a batch of events and deliver them; returns how many were claimed."""
        lease = self.settings.lease_seconds
        events = self.store.claim(self.name, limit or self.settings.batch_size, lease)
        renewed = time.monotonic()
        rest: list[batching.Single] = []
        if len(events) > 1:  # a backlog sends what batches well in JSON batches
            for outcome in self.batcher.deliver(events):
                if isinstance(outcome, batching.Single):
                    rest.append(outcome)
                else:
                    self.apply(outcome)
        else:
            rest = [batching.Single(e) for e in events]
        for single in rest:
            self._deliver(single.event, single.snapshot)
            if time.monotonic() - renewed > lease / 3:
                # Still alive: keep the claim on the events not delivered yet.
                self.store.heartbeat(self.name, lease)
                renewed = time.monotonic()
        return len(events)

    def apply(self, outcome: batching.Done | batching.Failed | batching.Created) -> None:
        """Carry out what a batched delivery came to."""
        if isinstance(outcome, batching.Failed):
            self.failed(outcome.event, outcome.link, outcome.error, outcome.request_ids)
            return
        if isinstance(outcome, batching.Created):
            done = outcome.done
            try:
                newest = done.request_ids[-1] if done.request_ids else None
                with self.client.correlated(newest):
                    self.after_create(
                        done.event.resource_id, outcome.doc, outcome.object_id, outcome.joined
                    )
            except GraphError as error:
                self.failed(done.event, outcome.link, error, done.request_ids)
                return
            outcome = done
        event = outcome.event
        self.store.complete_through(event.resource_type, event.resource_id, outcome.upto)
        self.delivered(
            event.resource_type,
            event.resource_id,
            outcome.upto,
            outcome.request_ids,
            outcome.client_request_id,
            outcome.graph_request_id,
        )

    def run(self, stop: threading.Event, idle_seconds: float = 0.5) -> None:
        """Deliver until `stop` is set; sleep `idle_seconds` when there is nothing to do."""
        while not stop.is_set():
            try:
                claimed = self.run_once()
            except Exception:  # a worker must outlive a database hiccup
                log.exception("sync worker %s: claim failed", self.name)
                claimed = 0
            if not claimed:
                stop.wait(idle_seconds)

    def drain(self, timeout: float = 60.0, pause: float = 0.05) -> bool:
        """Deliver until no event is pending, retries included; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.run_once():
                if not self.store.backlog().get(EventStatus.PENDING):
                    return True
                time.sleep(pause)
        return False

    # ------------------------------------------------------------ one event

    def _deliver(self, event: outbox.Claimed, snapshot: Snapshot | None = None) -> None:
        """Deliver one claimed event with those of its resource queued behind it. Their
        state (and the link's) is read once, here, unless the batch path already did."""
        rtype, rid = event.resource_type, event.resource_id
        snap = snapshot or self.store.snapshot(rtype, rid, event.id)
        upto, link = snap.upto, snap.link
        # The SCIM requests this delivery carries out; Graph is told the newest (one
        # client-request-id per call), the log names them all.
        request_ids = snap.request_ids
        try:
            with self.client.correlated(request_ids[-1] if request_ids else None):
                self._deliver_state(event, snap)
        except GraphError as error:
            self.failed(event, link, error, request_ids)
            return
        self.store.complete_through(rtype, rid, upto)
        self.delivered(
            rtype,
            rid,
            upto,
            request_ids,
            self.client.last_client_request_id,
            self.client.last_request_id,
        )

    def delivered(
        self,
        resource_type: str,
        resource_id: str,
        upto: int,
        request_ids: Sequence[str],
        client_request_id: str | None,
        graph_request_id: str | None,
    ) -> None:
        """Count a delivery, and log it: the SCIM requests it carried out (X-Request-Id),
        the client-request-id Graph echoed for its last call, and Graph's own request-id."""
        self.counters.count_delivered(resource_type)
        resource = f"{resource_type}/{resource_id}"
        log.info(
            "sync delivered resource=%s through_event=%d request_ids=%s client_request_id=%s "
            "graph_request_id=%s",
            resource,
            upto,
            ",".join(request_ids) or "-",
            client_request_id,
            graph_request_id,
            extra={
                "worker": self.name,
                "resource": resource,
                "request_ids": list(request_ids) or None,
                "client_request_id": client_request_id,
                "graph_request_id": graph_request_id,
            },
        )

    def _deliver_state(self, event: outbox.Claimed, snap: Snapshot) -> None:
        """Make the resource's M365 object match its current state; a GraphError fails it."""
        rtype, rid = event.resource_type, event.resource_id
        if rtype == "User":  # a deleted account to restore first (drift repair)
            snap = self._restore_first(rid, snap)
        link = snap.link
        if rtype == "User" and self._released(rid, snap):
            pass  # the directory no longer manages this user's M365 account
        elif rtype == "User":
            sealed = sealed_password(snap.events)
            password: Password | None = None
            try:
                if sealed is not None:
                    text = sealing.unseal(self.instance_path, sealed.sealed)
                    password = Password(text, sealed.force_change, sealed.check_only)
            except sealing.SealBroken as broken:
                # The password is lost to a key change: say so, deliver the rest.
                log.error("sync resource=User/%s: %s", rid, broken)
                self.store.dead_passwords(rid, snap.upto, str(broken))
            self._sync_user(rid, link, password)
        else:
            self._sync_group(rid, link, snap.events)

    def _restore_first(self, user_id: str, snap: Snapshot) -> Snapshot:
        """Before a user's delivery: a `drift_restore` among its events (drift.repair)
        brings its deleted M365 account back from deletedItems
        (https://learn.microsoft.com/en-us/graph/api/directory-deleteditems-restore); when
        that is gone (NotFound: purged, or past its 30 days), the link forgets it and the
        delivery creates the account again and binds it. Another failure fails the delivery
        (retried, then a dead letter with the reason)."""
        link = snap.link
        if link is None or not link.object_id:
            return snap  # not in M365 (yet): nothing to restore
        restores = snap.kinds(EventKind.DRIFT_RESTORE)
        if not restores or link.object_id != restores[-1].get("object_id"):
            return snap  # nothing to restore, or bound to another account since
        try:
            self._write()
            self.client.restore_deleted(link.object_id)
            log.info("drift repaired resource=User/%s: restored %s", user_id, link.object_id)
        except NotFound:
            log.info(
                "drift resource=User/%s: %s is no longer in deletedItems; creating it again",
                user_id,
                link.object_id,
            )
            self.store.save_link(
                "User",
                user_id,
                object_id=None,
                state=LinkState.PENDING,
                synced=None,
                manager_id=None,
                password_state=None,
                password_stamp=None,
            )
        return replace(snap, link=self.store.link("User", user_id))

    def _released(self, user_id: str, snap: Snapshot) -> bool:
        """`scim-server m365 unbind`: release the account (disabling it first with
        --suspend); from then on the user's changes no longer reach it."""
        link = snap.link
        unbinds = snap.kinds(EventKind.UNBIND)
        if not unbinds:
            return link is not None and link.state == LinkState.UNBOUND
        if link is not None and link.object_id and unbinds[-1].get("suspend"):
            self._write()
            self.client.update_user(link.object_id, {"accountEnabled": False})
            self._write()
            self.client.revoke_sign_in_sessions(link.object_id)
        self.store.save_link(
            "User",
            user_id,
            state=LinkState.UNBOUND,
            object_id=None,
            synced=None,
            last_error=None,
            password_state=None,
            password_stamp=None,
        )
        return True

    def failed(
        self,
        event: outbox.Claimed,
        link: Link | None,
        error: GraphError,
        request_ids: Sequence[str] = (),
    ) -> None:
        kind = type(error).__name__
        self.counters.graph_errors[kind] = self.counters.graph_errors.get(kind, 0) + 1
        # A 404 soon after this resource, or an object it refers to, reached M365 is
        # replication lag: measure from the resource's M365 creation, else from the change.
        link = self.store.link(event.resource_type, event.resource_id) or link
        created = (link.created_in_m365_at if link else None) or event.created_at
        decision = self.policy.decide(error, event.attempts, self.now(), self.rng, created)
        resource = f"{event.resource_type}/{event.resource_id}"
        log.warning(
            "sync failed resource=%s event=%d error=%s request_ids=%s graph_request_id=%s "
            "detail=%r",
            resource,
            event.id,
            type(error).__name__,
            ",".join(request_ids) or "-",
            error.request_id,
            str(error),
            extra={
                "worker": self.name,
                "resource": resource,
                "request_ids": list(request_ids) or None,
                "graph_request_id": error.request_id,
            },
        )
        if isinstance(decision, GiveUp):
            self.store.dead(event.id, decision.reason)  # and the link in error
            self.counters.dead += 1
            return
        if error.status == 429 and hasattr(error, "retry_after"):
            self.pacer.hold(float(getattr(error, "retry_after", None) or 1.0))
        self.store.retry_later(event.id, decision.at, decision.counts, str(error))
        self.counters.retried += 1

    # ------------------------------------------------------------ users

    def _write(self, cost: float = 1.0) -> None:
        self.pacer.acquire(cost)

    def _in_scope(self, properties: dict[str, Any]) -> bool:
        return self.scope.includes(properties)

    def is_federated(self, properties: dict[str, Any]) -> bool:
        return self.scope.is_federated(properties)

    def _sync_user(self, user_id: str, link: Link | None, password: Password | None = None) -> None:
        """`password`: a new directory password for the account. One set through SCIM is
        pushed with forceChangePasswordNextSignIn false (the directory is the password
        authority); a temporary one, with true."""
        doc = self.store.user_doc(user_id)
        bound = link.object_id if link else None
        if doc is None:  # deleted in the directory
            if bound:
                self._apply_delete_policy(bound)
            self.store.drop_link("User", user_id)
            return
        properties = mapping.user_properties(doc, self.settings.usage_location)
        if not self._in_scope(properties):
            if bound:  # moved out of scope: as if deleted
                self._apply_delete_policy(bound)
            self.store.save_link(
                "User",
                user_id,
                state=LinkState.OUT_OF_SCOPE,
                object_id=None,
                synced=None,
                password_state=None,
                password_stamp=None,
            )
            return
        federated = self.is_federated(properties)
        if federated:
            password = None  # never sent: the federation's identity provider owns it
        if not bound:
            bound = self._create_or_bind(user_id, doc, properties, password)
            if bound is None:
                return
            self.after_create(user_id, doc, bound)
            return
        assert link is not None
        changes = mapping.changes(link.synced, properties)
        if changes:
            self._write()
            self.client.update_user(bound, changes)
            if changes.get("accountEnabled") is False:
                self._write()
                self.client.revoke_sign_in_sessions(bound)
        if password is not None and self._password_differs(bound, link, password):
            # Its own request (graph.md): a refused reset must not take the changes with it.
            self._write()
            self.client.set_password(bound, password.text, force_change=password.force_change)
            self._note_password(user_id, bound, password)
        elif federated and (link is None or link.password_state != PasswordState.FEDERATED):
            self._note_password(user_id, bound, None, federated=True)
        if link.state == LinkState.CREATING:
            # An earlier try created the account but failed in what follows a create.
            self.store.save_link("User", user_id, synced=properties)
            self.after_create(user_id, doc, bound)
            return
        self.store.save_link("User", user_id, state=LinkState.SYNCED, synced=properties)
        self._sync_manager(user_id, doc, bound, link)

    def _password_differs(self, object_id: str, link: Link | None, password: Password) -> bool:
        """Whether M365's password may not be the directory's. After the directory set it,
        M365's lastPasswordChangeDateTime stays as it was read then (link.password_stamp),
        until someone changes the password in M365."""
        if not password.check_only or link is None or link.password_state != PasswordState.SYNCED:
            return True
        stamp = self._password_stamp(object_id)
        return stamp is None or stamp != link.password_stamp

    def _password_stamp(self, object_id: str) -> str | None:
        try:
            found = self.client.get_user(object_id, select=["lastPasswordChangeDateTime"])
        except NotFound:
            return None  # replication lag right after a create: compared again next time
        stamp = found.get("lastPasswordChangeDateTime")
        return str(stamp) if stamp else None

    def _note_password(
        self,
        user_id: str,
        object_id: str,
        pushed: Password | None,
        *,
        federated: bool = False,
    ) -> None:
        """Record whether the account's password is now the directory's."""
        if federated:
            self.store.save_link(
                "User", user_id, password_state=PasswordState.FEDERATED, password_stamp=None
            )
        elif pushed is None:
            self.store.save_link(
                "User", user_id, password_state=self.store.unpushed_password_state(user_id)
            )
        else:
            self.store.save_link(
                "User",
                user_id,
                password_state=(
                    PasswordState.TEMPORARY if pushed.force_change else PasswordState.SYNCED
                ),
                password_synced_at=self.now(),
                password_stamp=self._password_stamp(object_id),
            )

    def after_create(
        self, user_id: str, doc: dict[str, Any], object_id: str, joined: Collection[str] = ()
    ) -> None:
        """What a user just created (or bound) in M365 needs next: its groups (but the M365
        groups in `joined`), its manager, and its reports that reached M365 before it did.
        Until all of it has landed the link stays "creating", so a retry does it again; the
        completion of the user's events makes it "synced" (outbox.complete_through)."""
        self._join_groups(user_id, object_id, joined)
        self._sync_manager(user_id, doc, object_id, self.store.link("User", user_id))
        for report_id, report_object in self.store.reports_in_m365(user_id):
            self._write()
            self.client.set_manager(report_object, object_id)
            self.store.save_link("User", report_id, manager_id=user_id)

    def _create_or_bind(
        self,
        user_id: str,
        doc: dict[str, Any],
        properties: dict[str, Any],
        password: Password | None = None,
    ) -> str | None:
        """Idempotent create: look the UPN up first and on ObjectConflict, never create twice.
        An existing account is bound (M365_ON_CONFLICT=bind: the directory's values overwrite
        it) or reported as a conflict (fail)."""
        upn = properties["userPrincipalName"]
        link = self.store.link("User", user_id)
        # "creating" is written before the create: a worker killed after Graph created the
        # account but before the link was saved finds it on the next try, and it is ours.
        ours = (
            link is not None
            and link.state == LinkState.CREATING
            and (link.synced or {}).get("userPrincipalName", "").lower() == upn.lower()
        )
        existing = self.client.find_user(upn, select=["id"])
        if existing is None:
            self.store.save_link(
                "User", user_id, state=LinkState.CREATING, synced={"userPrincipalName": upn}
            )
            try:
                self._write()
                created = self.client.create_user(
                    self._create_body(user_id, doc, properties, password)
                )
            except Conflict:
                existing = self.client.find_user(upn, select=["id"])
                if existing is None:
                    raise
            else:
                self.store.save_link(
                    "User",
                    user_id,
                    object_id=created["id"],
                    state=LinkState.CREATING,  # until after_create has landed
                    synced=properties,
                    created_in_m365_at=self.now(),
                )
                self._note_password(
                    user_id, str(created["id"]), password, federated=self.is_federated(properties)
                )
                return str(created["id"])
        if self.settings.on_conflict != "bind" and not ours:
            message = (
                f"{upn} already exists in Microsoft 365 (object {existing['id']}); "
                "M365_ON_CONFLICT=fail leaves it alone. Bind it with M365_ON_CONFLICT=bind "
                "or `scim-server m365 import --bind`."
            )
            self.store.save_link("User", user_id, state=LinkState.CONFLICT, last_error=message)
            return None
        object_id = str(existing["id"])
        self._write()
        self.client.update_user(object_id, {k: v for k, v in properties.items() if v is not None})
        if password is not None:
            self._write()
            self.client.set_password(object_id, password.text, force_change=password.force_change)
        # Bound, but "creating" (our own account) until after_create has landed.
        self.store.save_link(
            "User", user_id, object_id=object_id, state=LinkState.CREATING, synced=properties
        )
        self._note_password(user_id, object_id, password, federated=self.is_federated(properties))
        return object_id

    def _create_body(
        self,
        user_id: str,
        doc: dict[str, Any],
        properties: dict[str, Any],
        password: Password | None,
    ) -> dict[str, Any]:
        if self.is_federated(properties):
            # Graph requires an immutable id on a federated domain, and takes no password; the
            # federation's identity provider must send the same id as its ImmutableID claim.
            return mapping.create_body_federated(properties, doc.get("externalId") or user_id)
        if password is None:  # nobody knows it: M365 asks for a new one at first sign-in
            return mapping.create_body(properties, passwords.generate())
        return mapping.create_body(properties, password.text, force_change=password.force_change)

    def _apply_delete_policy(self, object_id: str) -> None:
        policy = self.settings.delete_policy
        try:
            if policy == "disable":
                self._write()
                self.client.update_user(object_id, {"accountEnabled": False})
                self._write()
                self.client.revoke_sign_in_sessions(object_id)
            elif policy == "delete":
                self._write()
                self.client.delete_user(object_id)
        except NotFound:
            pass  # already gone in M365: nothing left to disable or delete

    def _sync_manager(
        self, user_id: str, doc: dict[str, Any], object_id: str, link: Link | None
    ) -> None:
        wanted = mapping.manager_id(doc)
        delivered = link.manager_id if link and link.object_id == object_id else None
        if wanted == delivered:
            return
        if wanted is None:
            self._write()
            with contextlib.suppress(NotFound):
                self.client.remove_manager(object_id)
            self.store.save_link("User", user_id, manager_id=None)
            return
        manager_object = self.store.object_ids([wanted]).get(wanted)
        if manager_object is None:
            return  # the manager is not in M365 yet: its creation sets it (after_create)
        self._write()
        self.client.set_manager(object_id, manager_object)
        self.store.save_link("User", user_id, manager_id=wanted)

    def _join_groups(self, user_id: str, object_id: str, joined: Collection[str]) -> None:
        """A user reaching M365 after its groups did joins them there: group events skip
        members that have no M365 object yet. The memberships are read now, after the
        account's object id was saved, not from the document read before the create: a
        membership committed in between was skipped by its group's event (no object id
        then), and only this read sees it."""
        for group_object in self.store.object_ids(self.store.groups_of(user_id)).values():
            if group_object in joined:
                continue
            self._write()
            with contextlib.suppress(Conflict):  # already a member
                self.client.add_member(group_object, object_id)

    # ------------------------------------------------------------ groups

    def _sync_group(
        self,
        group_id: str,
        link: Link | None,
        events: list[tuple[int, str, dict[str, Any]]],
    ) -> None:
        names = self.store.group_names(group_id)
        bound = link.object_id if link else None
        if names is None:  # deleted in the directory
            if bound:
                self._write()
                with contextlib.suppress(NotFound):
                    self.client.delete_group(bound)
            self.store.drop_link("Group", group_id)
            return
        name, nickname = names
        wanted = {
            "displayName": name,
            "mailNickname": nickname or mapping.group_mail_nickname(name, group_id),
        }
        if not bound:
            self._write()
            created = self.client.create_security_group(name, wanted["mailNickname"])
            bound = str(created["id"])
            self.store.save_link(
                "Group",
                group_id,
                object_id=bound,
                state=LinkState.SYNCED,
                synced=wanted,
                created_in_m365_at=self.now(),
            )
            self._reconcile_members(group_id, bound, fresh=True)
            return
        assert link is not None
        changed = {k: v for k, v in wanted.items() if (link.synced or {}).get(k) != v}
        if changed:
            self._write()
            self.client.update_group(bound, changed)
        added, removed, replace_all = _fold(events)
        if replace_all:
            self._reconcile_members(group_id, bound, fresh=False)
        else:
            self._change_members(bound, added, removed)
        self.store.save_link("Group", group_id, state=LinkState.SYNCED, synced=wanted)

    def _reconcile_members(self, group_id: str, object_id: str, fresh: bool) -> None:
        """Make the M365 group's members the directory's (those that have an M365 object)."""
        wanted = set(self.store.object_ids(self.store.group_member_ids(group_id)).values())
        current = set() if fresh else set(self.client.member_ids(object_id))
        self._add_members(object_id, sorted(wanted - current))
        for member in sorted(current - wanted):
            self._write()
            with contextlib.suppress(NotFound):
                self.client.remove_member(object_id, member)

    def _change_members(self, object_id: str, added: list[str], removed: list[str]) -> None:
        objects = self.store.object_ids([*added, *removed])
        self._add_members(object_id, [objects[i] for i in added if i in objects])
        for rid in removed:
            if rid in objects:
                self._write()
                with contextlib.suppress(NotFound):  # not a member (any more)
                    self.client.remove_member(object_id, objects[rid])

    def _add_members(self, object_id: str, members: list[str]) -> None:
        """Twenty at a time with members@odata.bind; a twenty that fails because one is
        already a member goes one by one."""
        for start in range(0, len(members), 20):
            chunk = members[start : start + 20]
            self._write()
            try:
                self.client.add_members(object_id, chunk)
            except Conflict:
                for member in chunk:
                    self._write()
                    with contextlib.suppress(Conflict):
                        self.client.add_member(object_id, member)


def _fold(events: list[tuple[int, str, dict[str, Any]]]) -> tuple[list[str], list[str], bool]:
    """Fold member changes in event order: (added, removed, replace_all)."""
    added: dict[str, None] = {}
    removed: dict[str, None] = {}
    replace_all = False
    for _id, kind, payload in events:
        if kind == EventKind.CREATED or payload.get("replace_all"):
            replace_all = True
        for rid in payload.get("added") or ():
            removed.pop(rid, None)
            added[rid] = None
        for rid in payload.get("removed") or ():
            added.pop(rid, None)
            removed[rid] = None
    return list(added), list(removed), replace_all
