"""What counts as drift: pure comparisons of Graph delta items with what the directory last
sent (its m365_links row) and what it wants now.

A property has drifted when M365's value differs from the value last sent while the
directory still wants that value: a change the directory is about to send (what it wants
differs from what it sent; its event waits in the outbox or is being delivered) is not
drift, and a change the sync made itself equals what it sent. `m365 plan` compares with
what the directory wants instead (`baseline="wanted"`): everything a delivery would change.

Delta items carry only what Graph returned: a property absent from an item is not compared
(user-delta, group-delta: "If the property has never been set before it will not be
included"; with `Prefer: return=minimal`, only changed properties come).
https://learn.microsoft.com/en-us/graph/api/user-delta
https://learn.microsoft.com/en-us/graph/api/group-delta
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from models import PasswordState
from scim_server.drift.directory import Link, Wanted
from scim_server.sync import mapping


class Kind(enum.StrEnum):
    ATTRIBUTE = "attribute"  # a property of the mapping table
    ACCOUNT_ENABLED = "account_enabled"
    MANAGER = "manager"
    USER_DELETED = "user_deleted"
    GROUP_DELETED = "group_deleted"
    MEMBER_ADDED = "member_added"  # in M365, not in the directory
    MEMBER_REMOVED = "member_removed"  # in the directory, not in M365
    PASSWORD = "password"  # lastPasswordChangeDateTime moved: changed in M365


@dataclass(frozen=True)
class Finding:
    kind: Kind
    resource_type: str  # "User" | "Group"
    resource_id: str
    object_id: str
    attribute: str | None = None  # the Graph property, or the member's object id
    m365: Any = None  # M365's value
    directory: Any = None  # the directory's


# The properties drift compares on users: the mapping table's, but accountEnabled (a kind of
# its own) and the manager (a navigation property, `manager@delta`).
USER_ATTRIBUTES = tuple(p for p in mapping.USER_PROPERTIES if p != "accountEnabled")
USER_SELECT = (*mapping.USER_PROPERTIES, "lastPasswordChangeDateTime", "manager")
GROUP_ATTRIBUTES = ("displayName", "mailNickname")
GROUP_SELECT = (*GROUP_ATTRIBUTES, "members")
# A password the directory set: a later change in M365 is drift.
PASSWORD_STATES = (PasswordState.SYNCED, PasswordState.TEMPORARY)


def normal(prop: str, value: Any) -> Any:
    """A value as compared: no value, an empty string and an empty list are the same; the
    UPN in any case (Graph compares it so)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(value, str):
        value = value.strip()
        return value.lower() if prop == "userPrincipalName" else value
    return value


def shown(value: Any) -> Any:
    """A compared value as logs and plans show it."""
    return list(value) if isinstance(value, tuple) else value


def removed(item: dict[str, Any]) -> bool:
    return "@removed" in item


def manager_of(item: dict[str, Any]) -> tuple[bool, str | None]:
    """(known, object id) of the manager a user item names in `manager@delta`: a list whose
    entries without `@removed` are the manager; absent, it is not known."""
    if "manager@delta" not in item:
        return False, None
    alive = [m for m in item["manager@delta"] or [] if "@removed" not in m and m.get("id")]
    return True, (str(alive[-1]["id"]) if alive else None)


def user(
    item: dict[str, Any],
    link: Link,
    wanted: Wanted,
    object_ids: dict[str, str],
    *,
    password_pending: bool = False,
    baseline: str = "synced",
) -> list[Finding]:
    """The drift of one user present in M365. `object_ids`: directory id → M365 object id,
    for the managers involved."""
    out: list[Finding] = []
    synced = link.synced if baseline == "synced" else wanted.properties
    for prop in (*USER_ATTRIBUTES, "accountEnabled"):
        if prop not in item or prop not in synced:
            continue
        m365, sent = normal(prop, item[prop]), normal(prop, synced[prop])
        want = normal(prop, wanted.properties.get(prop))
        if m365 != sent and want == sent:
            kind = Kind.ACCOUNT_ENABLED if prop == "accountEnabled" else Kind.ATTRIBUTE
            out.append(
                Finding(
                    kind, "User", link.resource_id, link.object_id, prop, shown(m365), shown(want)
                )
            )
    known, m365_manager = manager_of(item)
    delivered = link.manager_id if baseline == "synced" else wanted.manager_id
    if known and wanted.manager_id == delivered:
        sent_object = object_ids.get(delivered) if delivered else None
        if delivered and sent_object is None:
            pass  # its manager is not in M365 (yet): nothing was sent to compare
        elif m365_manager != sent_object:
            out.append(
                Finding(
                    Kind.MANAGER,
                    "User",
                    link.resource_id,
                    link.object_id,
                    "manager",
                    m365_manager,
                    sent_object,
                )
            )
    stamp = item.get("lastPasswordChangeDateTime")
    if (
        baseline == "synced"
        and "lastPasswordChangeDateTime" in item
        and not password_pending
        and link.password_state in PASSWORD_STATES
        and link.password_stamp
        and stamp
        and str(stamp) != link.password_stamp
    ):
        out.append(
            Finding(
                Kind.PASSWORD,
                "User",
                link.resource_id,
                link.object_id,
                "lastPasswordChangeDateTime",
                str(stamp),
                link.password_stamp,
            )
        )
    return out


def group(
    item: dict[str, Any],
    link: Link,
    wanted: dict[str, str],
    *,
    baseline: str = "synced",
) -> list[Finding]:
    """The drift of a group's own properties."""
    out: list[Finding] = []
    synced = link.synced if baseline == "synced" else wanted
    for prop in GROUP_ATTRIBUTES:
        if prop not in item or prop not in synced:
            continue
        m365, sent, want = (
            normal(prop, item[prop]),
            normal(prop, synced[prop]),
            normal(prop, wanted.get(prop)),
        )
        if m365 != sent and want == sent:
            out.append(
                Finding(Kind.ATTRIBUTE, "Group", link.resource_id, link.object_id, prop, m365, want)
            )
    return out


def member_changes(item: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(present, removed) member object ids of a group item's `members@delta`."""
    present: set[str] = set()
    gone: set[str] = set()
    for member in item.get("members@delta") or []:
        member_id = str(member.get("id"))
        if "@removed" in member:
            present.discard(member_id)
            gone.add(member_id)
        else:
            gone.discard(member_id)
            present.add(member_id)
    return present, gone


def members(
    item: dict[str, Any],
    link: Link,
    wanted: Collection[str],
    uncertain: Collection[str],
    *,
    full: bool,
    ignore: Collection[str] = (),
) -> list[Finding]:
    """Membership drift of one group. `wanted`: the M365 object ids of the directory's
    members; `uncertain`: those of members whose own changes are on their way (a new user
    joining, say), never counted; `full`: the item lists every member (a first round), else
    only the changed ones; `ignore`: objects deleted in M365 this round (their restore brings
    their memberships back)."""
    if "members@delta" not in item:
        return []
    present, gone = member_changes(item)
    skip = set(uncertain) | set(ignore)
    added = present - set(wanted) - skip
    lost = (set(wanted) - present if full else gone & set(wanted)) - skip
    return [
        *(
            Finding(Kind.MEMBER_ADDED, "Group", link.resource_id, link.object_id, m, "member", None)
            for m in sorted(added)
        ),
        *(
            Finding(
                Kind.MEMBER_REMOVED, "Group", link.resource_id, link.object_id, m, None, "member"
            )
            for m in sorted(lost)
        ),
    ]


def by_kind(findings: Iterable[Finding]) -> dict[str, int]:
    out: dict[str, int] = {}
    for finding in findings:
        out[finding.kind.value] = out.get(finding.kind.value, 0) + 1
    return out
