"""What drift detection reads from the directory: the links (what was last sent to each M365
object), what the directory wants now, and which resources have changes still waiting in
the outbox. SQLAlchemy Core on a Connection the caller gives; ids are read in chunks of 500,
so a round's cost follows what changed, not the size of the directory."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from models import (
    EventKind,
    EventStatus,
    Group,
    GroupMember,
    LinkState,
    M365Link,
    OutboxEvent,
    User,
    UserValue,
)
from scim_server import mapping as scim_mapping
from scim_server.sync import mapping

_LINKS = M365Link.__table__
CHUNK = 500
# Links the directory manages: created or bound by it, not being created right now.
MANAGED_STATES = (LinkState.SYNCED, LinkState.PENDING, LinkState.ERROR)


def chunks(ids: Iterable[str]) -> Iterator[list[str]]:
    items = list(dict.fromkeys(ids))
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


@dataclass(frozen=True)
class Link:
    resource_type: str
    resource_id: str
    object_id: str
    state: str
    synced: dict[str, Any]
    manager_id: str | None
    password_state: str | None
    password_stamp: str | None
    updated_at: datetime

    @property
    def managed(self) -> bool:
        return self.state in MANAGED_STATES


def link_of(row: Any) -> Link:
    """A row of the m365_links table as a Link."""
    return Link(
        row.resource_type,
        row.resource_id,
        str(row.object_id),
        row.state,
        dict(row.synced or {}),
        row.manager_id,
        row.password_state,
        row.password_stamp,
        row.updated_at,
    )


def links_by_object(conn: Connection, object_ids: Iterable[str]) -> dict[str, Link]:
    """M365 object id → its link, for the objects bound to a directory resource."""
    out: dict[str, Link] = {}
    for chunk in chunks(object_ids):
        for row in conn.execute(select(_LINKS).where(_LINKS.c.object_id.in_(chunk))):
            out[str(row.object_id)] = link_of(row)
    return out


def links_by_resource(conn: Connection, resource_ids: Iterable[str]) -> dict[str, Link]:
    """Directory id → its link, for the resources bound to an M365 object."""
    out: dict[str, Link] = {}
    for chunk in chunks(resource_ids):
        for row in conn.execute(
            select(_LINKS).where(
                M365Link.resource_type.in_(("User", "Group")),
                M365Link.resource_id.in_(chunk),
                M365Link.object_id.is_not(None),
            )
        ):
            out[row.resource_id] = link_of(row)
    return out


@dataclass(frozen=True)
class Wanted:
    """A directory user as the sync would send it now."""

    properties: dict[str, Any]
    manager_id: str | None  # the directory id of its manager
    user_name: str


def users_wanted(
    conn: Connection, user_ids: Iterable[str], usage_location: str | None
) -> dict[str, Wanted]:
    """The Graph properties each user maps to now (sync.mapping); deleted users are absent."""
    out: dict[str, Wanted] = {}
    for chunk in chunks(user_ids):
        users = conn.execute(select(User.__table__).where(User.id.in_(chunk))).all()
        values: dict[str, list[Any]] = defaultdict(list)
        for value in conn.execute(
            select(UserValue.__table__)
            .where(UserValue.user_id.in_([u.id for u in users]))
            .order_by(UserValue.user_id, UserValue.attr, UserValue.position)
        ):
            values[value.user_id].append(value)
        for user in users:
            doc = scim_mapping.user_to_doc(
                user, scim_mapping.UserExtras(values[user.id], [], None), ""
            )
            out[user.id] = Wanted(
                mapping.user_properties(doc, usage_location), user.manager_id, user.user_name
            )
    return out


def all_user_ids(conn: Connection) -> list[str]:
    return list(conn.scalars(select(User.id).order_by(User.id)))


def groups_wanted(conn: Connection, group_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """{"displayName", "mailNickname"} of each group as the sync sends them; deleted ones
    are absent."""
    out: dict[str, dict[str, str]] = {}
    for chunk in chunks(group_ids):
        for gid, name, nickname in conn.execute(
            select(Group.id, Group.display_name, Group.mail_nickname).where(Group.id.in_(chunk))
        ):
            out[gid] = {
                "displayName": name,
                "mailNickname": nickname or mapping.group_mail_nickname(name, gid),
            }
    return out


def all_group_ids(conn: Connection) -> list[str]:
    return list(conn.scalars(select(Group.id).order_by(Group.id)))


def members(conn: Connection, group_ids: Iterable[str]) -> dict[str, list[str]]:
    """Directory group id → the directory ids of its members."""
    out: dict[str, list[str]] = defaultdict(list)
    for chunk in chunks(group_ids):
        for gid, mid in conn.execute(
            select(GroupMember.group_id, GroupMember.member_id).where(
                GroupMember.group_id.in_(chunk)
            )
        ):
            out[gid].append(mid)
    return out


@dataclass(frozen=True)
class Pending:
    """The resources with changes still waiting in the outbox (or being delivered)."""

    resources: frozenset[tuple[str, str]]
    passwords: frozenset[str]  # users with a password on its way

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.resources


def pending(conn: Connection, keys: Sequence[tuple[str, str]]) -> Pending:
    found: set[tuple[str, str]] = set()
    passwords: set[str] = set()
    by_type: dict[str, list[str]] = defaultdict(list)
    for rtype, rid in keys:
        by_type[rtype].append(rid)
    for rtype, ids in by_type.items():
        for chunk in chunks(ids):
            for rid, event in conn.execute(
                select(OutboxEvent.resource_id, OutboxEvent.event).where(
                    OutboxEvent.resource_type == rtype,
                    OutboxEvent.resource_id.in_(chunk),
                    OutboxEvent.status == EventStatus.PENDING,
                )
            ):
                found.add((rtype, rid))
                if event == EventKind.PASSWORD:
                    passwords.add(rid)
    return Pending(frozenset(found), frozenset(passwords))
