"""A drift round: Graph's delta queries since the last round, compared with the directory,
then recorded (`report`) or put right (`repair`).

One worker at a time runs a round, under a lease in `drift_state` renewed at every page. The
first round reads everything (no delta link yet); later rounds ask only for what changed,
so a round with no changes costs two requests. Reads are paced at M365_DRIFT_READ_RATE.
Items are compared in chunks (a few hundred at a time): memory and each transaction stay
small however large the tenant.

A change the sync makes during the round would look like drift when the delta read came
before it: an object whose link changed after the round began is left for the next round
(the sync's own write puts it in the next delta).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from models import utcnow
from scim_server.db import begin
from scim_server.drift import detect, directory, repair, state
from scim_server.drift.detect import Finding, Kind
from scim_server.drift.settings import DriftSettings, Mode
from scim_server.graph.client import DeltaPage, GraphClient
from scim_server.graph.errors import GraphError
from scim_server.sync import mapping
from scim_server.sync.pacer import Pacer

log = logging.getLogger("scim_server.drift")

Progress = Callable[[str, int], None]  # (what is read, pages so far)
USER_CHUNK = 500
GROUP_CHUNK = 100


class LeaseLost(RuntimeError):
    """Another worker holds the round's lease now (ours ran out): this round stops."""


class Stopped(RuntimeError):
    """The process is stopping: the round ends before its next request (its delta links
    are not kept, so the next round reads the same changes again)."""


@dataclass
class Result:
    mode: Mode
    findings: list[Finding] = field(default_factory=list)
    graph_requests: int = 0
    seconds: float = 0.0
    users_read: int = 0
    groups_read: int = 0
    full: bool = False
    deferred: int = 0  # objects the sync changed during the round: compared next round

    def found(self) -> dict[str, int]:
        return detect.by_kind(self.findings)

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "found": self.found(),
            "graph_requests": self.graph_requests,
            "seconds": round(self.seconds, 3),
            "users_read": self.users_read,
            "groups_read": self.groups_read,
            "full": self.full,
        }


def _chunked(items: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Drift:
    """Drift rounds for one target, on the directory database's `engine`; `clock` gives
    Unix seconds (the lease and the schedule)."""

    def __init__(
        self,
        engine: Engine,
        client: GraphClient,
        target: str,
        settings: DriftSettings,
        *,
        domains: Sequence[str] = (),
        usage_location: str | None = None,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        progress: Progress | None = None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.target = target
        self.settings = settings
        self.domains = tuple(d.lower() for d in domains)
        self.usage_location = usage_location
        self.holder = holder or f"drift-{uuid.uuid4()}"
        self.clock = clock
        self.pacer = Pacer(settings.read_rate, clock=time.monotonic, sleep=sleep)
        self.progress = progress
        self.stop: threading.Event | None = None  # set: stop before the next request

    @property
    def interval(self) -> float:
        return self.settings.interval_minutes * 60.0

    # ------------------------------------------------------------ schedule

    def run_if_due(self, *, force: bool = False) -> Result | None:
        """Run a round if one is due (or, with `force`, now) and no other worker runs one;
        None when not. The next round is due an interval after this one ends; after a
        failed round, too (it is logged)."""
        now = self.clock()
        if not state.try_lease(
            self.engine,
            self.target,
            self.holder,
            now,
            self.settings.lease_seconds,
            first_due=now + self.interval,
            force=force,
        ):
            return None
        try:
            result = self.run_round()
        except Stopped:
            # Still due: another worker (or this one restarted) runs it at its next look.
            state.release(self.engine, self.target, self.holder)
            raise
        except BaseException:
            state.release(
                self.engine, self.target, self.holder, next_round_at=self.clock() + self.interval
            )
            raise
        return result

    # ------------------------------------------------------------ a round

    def _pace(self, label: str) -> Callable[[], None]:
        pages = [0]

        def pace() -> None:
            if self.stop is not None and self.stop.is_set():
                raise Stopped("stopping")
            self.pacer.acquire(1.0)
            until = self.clock() + self.settings.lease_seconds
            if not state.renew(self.engine, self.target, self.holder, until):
                raise LeaseLost(f"the drift lease of {self.target} was taken over")
            self._requests += 1
            pages[0] += 1
            if self.progress is not None:
                self.progress(label, pages[0])

        return pace

    def _delta(
        self, read: Callable[..., DeltaPage], link: str | None, select: Sequence[str], label: str
    ) -> tuple[DeltaPage, bool]:
        """(the round's items and next link, whether it read everything)."""
        pace = self._pace(label)
        if link:
            try:
                return read(link, pace=pace, page_size=self.settings.page_size), False
            except GraphError as error:
                if error.status not in (400, 404, 410):
                    raise
                # An expired or refused delta token: Graph asks for a full resync.
                log.warning("drift: the %s delta link was refused (%s); reading all", label, error)
        return read(None, select, pace=pace, page_size=self.settings.page_size), True

    def run_round(self) -> Result:
        """One round; the caller holds the lease (run_if_due), which this releases."""
        started = utcnow()
        began = time.monotonic()
        self._requests = 0
        links = state.links(self.engine, self.target)
        mode = self.settings.mode
        result = Result(mode)
        users, result.full = self._delta(
            self.client.users_delta, links.users, detect.USER_SELECT, "users"
        )
        groups, groups_full = self._delta(
            self.client.groups_delta, links.groups, detect.GROUP_SELECT, "groups"
        )
        result.users_read, result.groups_read = len(users.items), len(groups.items)
        round_id = str(uuid.uuid4())
        deleted = {str(i["id"]) for i in users.items if detect.removed(i)}
        for chunk in _chunked(users.items, USER_CHUNK):
            self._users(chunk, started, round_id, result)
        for chunk in _chunked(groups.items, GROUP_CHUNK):
            self._groups(chunk, started, round_id, result, full=groups_full, deleted=deleted)
        result.graph_requests = self._requests
        result.seconds = time.monotonic() - began
        state.release(
            self.engine,
            self.target,
            self.holder,
            next_round_at=self.clock() + self.interval,
            links=state.Links(users.delta_link, groups.delta_link),
            summary=result.summary(),
            started_at=started,
        )
        log.info(
            "drift round target=%s mode=%s read=%d users, %d groups requests=%d found=%s "
            "seconds=%.1f",
            self.target,
            mode.value,
            result.users_read,
            result.groups_read,
            result.graph_requests,
            result.found() or "none",
            result.seconds,
        )
        return result

    def _in_scope(self, wanted: directory.Wanted) -> bool:
        domain = mapping.domain_of(wanted.properties.get("userPrincipalName"))
        return not self.domains or domain in self.domains

    def _users(
        self, items: Sequence[dict[str, Any]], started: Any, round_id: str, result: Result
    ) -> None:
        with begin(write=False, engine=self.engine) as conn:
            links = _managed_links(conn, "User", items, started)
            wanted = directory.users_wanted(
                conn, [lk.resource_id for lk in links.values()], self.usage_location
            )
            pending = directory.pending(conn, [("User", lk.resource_id) for lk in links.values()])
            managers = [
                m
                for lk in links.values()
                for m in (
                    lk.manager_id,
                    wanted[lk.resource_id].manager_id if lk.resource_id in wanted else None,
                )
                if m
            ]
            objects = {
                rid: lk.object_id for rid, lk in directory.links_by_resource(conn, managers).items()
            }
        for item in items:
            link = links.get(str(item["id"]))
            if link is None:
                continue  # not managed by the directory: left alone
            want = wanted.get(link.resource_id)
            if want is None or not self._in_scope(want):
                continue  # deleted in the directory, or leaving scope: its delivery says what
            if detect.removed(item):
                found = [
                    Finding(
                        Kind.USER_DELETED,
                        "User",
                        link.resource_id,
                        link.object_id,
                        None,
                        "deleted",
                        "exists",
                    )
                ]
            else:
                found = detect.user(
                    item,
                    link,
                    want,
                    objects,
                    password_pending=link.resource_id in pending.passwords,
                )
            self._record(link, item, found, round_id, result)

    def _groups(
        self,
        items: Sequence[dict[str, Any]],
        started: Any,
        round_id: str,
        result: Result,
        *,
        full: bool,
        deleted: set[str],
    ) -> None:
        with begin(write=False, engine=self.engine) as conn:
            links = _managed_links(conn, "Group", items, started)
            rids = [lk.resource_id for lk in links.values()]
            wanted = directory.groups_wanted(conn, rids)
            pending = directory.pending(conn, [("Group", rid) for rid in rids])
            members = directory.members(conn, rids)
            member_links = directory.links_by_resource(
                conn, [m for ms in members.values() for m in ms]
            )
        for item in items:
            link = links.get(str(item["id"]))
            if link is None:
                continue
            want = wanted.get(link.resource_id)
            if want is None or ("Group", link.resource_id) in pending:
                continue  # deleted in the directory, or its changes are on their way
            if detect.removed(item):
                found = [
                    Finding(
                        Kind.GROUP_DELETED,
                        "Group",
                        link.resource_id,
                        link.object_id,
                        None,
                        "deleted",
                        "exists",
                    )
                ]
            else:
                mine = [
                    member_links[m] for m in members.get(link.resource_id, []) if m in member_links
                ]
                found = [
                    *detect.group(item, link, want),
                    *detect.members(
                        item,
                        link,
                        {m.object_id for m in mine if m.managed},
                        {m.object_id for m in mine if not m.managed},
                        full=full,
                        ignore=deleted,
                    ),
                ]
            self._record(link, item, found, round_id, result)

    def _record(
        self,
        link: directory.Link,
        item: dict[str, Any],
        found: list[Finding],
        round_id: str,
        result: Result,
    ) -> None:
        if not found:
            return
        with begin(write=True, engine=self.engine) as conn:
            recorded = repair.record(
                conn, link, item, found, self.settings.mode, utcnow(), round_id
            )
        if recorded:
            result.findings.extend(found)
        else:
            result.deferred += 1


def _managed_links(
    conn: Connection, resource_type: str, items: Sequence[dict[str, Any]], started: Any
) -> dict[str, Any]:
    """The links, by M365 object id, of the items read that the directory manages; not
    those the sync wrote after the round began, which may be newer than what it read."""
    return {
        oid: link
        for oid, link in directory.links_by_object(conn, [str(i["id"]) for i in items]).items()
        if link.resource_type == resource_type and link.managed and link.updated_at < started
    }
