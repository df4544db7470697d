"""`scim-server m365 plan`: everything the directory would change in Microsoft 365 right
now, read from Graph and the database, written nowhere.

Where a drift round compares M365 with what the directory last sent, the plan compares it
with what the directory wants now: pending changes are in the plan (they are what the sync
is about to do), and so is drift. It reads the whole tenant with the delta queries (no delta
link is kept) and the whole directory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select

from models import LinkState, M365Link
from scim_server.db import begin
from scim_server.drift import detect, directory
from scim_server.drift.detect import Kind
from scim_server.graph.client import GraphClient
from scim_server.sync import mapping

# Left alone (conflicts, released accounts), or being created now.
LEFT_ALONE = (LinkState.CONFLICT, LinkState.UNBOUND, LinkState.CREATING)
ACTIONS = ("create", "update", "disable", "restore", "add_member", "remove_member")


@dataclass(frozen=True)
class Change:
    action: str  # one of ACTIONS
    resource_type: str  # "User" | "Group"
    resource_id: str
    name: str  # the UPN, or the group's displayName
    attribute: str | None = None
    m365: Any = None
    directory: Any = None

    def describe(self) -> str:
        what = f"{self.resource_type.lower()} {self.name}"
        if self.action == "update":
            return f"update {what}: {self.attribute}: {self.m365!r} → {self.directory!r}"
        if self.action in ("add_member", "remove_member"):
            verb = "add" if self.action == "add_member" else "remove"
            return f"{verb} member {self.attribute} {'to' if verb == 'add' else 'from'} {what}"
        if self.action == "create" and self.directory:
            return f"create {what} ({self.directory})"
        return f"{self.action} {what}"


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        return {a: sum(1 for c in self.changes if c.action == a) for a in ACTIONS}

    def to_json(self) -> dict[str, Any]:
        return {"changes": [asdict(c) for c in self.changes], "totals": self.totals()}

    def lines(self) -> list[str]:
        totals = self.totals()
        summary = ", ".join(f"{n} {a.replace('_', ' ')}" for a, n in totals.items())
        return [*(c.describe() for c in self.changes), f"Totals: {summary}"]


def make(
    database: Engine,
    client: GraphClient,
    domains: Sequence[str],
    usage_location: str | None,
    *,
    pace: Callable[[], None] | None = None,
    page_size: int = 999,
) -> Plan:
    users = client.users_delta(None, detect.USER_SELECT, pace=pace, page_size=page_size)
    groups = client.groups_delta(None, detect.GROUP_SELECT, pace=pace, page_size=page_size)
    alive_users = {str(i["id"]): i for i in users.items if not detect.removed(i)}
    # A first delta round lists the live users only: the deleted ones, still restorable
    # for 30 days, are in deletedItems (directory-deleteditems-list).
    restorable = set(client.deleted_user_ids(pace=pace))
    alive_groups = {str(i["id"]): i for i in groups.items if not detect.removed(i)}
    # The directory is read once the tenant has been: a short reading transaction.
    with begin(write=False, engine=database) as conn:
        return _compare(conn, domains, usage_location, alive_users, restorable, alive_groups)


def _compare(
    conn: Connection,
    domains: Sequence[str],
    usage_location: str | None,
    alive_users: dict[str, dict[str, Any]],
    restorable: set[str],
    alive_groups: dict[str, dict[str, Any]],
) -> Plan:
    links = {
        (row.resource_type, row.resource_id): row
        for row in conn.execute(select(M365Link.__table__))
    }
    objects = {rid: str(row.object_id) for (_t, rid), row in links.items() if row.object_id}
    scope = tuple(d.lower() for d in domains)
    plan = Plan()
    for chunk in directory.chunks(directory.all_user_ids(conn)):
        for rid, wanted in directory.users_wanted(conn, chunk, usage_location).items():
            upn = str(wanted.properties.get("userPrincipalName") or wanted.user_name)
            if mapping.domain_of(upn) not in scope:
                continue  # out of scope: not provisioned
            row = links.get(("User", rid))
            if row is not None and row.state in LEFT_ALONE:
                continue  # left alone, or being created now
            if row is None or not row.object_id:
                plan.changes.append(Change("create", "User", rid, upn))
                continue
            item = alive_users.get(str(row.object_id))
            if item is None:
                action = "restore" if str(row.object_id) in restorable else "create"
                plan.changes.append(Change(action, "User", rid, upn))
                continue
            link = directory.link_of(row)
            for found in detect.user(item, link, wanted, objects, baseline="wanted"):
                if found.kind is Kind.ACCOUNT_ENABLED and found.directory is False:
                    plan.changes.append(Change("disable", "User", rid, upn))
                else:
                    plan.changes.append(
                        Change(
                            "update", "User", rid, upn, found.attribute, found.m365, found.directory
                        )
                    )
    group_ids = directory.all_group_ids(conn)
    for chunk in directory.chunks(group_ids):
        wanted_groups = directory.groups_wanted(conn, chunk)
        members = directory.members(conn, chunk)
        for gid, names in wanted_groups.items():
            name = names["displayName"]
            row = links.get(("Group", gid))
            member_objects = {objects[m] for m in members.get(gid, []) if m in objects}
            item = (
                alive_groups.get(str(row.object_id)) if row is not None and row.object_id else None
            )
            if item is None:
                plan.changes.append(
                    Change("create", "Group", gid, name, directory=f"{len(member_objects)} members")
                )
                continue
            assert row is not None
            link = directory.link_of(row)
            for found in detect.group(item, link, names, baseline="wanted"):
                plan.changes.append(
                    Change(
                        "update", "Group", gid, name, found.attribute, found.m365, found.directory
                    )
                )
            for found in detect.members(
                item, link, member_objects, (), full=True, ignore=restorable
            ):  # a restore brings its memberships back
                action = "remove_member" if found.kind is Kind.MEMBER_ADDED else "add_member"
                plan.changes.append(Change(action, "Group", gid, name, found.attribute))
    return plan
