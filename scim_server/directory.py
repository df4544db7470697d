"""Use cases of the directory. Each write is one transaction holding the change and its
outbox event, committed here and nowhere else. Views call these functions and serialise."""

from __future__ import annotations

import re
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy import (
    Connection,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from models import Group, GroupMember, M365Link, PasswordState, User, UserValue, utcnow
from scim_server import mapping, outbox, passwords, sealing
from scim_server.db import begin, db
from scim_server.errors import Conflict, InternalError, NotFound, PreconditionFailed
from scim_server.scim import projection as proj
from scim_server.scim.filter_parser import MAX_FILTER_LENGTH, parse_filter
from scim_server.scim.filter_sql import sort_column, to_sql
from scim_server.scim.patch import MemberChange, apply_patch
from scim_server.scim.resource import canonicalize
from scim_server.scim.schema import (
    ENTERPRISE,
    GROUP,
    GROUP_TYPE,
    M365_GROUP,
    M365_USER,
    USER,
    USER_TYPE,
)

_hasher = PasswordHasher()
# The server's own reads: the sync state (returned to clients only on request) included.
FULL_USER = proj.everything(USER_TYPE)
FULL_GROUP = proj.everything(GROUP_TYPE)
# The M365 extensions' read-only attributes: the sync worker's, never written by a request.
_SYNC_STATE = tuple(a.name for a in M365_USER.attributes if a.mutability == "readOnly")
_GROUP_SYNC_STATE = tuple(a.name for a in M365_GROUP.attributes if a.mutability == "readOnly")
CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def check_if_match(if_match: str | None, version: int) -> None:
    """RFC 7644 §3.14: a stale If-Match is 412 Precondition Failed."""
    if not if_match or mapping.etag_matches(if_match, version):
        return
    raise PreconditionFailed(
        f"The resource has changed: its version is now {mapping.etag(version)}."
    )


@dataclass(frozen=True)
class ListQuery:
    filter: str | None
    sort_by: str | None
    descending: bool
    start_index: int
    count: int


# ---------------------------------------------------------------- reading
#
# Fixed statements, built once: SQLAlchemy caches their compiled form. IN lists are
# expanding parameters (`ids`), so one statement serves every length of list.

_users = cast(Table, User.__table__)
_values = cast(Table, UserValue.__table__)
_groups = cast(Table, Group.__table__)
_members = cast(Table, GroupMember.__table__)
_m365 = cast(Table, M365Link.__table__)
USER_COLUMNS = tuple(c.name for c in _users.columns)
# Rows are read into namedtuples: rendering reads dozens of attributes of each, which a
# namedtuple answers at C speed and a SQLAlchemy Row does not.
UserRow = namedtuple("UserRow", USER_COLUMNS)  # type: ignore[misc]
_VALUE_COLUMNS = tuple(c for c in _values.columns if c.name != "id")
ValueRow = namedtuple("ValueRow", [c.name for c in _VALUE_COLUMNS])  # type: ignore[misc]
# What a user's document shows of its m365_links row (mapping.sync_state).
_LINK_COLUMNS = (
    "object_id",
    "state",
    "last_synced_at",
    "last_error",
    "password_state",
    "drift_found_at",
)
LinkRow = namedtuple("LinkRow", _LINK_COLUMNS)  # type: ignore[misc]
_N_USER = len(USER_COLUMNS)
_USER_LINK = _m365.alias("user_link")
_MANAGER = _users.alias("manager")


def _user_read(owner: Any, *, link: bool) -> Any:
    """One statement for everything a user's document shows: the user `owner` (an id)
    names; its manager's names (LEFT OUTER JOIN); its user_values and its groups (a row for
    each, from one UNION ALL, LEFT OUTER JOINed: a single row when it has neither); with
    `link`, its m365_links row (at most one). Read with _joined_user."""
    value_columns = [c for c in _values.columns if c.name != "id"]
    items = union_all(
        select(
            literal(0).label("kind"),
            *value_columns,
            null().label("group_id"),
            null().label("group_name"),
            null().label("group_sort"),
        ).where(_values.c.user_id == owner),
        select(
            literal(1),
            _members.c.member_id,
            *(null() for _ in value_columns[1:]),
            _groups.c.id,
            _groups.c.display_name,
            _groups.c.display_name_ci,
        )
        .select_from(_members.join(_groups, _groups.c.id == _members.c.group_id))
        .where(_members.c.member_id == owner),
    ).subquery("items")
    joined = _users.outerjoin(_MANAGER, _MANAGER.c.id == _users.c.manager_id).outerjoin(
        items, items.c.user_id == _users.c.id
    )
    columns: list[Any] = [
        _users,
        _MANAGER.c.display_name.label("manager_display_name"),
        _MANAGER.c.user_name.label("manager_user_name"),
        *(c.label(f"item_{c.name}") for c in items.c),
    ]
    if link:
        joined = joined.outerjoin(
            _USER_LINK,
            (_USER_LINK.c.resource_type == "User") & (_USER_LINK.c.resource_id == _users.c.id),
        )
        # The link's key (never null in a link) tells a user without one.
        columns.append(_USER_LINK.c.resource_id.label("link_key"))
        columns.extend(_USER_LINK.c[c].label(f"link_{c}") for c in _LINK_COLUMNS)
    return (
        select(*columns)
        .select_from(joined)
        .where(_users.c.id == owner)
        .order_by(items.c.kind, items.c.attr, items.c.position, items.c.group_sort)
    )


_NAMED = select(_users.c.id).where(_users.c.user_name_ci == bindparam("name")).scalar_subquery()
_USER = _user_read(bindparam("id"), link=False)
_USER_SYNCED = _user_read(bindparam("id"), link=True)  # with its sync state
# A write's snapshot holds the row first (FOR UPDATE on PostgreSQL; SQLite's writer holds
# the database), then reads it: a statement that waited for the lock would see the row as
# it is now but its values and groups as they were when the statement began.
_LOCK_USER = select(_users.c.id).where(_users.c.id == bindparam("id")).with_for_update()
# userName is unique (user_name_ci's index): one user at most.
_USER_NAMED = _user_read(_NAMED, link=False)
_USER_NAMED_SYNCED = _user_read(_NAMED, link=True)
_KIND_AT = _N_USER + 2  # where a joined row's item columns begin, after the manager's
_VALUE_AT = _KIND_AT + 1
_GROUP_AT = _VALUE_AT + len(ValueRow._fields)
_LINK_AT = _GROUP_AT + 3


@dataclass(frozen=True)
class _Joined:
    """A user as _user_read's statement returns it."""

    row: Any  # a UserRow
    extras: mapping.UserExtras


def _joined_user(rows: Sequence[Any], *, link: bool) -> _Joined | None:
    if not rows:
        return None
    first = rows[0]
    values, groups = [], []
    for row in rows:
        kind = row[_KIND_AT]
        if kind == 0:
            values.append(ValueRow._make(row[_VALUE_AT:_GROUP_AT]))
        elif kind == 1:
            groups.append((row[_GROUP_AT], row[_GROUP_AT + 1]))
    found = LinkRow._make(first[_LINK_AT + 1 :]) if link and first[_LINK_AT] is not None else None
    manager = first[_N_USER] or first[_N_USER + 1]
    return _Joined(
        UserRow._make(first[:_N_USER]), mapping.UserExtras(values, groups, manager, found)
    )


def _render_joined(user: _Joined, base_url: str, projection: proj.Projection) -> dict[str, Any]:
    extras = user.extras
    if user.row.manager_id is None or not projection.wants(ENTERPRISE, "manager"):
        extras = mapping.UserExtras(extras.values, extras.groups, None, extras.link)
    doc = mapping.user_to_doc(user.row, extras, base_url)
    return proj.apply(doc, USER_TYPE, projection)


_VALUES_OF = (
    select(*_VALUE_COLUMNS)
    .where(_values.c.user_id.in_(bindparam("ids", expanding=True)))
    .order_by(_values.c.user_id, _values.c.attr, _values.c.position)
)
_GROUPS = select(_members.c.member_id, _groups.c.id, _groups.c.display_name).select_from(
    _members.join(_groups, _groups.c.id == _members.c.group_id)
)
_GROUPS_OF = _GROUPS.where(_members.c.member_id.in_(bindparam("ids", expanding=True))).order_by(
    _groups.c.display_name_ci
)
_MANAGERS = select(_users.c.id, _users.c.display_name, _users.c.user_name).where(
    _users.c.id.in_(bindparam("ids", expanding=True))
)
_LINKS_OF = select(_m365.c.resource_id, *(_m365.c[c] for c in _LINK_COLUMNS)).where(
    _m365.c.resource_type == bindparam("rtype"),
    _m365.c.resource_id.in_(bindparam("ids", expanding=True)),
)


def _user_docs(
    conn: Connection, users: Sequence[Any], base_url: str, projection: proj.Projection
) -> list[dict[str, Any]]:
    """Render a page of users (UserRows) with one query per related table, never one per
    user, in the transaction of `conn`."""
    ids = [u.id for u in users]
    values: dict[str, list[Any]] = {i: [] for i in ids}
    groups: dict[str, list[tuple[str, str]]] = {i: [] for i in ids}
    want_groups = projection.wants(USER, "groups")
    for chunk in _chunks(ids):
        params = {"ids": chunk}
        for row in conn.execute(_VALUES_OF, params):
            values[row[0]].append(ValueRow._make(row))
        if want_groups:
            for member_id, gid, gname in conn.execute(_GROUPS_OF, params):
                groups[member_id].append((gid, gname))
    links = _links(conn, "User", ids) if projection.wants_any(M365_USER, _SYNC_STATE) else {}
    manager_ids = sorted({u.manager_id for u in users if u.manager_id})
    managers: dict[str, str] = {}
    if manager_ids and projection.wants(ENTERPRISE, "manager"):
        for chunk in _chunks(manager_ids):
            for mid, name, uname in conn.execute(_MANAGERS, {"ids": chunk}):
                managers[mid] = name or uname
    return [
        proj.apply(
            mapping.user_to_doc(
                u,
                mapping.UserExtras(
                    values[u.id], groups[u.id], managers.get(u.manager_id or ""), links.get(u.id)
                ),
                base_url,
            ),
            USER_TYPE,
            projection,
        )
        for u in users
    ]


def _links(conn: Connection, resource_type: str, ids: Sequence[str]) -> dict[str, Any]:
    """The m365_links rows of these resources: their Microsoft 365 sync state."""
    out: dict[str, Any] = {}
    for chunk in _chunks(ids):
        for row in conn.execute(_LINKS_OF, {"rtype": resource_type, "ids": chunk}):
            out[row[0]] = LinkRow._make(row[1:])
    return out


_MEMBER_GROUP = _groups.alias("member_group")
_MEMBERS_OF = (
    select(
        _members.c.group_id,
        _members.c.member_id,
        _members.c.member_type,
        # The member's current displayName; else what the client gave; else its userName.
        func.coalesce(
            _users.c.display_name,
            _MEMBER_GROUP.c.display_name,
            _members.c.display,
            _users.c.user_name,
        ),
    )
    .select_from(
        _members.outerjoin(_users, _users.c.id == _members.c.member_id).outerjoin(
            _MEMBER_GROUP, _MEMBER_GROUP.c.id == _members.c.member_id
        )
    )
    .where(_members.c.group_id.in_(bindparam("ids", expanding=True)))
    .order_by(_members.c.group_id, _members.c.member_id)
)
_GROUP_LINKS = select(_m365).where(
    _m365.c.resource_type == "Group", _m365.c.resource_id.in_(bindparam("ids", expanding=True))
)


def _members_of(
    conn: Connection, group_ids: Sequence[str]
) -> dict[str, list[tuple[str, str, str | None]]]:
    out: dict[str, list[tuple[str, str, str | None]]] = {g: [] for g in group_ids}
    for chunk in _chunks(group_ids):
        for gid, mid, mtype, display in conn.execute(_MEMBERS_OF, {"ids": chunk}):
            out[gid].append((mid, mtype, display))
    return out


def _group_docs(
    conn: Connection, groups: Sequence[Any], base_url: str, projection: proj.Projection
) -> list[dict[str, Any]]:
    ids = [g.id for g in groups]
    members = _members_of(conn, ids) if projection.wants(GROUP, "members") else {}
    links: dict[str, Any] = {}
    if groups and projection.wants_any(M365_GROUP, _GROUP_SYNC_STATE):
        for chunk in _chunks(ids):
            links.update(
                (row.resource_id, row) for row in conn.execute(_GROUP_LINKS, {"ids": chunk})
            )
    return [
        proj.apply(
            mapping.group_to_doc(g, members.get(g.id), base_url, links.get(g.id)),
            GROUP_TYPE,
            projection,
        )
        for g in groups
    ]


def get_user(
    user_id: str, base_url: str, projection: proj.Projection
) -> tuple[dict[str, Any], int]:
    with begin(write=False) as conn:
        found = read_user(conn, user_id, base_url, projection)
    if found is None:
        raise NotFound(f"User {user_id} not found.")
    return found


def read_user(
    conn: Connection, user_id: str, base_url: str, projection: proj.Projection
) -> tuple[dict[str, Any], int] | None:
    """`get_user` in the caller's transaction (the sync worker's); None if there is no such
    user."""
    synced = projection.wants_any(M365_USER, _SYNC_STATE)
    rows = conn.execute(_USER_SYNCED if synced else _USER, {"id": user_id}).all()
    user = _joined_user(rows, link=synced)
    if user is None:
        return None
    return _render_joined(user, base_url, projection), user.row.version


_GROUP_BY_ID = select(_groups).where(_groups.c.id == bindparam("id"))
_GROUP_BY_ID_LOCKED = _GROUP_BY_ID.with_for_update()


def get_group(
    group_id: str, base_url: str, projection: proj.Projection
) -> tuple[dict[str, Any], int]:
    with begin(write=False) as conn:
        group = _load_group(conn, group_id)
        return _group_docs(conn, [group], base_url, projection)[0], group.version


def _load_group(conn: Connection, group_id: str, *, lock: bool = False) -> Any:
    # lock: a read-modify-write holds the row (SELECT … FOR UPDATE on PostgreSQL; SQLite's
    # write transactions already hold the database lock).
    group = conn.execute(_GROUP_BY_ID_LOCKED if lock else _GROUP_BY_ID, {"id": group_id}).first()
    if group is None:
        raise NotFound(f"Group {group_id} not found.")
    return group


# `userName eq "…"`, the lookup every IdP makes before it provisions a user, as sent: a
# plain JSON string (no escapes, no control characters), nothing else in the filter.
_USER_NAME_EQ = re.compile(r'username eq "([^"\\\x00-\x1f]*)"', re.IGNORECASE)


def list_resources(
    resource: str, query: ListQuery, base_url: str, projection: proj.Projection
) -> tuple[int, list[dict[str, Any]]]:
    """Filter, count and page in the database: nothing loads a whole table."""
    if (
        resource == "User"
        and query.filter
        and len(query.filter) <= MAX_FILTER_LENGTH  # longer: the parser's 400, as any filter
        and not query.sort_by
        and query.count > 0
    ):
        match = _USER_NAME_EQ.fullmatch(query.filter)
        if match:
            return _list_by_user_name(match.group(1), query, base_url, projection)
    model: type[User] | type[Group] = User if resource == "User" else Group
    rtype = USER_TYPE if resource == "User" else GROUP_TYPE
    where = to_sql(parse_filter(query.filter), rtype) if query.filter else None
    count_q = select(func.count()).select_from(model.__table__)
    if where is not None:
        count_q = count_q.where(where)
    with begin(write=False) as conn:
        if query.count == 0:
            return int(conn.execute(count_q).scalar() or 0), []
        page = select(model.__table__)
        if where is not None:
            page = page.where(where)
        if query.sort_by:
            column = sort_column(rtype, query.sort_by)
            # RFC 7644 §3.4.2.3: resources without a value sort last ascending, first
            # descending.
            page = page.order_by(
                column.desc().nulls_first() if query.descending else column.asc().nulls_last()
            )
        # RFC 7644 §3.4.2.4: a stable order across pages; the primary key breaks ties.
        page = page.order_by(model.id).offset(query.start_index - 1).limit(query.count)
        found = conn.execute(page)
        rows: Sequence[Any] = (
            [UserRow._make(r) for r in found] if resource == "User" else found.all()
        )
        if rows and len(rows) < query.count:
            # A partial page is the last one: the total follows without counting (the common
            # case of an IdP's `userName eq` lookup).
            total = query.start_index - 1 + len(rows)
        else:
            total = int(conn.execute(count_q).scalar() or 0)
        if resource == "User":
            return total, _user_docs(conn, rows, base_url, projection)
        return total, _group_docs(conn, rows, base_url, projection)


def _list_by_user_name(
    user_name: str, query: ListQuery, base_url: str, projection: proj.Projection
) -> tuple[int, list[dict[str, Any]]]:
    """`userName eq` as filter_sql translates it (userName is caseExact=false: the indexed
    lower-cased copy equals the lower-cased value), without parsing and compiling it."""
    synced = projection.wants_any(M365_USER, _SYNC_STATE)
    with begin(write=False) as conn:
        stmt = _USER_NAMED_SYNCED if synced else _USER_NAMED
        rows = conn.execute(stmt, {"name": user_name.lower()}).all()
    # The unique index on user_name_ci: one user at most, so no count.
    user = _joined_user(rows, link=synced)
    found = [user] if user is not None else []
    page = found[query.start_index - 1 : query.start_index - 1 + query.count]
    return len(found), [_render_joined(u, base_url, projection) for u in page]


# ---------------------------------------------------------------- users

_NAME_TAKEN = select(_users.c.id).where(
    _users.c.user_name_ci == bindparam("name"), _users.c.id != bindparam("id")
)


def _ensure_unique_user_name(conn: Connection, user_name: str, user_id: str) -> None:
    taken = conn.execute(_NAME_TAKEN, {"name": user_name.lower(), "id": user_id}).first()
    if taken is not None:
        raise Conflict(f"A user with userName {user_name!r} already exists.")


def _value_rows(user_id: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [dict(r, user_id=user_id) for r in mapping.doc_to_user_values(doc)]
    for row in rows:
        attr = row["attr"]

        def label(column: str, attr: str = attr) -> str:
            return f"{attr}.{mapping.VALUE_LABELS.get(column, column)}"

        mapping.check_lengths(UserValue.__table__, row, label)
    return rows


def _check_user_columns(columns: dict[str, Any]) -> None:
    mapping.check_lengths(User.__table__, columns, lambda c: mapping.USER_LABELS.get(c, c))


def _check_group_columns(doc: dict[str, Any]) -> None:
    labels = {"display_name": "displayName", "external_id": "externalId"}
    row = {"display_name": doc["displayName"], "external_id": doc.get("externalId")}
    mapping.check_lengths(Group.__table__, row, labels.__getitem__)
    _check_members((m["value"], m.get("display")) for m in doc.get("members") or ())


def _check_members(members: Iterable[tuple[str, str | None]]) -> None:
    # Only `display` is checked: an id no resource has (whatever its length) is dropped as
    # unknown before anything is stored.
    for _ident, display in members:
        mapping.check_lengths(
            GroupMember.__table__, {"display": display}, lambda _c: "members.display"
        )


@contextmanager
def _unique(conflict: str) -> Iterator[None]:
    """A unique index refusing a statement or the commit is 409 uniqueness (a concurrent
    writer may win the race that a pre-check cannot close)."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(conflict) from exc


def _render_written_user(
    user: Any, rows: list[dict[str, Any]], groups: list[tuple[str, str]], base_url: str
) -> dict[str, Any]:
    """The response for a write, from what was written: no second read of the database."""
    values = [SimpleNamespace(**r) for r in rows]
    return mapping.user_to_doc(user, mapping.UserExtras(values, groups, None), base_url)


_INSERT_USER = insert(_users)
_INSERT_VALUES = insert(_values)
_DELETE_VALUES = delete(_values).where(_values.c.user_id == bindparam("user_id"))
# The SET clause is the columns the parameters name besides these two (a Core UPDATE
# without .values() sets what it is given): one cached statement per set of columns.
_UPDATE_USER = update(_users).where(
    _users.c.id == bindparam("b_id"), _users.c.version == bindparam("b_version")
)


def _insert_values(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT user_values rows in one executemany. Rows may differ in keys (an address row
    has columns an email row has not): every row gets every column, None where it has none."""
    names = list(dict.fromkeys(n for row in rows for n in row))
    conn.execute(_INSERT_VALUES, [{n: row.get(n) for n in names} for row in rows])


def new_user_id() -> str:
    return str(uuid.uuid4())


def create_user(
    body: dict[str, Any], base_url: str, *, user_id: str | None = None
) -> tuple[dict[str, Any], int]:
    doc = canonicalize(body, USER_TYPE)
    # A user created without `active` is enabled, in Microsoft 365 as in the directory, so
    # the directory says so (Okta's SPEC test reads it back). A PUT or PATCH that leaves it
    # out clears it, as RFC 7644 §3.5.1 and §3.5.2.2 say; M365 then keeps the account enabled.
    if doc.get("active") is None:
        doc["active"] = True
    password = doc.pop("password", None)
    sealed = _sealed_password(password)
    now = utcnow()
    columns = mapping.doc_to_user_columns(doc)
    _check_user_columns(columns)
    columns.update(id=user_id or new_user_id(), created=now, last_modified=now, version=1)
    columns["password_hash"] = hash_password(password) if password is not None else None
    columns["password_temporary"] = False
    rows = _value_rows(columns["id"], doc)
    conflict = f"A user with userName {doc['userName']!r} already exists."
    # The unique index on user_name_ci decides uniqueness, race-free.
    with _unique(conflict), begin(write=True) as conn:
        conn.execute(_INSERT_USER, columns)
        if rows:
            _insert_values(conn, rows)
        outbox.record(conn, "User", columns["id"], "created", {"version": 1})
        if sealed is not None:
            outbox.queue_password(conn, columns["id"], {"sealed": sealed})
    return _render_written_user(SimpleNamespace(**columns), rows, [], base_url), 1


@dataclass(frozen=True)
class _Snapshot:
    """What a user update reads before it takes the write lock."""

    columns: dict[str, Any]  # every column of the row, by name
    doc: dict[str, Any]  # the current document
    groups: list[tuple[str, str]]


def _snapshot(
    conn: Connection, user_id: str, if_match: str | None, base_url: str, *, lock: bool = False
) -> _Snapshot:
    # lock: FOR UPDATE holds the row on PostgreSQL; SQLite has no such clause, and a writing
    # transaction there already holds the database.
    if lock:
        conn.execute(_LOCK_USER, {"id": user_id})
    rows = conn.execute(_USER_SYNCED, {"id": user_id}).all()
    user = _joined_user(rows, link=True)
    if user is None:
        raise NotFound(f"User {user_id} not found.")
    check_if_match(if_match, user.row.version)
    doc = _render_joined(user, base_url, FULL_USER)
    return _Snapshot(user.row._asdict(), doc, user.extras.groups)


@dataclass(frozen=True)
class _UserWrite:
    """A user update computed from a snapshot, ready to be written."""

    snap: _Snapshot
    user_name: str
    changes: dict[str, Any]  # the columns that change, version and lastModified included
    rows: list[dict[str, Any]]  # the user_values rows of the new document
    rewrite_values: bool  # the multi-valued attributes changed
    password_changed: bool
    sealed_password: str | None  # the new password, sealed for the outbox (sealing.py)
    force_change: bool = False  # a temporary password: M365 asks for a new one at sign-in
    # More to do in the same transaction (spending an activation link): raises to undo all.
    also: Callable[[Connection], None] | None = None

    @property
    def changes_nothing(self) -> bool:
        """A PUT or PATCH that leaves the user as it was (RFC 7644 §3.5.2: a PATCH "that
        results in no change" may answer success): nothing is written, the version stays."""
        return not self.changes and not self.rewrite_values and not self.password_changed


def _is_current_password(columns: dict[str, Any], password: str) -> bool:
    """Whether `password` is the user's own (not temporary) password already: an identity
    provider that sends the password with every update (Okta's Sync Password) changes
    nothing by sending it again."""
    stored = columns["password_hash"]
    if stored is None or columns["password_temporary"]:
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _prepare_user_write(
    snap: _Snapshot,
    doc: dict[str, Any],
    password: str | None,
    *,
    force_change: bool = False,
    also: Callable[[Connection], None] | None = None,
) -> _UserWrite:
    """Everything a user update needs that is not the database (the password hash is slow):
    computed before the write lock is taken."""
    columns = mapping.doc_to_user_columns(doc)
    _check_user_columns(columns)
    rows = _value_rows(snap.columns["id"], doc)
    rewrite_values = rows != _value_rows(snap.columns["id"], snap.doc)
    changes = {c: v for c, v in columns.items() if snap.columns[c] != v}
    if (
        password is not None
        and not force_change
        and also is None
        and _is_current_password(snap.columns, password)
    ):
        password = None
    sealed = _sealed_password(password)
    if password is not None:
        changes["password_hash"] = hash_password(password)
        changes["password_temporary"] = force_change
    if changes or rewrite_values or password is not None:
        changes.update(version=snap.columns["version"] + 1, last_modified=utcnow())
    return _UserWrite(
        snap,
        doc["userName"],
        changes,
        rows,
        rewrite_values,
        password is not None,
        sealed,
        force_change,
        also,
    )


def _sealed_password(password: str | None) -> str | None:
    """Check a new password against Microsoft 365's policy (a 400 now, not a dead letter
    later) and seal it for its trip through the outbox to M365."""
    if password is None:
        return None
    passwords.check(password)
    return sealing.seal(current_app.instance_path, password)


def _save_user(conn: Connection, write: _UserWrite, event: str) -> bool:
    """Write a user's new document if the row is still at the snapshot's version.

    Optimistic: the update names the version it read, so a concurrent writer makes it match
    no row and the caller starts again from a fresh snapshot. Returns False in that case.
    """
    snap, changes = write.snap, write.changes
    user_id, version = snap.columns["id"], snap.columns["version"]
    if "user_name_ci" in changes:
        _ensure_unique_user_name(conn, write.user_name, user_id)
    updated = conn.execute(_UPDATE_USER, {**changes, "b_id": user_id, "b_version": version})
    if updated.rowcount != 1:
        return False
    if write.rewrite_values:
        conn.execute(_DELETE_VALUES, {"user_id": user_id})
        if write.rows:
            _insert_values(conn, write.rows)
    outbox.record(
        conn,
        "User",
        user_id,
        event,
        {"version": version + 1, "password_changed": write.password_changed},
    )
    if write.sealed_password is not None:
        outbox.queue_password(
            conn, user_id, {"sealed": write.sealed_password, "force_change": write.force_change}
        )
    if write.also is not None:
        write.also(conn)
    return True


def _written(write: _UserWrite, base_url: str) -> tuple[dict[str, Any], int]:
    """The response to a saved update, rendered once the write lock is released. The M365
    sync state (read-only, the worker's) is the snapshot's, as a GET would show it."""
    user = SimpleNamespace(**{**write.snap.columns, **write.changes})
    doc = _render_written_user(user, write.rows, write.snap.groups, base_url)
    before = write.snap.doc.get(M365_USER.id) or {}
    state = {k: before[k] for k in _SYNC_STATE if k in before}
    if state and write.sealed_password is not None:  # as outbox.queue_password marked it
        state["passwordState"] = PasswordState.PENDING.value
    if state:
        extension = doc.setdefault(M365_USER.id, {"schemas": [M365_USER.id]})
        extension.update(state)
        if M365_USER.id not in doc["schemas"]:
            doc["schemas"].append(M365_USER.id)
    return doc, int(write.changes["version"])


def _update_user(
    user_id: str,
    if_match: str | None,
    base_url: str,
    change: Callable[[_Snapshot], _UserWrite],
    event: str,
) -> tuple[dict[str, Any], int]:
    """Read, change, write. First optimistically: the snapshot is read without the write lock
    and the change computed outside it; if another writer got there first, again holding the
    lock from the read on, which cannot lose. All on one pooled connection."""
    with db.engine.connect() as conn:
        with begin(write=False, on=conn):
            snap = _snapshot(conn, user_id, if_match, base_url)
        write = change(snap)
        if write.changes_nothing:
            return snap.doc, int(snap.columns["version"])
        # A miss (another writer's version) wrote nothing: its commit is an empty one.
        with _unique(_user_name_taken(write)), begin(write=True, on=conn):
            saved = _save_user(conn, write, event)
        if not saved:
            with _unique(_user_name_taken(write)), begin(write=True, on=conn):
                snap = _snapshot(conn, user_id, if_match, base_url, lock=True)
                write = change(snap)
                if write.changes_nothing:
                    return snap.doc, int(snap.columns["version"])
                saved = _save_user(conn, write, event)
    if not saved:  # the locked attempt holds the row: this would be a bug
        raise InternalError("A locked update found its row changed.")
    return _written(write, base_url)


def _user_name_taken(write: _UserWrite) -> str:
    return f"A user with userName {write.user_name!r} already exists."


def set_password(
    user_id: str,
    password: str,
    *,
    force_change: bool,
    also: Callable[[Connection], None] | None = None,
    unless: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Set a user's password outside SCIM (a temporary one from `scim-server users
    set-temp-password`, or the user's own through the portal): hashed here, and on its way to
    M365, sealed, through the outbox. Returns the new version.

    `unless` sees the user's row before the change and raises to refuse it; `also` runs in
    the write's transaction and raises to undo it."""

    def change(snap: _Snapshot) -> _UserWrite:
        if unless is not None:
            unless(snap.columns)
        return _prepare_user_write(snap, snap.doc, password, force_change=force_change, also=also)

    return _update_user(user_id, None, "", change, "password_set")[1]


_FIND_USER = select(_users.c.id).where(
    (_users.c.id == bindparam("id")) | (_users.c.user_name_ci == bindparam("name"))
)


def find_user_id(ident: str) -> str | None:
    """A user's id, from its id or its userName (in any case)."""
    with begin(write=False) as conn:
        found: str | None = conn.execute(_FIND_USER, {"id": ident, "name": ident.lower()}).scalar()
    return found


def replace_user(
    user_id: str, body: dict[str, Any], if_match: str | None, base_url: str
) -> tuple[dict[str, Any], int]:
    doc = canonicalize(body, USER_TYPE)
    password = doc.pop("password", None)

    def change(snap: _Snapshot) -> _UserWrite:
        return _prepare_user_write(snap, doc, password)

    return _update_user(user_id, if_match, base_url, change, "replaced")


def patch_user(
    user_id: str, operations: list[dict[str, Any]], if_match: str | None, base_url: str
) -> tuple[dict[str, Any], int]:
    def change(snap: _Snapshot) -> _UserWrite:
        result = apply_patch(snap.doc, operations, USER_TYPE)
        return _prepare_user_write(snap, result.doc, result.password)

    return _update_user(user_id, if_match, base_url, change, "patched")


_USER_FOR_DELETE = (
    select(_users.c.version, _users.c.user_name)
    .where(_users.c.id == bindparam("id"))
    .with_for_update()
)
_DELETE_USER_MEMBERSHIPS = delete(_members).where(_members.c.member_id == bindparam("id"))
_DELETE_USER_VALUES = delete(_values).where(_values.c.user_id == bindparam("id"))
_DELETE_USER = delete(_users).where(_users.c.id == bindparam("id"))


def delete_user(user_id: str, if_match: str | None) -> None:
    params = {"id": user_id}
    with begin(write=True) as conn:
        user = conn.execute(_USER_FOR_DELETE, params).first()
        if user is None:
            raise NotFound(f"User {user_id} not found.")
        check_if_match(if_match, user.version)
        conn.execute(_DELETE_USER_MEMBERSHIPS, params)
        conn.execute(_DELETE_USER_VALUES, params)
        conn.execute(_DELETE_USER, params)
        outbox.record(conn, "User", user_id, "deleted", {"userName": user.user_name})


# ---------------------------------------------------------------- groups

_GROUP_NAME_TAKEN = select(_groups.c.id).where(_groups.c.display_name_ci == bindparam("name"))
_GROUP_NAME_TAKEN_BY_OTHER = _GROUP_NAME_TAKEN.where(_groups.c.id != bindparam("id"))
_USERS_AMONG = select(_users.c.id).where(_users.c.id.in_(bindparam("ids", expanding=True)))
_GROUPS_AMONG = select(_groups.c.id).where(_groups.c.id.in_(bindparam("ids", expanding=True)))
_MEMBERS = select(_members.c.member_id, _members.c.display).where(
    _members.c.group_id == bindparam("group_id")
)
_PRESENT = select(_members.c.member_id).where(
    _members.c.group_id == bindparam("group_id"),
    _members.c.member_id.in_(bindparam("ids", expanding=True)),
)
_DELETE_MEMBERS = delete(_members).where(_members.c.group_id == bindparam("group_id"))
_DELETE_SOME_MEMBERS = delete(_members).where(
    _members.c.group_id == bindparam("group_id"),
    _members.c.member_id.in_(bindparam("ids", expanding=True)),
)
_INSERT_MEMBERS = insert(_members)
_INSERT_GROUP = insert(_groups)
# One UPDATE statement, so concurrent member adds never lose a version bump.
_UPDATE_GROUP = (
    update(_groups).where(_groups.c.id == bindparam("b_id")).values(version=_groups.c.version + 1)
)
_DELETE_GROUP_MEMBERS = delete(_members).where(
    (_members.c.group_id == bindparam("id")) | (_members.c.member_id == bindparam("id"))
)
_DELETE_GROUP = delete(_groups).where(_groups.c.id == bindparam("id"))


def _ensure_unique_group_name(conn: Connection, name: str, group_id: str | None) -> None:
    if group_id:
        taken = conn.execute(_GROUP_NAME_TAKEN_BY_OTHER, {"name": name.lower(), "id": group_id})
    else:
        taken = conn.execute(_GROUP_NAME_TAKEN, {"name": name.lower()})
    if taken.first() is not None:
        raise Conflict(f"A group named {name!r} already exists.")


def _existing_members(conn: Connection, ids: Sequence[str], group_id: str) -> dict[str, str]:
    """Member id → "User" | "Group" for the ids that exist; unknown ids are dropped
    (adding a member that does not exist is a no-op, as Entra and Okta expect)."""
    found: dict[str, str] = {}
    wanted = [i for i in dict.fromkeys(ids) if i != group_id]
    for chunk in _chunks(wanted):
        found.update({i: "User" for i in conn.execute(_USERS_AMONG, {"ids": chunk}).scalars()})
        found.update({i: "Group" for i in conn.execute(_GROUPS_AMONG, {"ids": chunk}).scalars()})
    return found


def _apply_members(conn: Connection, group_id: str, change: MemberChange) -> dict[str, Any] | None:
    """Apply a membership change with set-based SQL. Returns what it did (the outbox
    event's members), or None when it changed nothing: a remove of a member who is not
    there, an add of one who is, a replace with the same members."""
    existing = _existing_members(conn, list(change.add), group_id)
    if change.replace_all:
        current = {mid: display for mid, display in conn.execute(_MEMBERS, {"group_id": group_id})}
        if current == {i: change.display.get(i) for i in existing}:
            return None
        conn.execute(_DELETE_MEMBERS, {"group_id": group_id})
        to_add, removed = list(existing), []
    else:
        removed = sorted(_present(conn, group_id, sorted(change.remove)))
        for chunk in _chunks(removed):
            conn.execute(_DELETE_SOME_MEMBERS, {"group_id": group_id, "ids": chunk})
        present = _present(conn, group_id, list(existing))
        to_add = [i for i in existing if i not in present]
        if not to_add and not removed:
            return None
    if to_add:
        conn.execute(
            _INSERT_MEMBERS,
            [
                {
                    "group_id": group_id,
                    "member_id": i,
                    "member_type": existing[i],
                    "display": change.display.get(i),
                }
                for i in to_add
            ],
        )
    return {"replace_all": change.replace_all, "added": to_add, "removed": removed}


def _present(conn: Connection, group_id: str, ids: Sequence[str]) -> set[str]:
    """Which of these ids are members of the group: an indexed lookup of those ids only."""
    present: set[str] = set()
    for chunk in _chunks(ids):
        present.update(conn.execute(_PRESENT, {"group_id": group_id, "ids": chunk}).scalars())
    return present


def create_group(body: dict[str, Any], base_url: str) -> tuple[dict[str, Any], int]:
    doc = canonicalize(body, GROUP_TYPE)
    _check_group_columns(doc)
    now = utcnow()
    group_id = str(uuid.uuid4())
    with (
        _unique(f"A group named {doc['displayName']!r} already exists."),
        begin(write=True) as conn,
    ):
        _ensure_unique_group_name(conn, doc["displayName"], None)
        conn.execute(
            _INSERT_GROUP,
            {
                "id": group_id,
                "display_name": doc["displayName"],
                "display_name_ci": doc["displayName"].lower(),
                "external_id": doc.get("externalId"),
                "mail_nickname": mapping.group_mail_nickname(doc),
                "created": now,
                "last_modified": now,
                "version": 1,
            },
        )
        members = _apply_members(conn, group_id, _member_change(doc)) or {
            "replace_all": True,
            "added": [],
            "removed": [],
        }
        outbox.record(conn, "Group", group_id, "created", {"version": 1, **members})
    return get_group(group_id, base_url, FULL_GROUP)[0], 1


def _member_change(doc: dict[str, Any]) -> MemberChange:
    change = MemberChange(replace_all=True)
    for member in doc.get("members") or ():
        change.put(member)
    return change


def _save_group(
    conn: Connection, group: Any, doc: dict[str, Any], change: MemberChange | None, event: str
) -> int:
    """Write a group's new document and members, in the caller's write transaction, which
    holds the row; returns its version, which stays as it was when nothing changes (no
    write, no outbox event)."""
    if doc["displayName"].lower() != group.display_name_ci:
        _ensure_unique_group_name(conn, doc["displayName"], group.id)
    values = {
        "display_name": doc["displayName"],
        "external_id": doc.get("externalId"),
        "mail_nickname": mapping.group_mail_nickname(doc),
    }
    members = _apply_members(conn, group.id, change) if change else None
    if members is None and all(getattr(group, c) == v for c, v in values.items()):
        return int(group.version)  # nothing was written: the commit is an empty one
    conn.execute(
        _UPDATE_GROUP,
        {
            **values,
            "display_name_ci": doc["displayName"].lower(),
            "last_modified": utcnow(),
            "b_id": group.id,
        },
    )
    version = int(group.version) + 1
    outbox.record(conn, "Group", group.id, event, {"version": version, **(members or {})})
    return version


def replace_group(
    group_id: str, body: dict[str, Any], if_match: str | None, base_url: str
) -> tuple[dict[str, Any], int]:
    doc = canonicalize(body, GROUP_TYPE)
    _check_group_columns(doc)
    with (
        _unique(f"A group named {doc['displayName']!r} already exists."),
        begin(write=True) as conn,
    ):
        group = _load_group(conn, group_id, lock=True)
        check_if_match(if_match, group.version)
        _save_group(conn, group, doc, _member_change(doc), "replaced")
    return get_group(group_id, base_url, FULL_GROUP)


def patch_group(
    group_id: str, operations: list[dict[str, Any]], if_match: str | None, base_url: str
) -> tuple[None, int]:
    """Membership changes are applied as set-based SQL; the members are never loaded, and
    the caller renders the group only when the client asked for a body."""
    with begin(write=True) as conn:
        group = _load_group(conn, group_id, lock=True)
        check_if_match(if_match, group.version)
        current = mapping.group_to_doc(group, None, base_url)
        result = apply_patch(current, operations, GROUP_TYPE)
        _check_group_columns(result.doc)
        if result.members:
            _check_members((i, result.members.display.get(i)) for i in result.members.add)
        # The row is locked: nobody else bumps its version meanwhile.
        with _unique(f"A group named {result.doc['displayName']!r} already exists."):
            return None, _save_group(conn, group, result.doc, result.members, "patched")


def delete_group(group_id: str, if_match: str | None) -> None:
    with begin(write=True) as conn:
        group = _load_group(conn, group_id, lock=True)
        check_if_match(if_match, group.version)
        conn.execute(_DELETE_GROUP_MEMBERS, {"id": group_id})
        conn.execute(_DELETE_GROUP, {"id": group_id})
        outbox.record(conn, "Group", group_id, "deleted", {"displayName": group.display_name})
