"""Pure mapping between directory rows and SCIM documents (RFC 7643 shapes).

A document uses canonical attribute names; the enterprise extension is nested under its URN.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import FromClause

from scim_server.errors import InvalidValue
from scim_server.scim.schema import (
    COUNTRY_CODES,
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    M365_GROUP_SCHEMA,
    M365_USER_SCHEMA,
    USER_SCHEMA,
)

# SCIM attribute → User column, for single-valued simple attributes.
USER_SIMPLE = {
    "userName": "user_name",
    "externalId": "external_id",
    "displayName": "display_name",
    "nickName": "nick_name",
    "profileUrl": "profile_url",
    "title": "title",
    "userType": "user_type",
    "preferredLanguage": "preferred_language",
    "locale": "locale",
    "timezone": "timezone",
}
USER_NAME = {
    "formatted": "name_formatted",
    "familyName": "name_family",
    "givenName": "name_given",
    "middleName": "name_middle",
    "honorificPrefix": "name_prefix",
    "honorificSuffix": "name_suffix",
}
ENTERPRISE_SIMPLE = {
    "employeeNumber": "employee_number",
    "costCenter": "cost_center",
    "organization": "organization",
    "division": "division",
    "department": "department",
}
M365_SIMPLE = {"usageLocation": "usage_location", "alternateEmail": "alternate_email"}
_COUNTRIES = frozenset(COUNTRY_CODES)
MULTI_VALUED = (
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
)
ADDRESS = {
    "formatted": "formatted",
    "streetAddress": "street_address",
    "locality": "locality",
    "region": "region",
    "postalCode": "postal_code",
    "country": "country",
}


# Column → SCIM attribute, for error messages.
USER_LABELS = {
    **{c: a for a, c in USER_SIMPLE.items()},
    **{c: f"name.{a}" for a, c in USER_NAME.items()},
    **{c: a for a, c in ENTERPRISE_SIMPLE.items()},
    **{c: f"{M365_USER_SCHEMA}:{a}" for a, c in M365_SIMPLE.items()},
    "user_name_ci": "userName",
    "manager_id": "manager.value",
}
VALUE_LABELS = {c: a for a, c in ADDRESS.items()}


_LIMITS: dict[FromClause, tuple[tuple[str, int], ...]] = {}


def _limits(table: FromClause) -> tuple[tuple[str, int], ...]:
    """(column name, maximum length) of the table's length-limited columns."""
    limits = _LIMITS.get(table)
    if limits is None:
        limits = _LIMITS[table] = tuple(
            (column.name, length)
            for column in table.columns
            if (length := getattr(column.type, "length", None))
        )
    return limits


def check_lengths(table: FromClause, row: dict[str, Any], label: Callable[[str], str]) -> None:
    """A string longer than its column is 400 invalidValue on every database (PostgreSQL
    would refuse it with an error, SQLite would silently keep it)."""
    for name, limit in _limits(table):
        value = row.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise InvalidValue(f"{label(name)} is longer than {limit} characters.")


def etag(version: int) -> str:
    return f'W/"{version}"'


def etag_matches(header: str, version: int) -> bool:
    """RFC 7232 §2.3.2 weak comparison of an If-Match / If-None-Match list with the current
    version: `*`, `W/"3"` and `"3"` all match version 3."""
    current = etag(version)
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or current in tags or current.removeprefix("W/") in tags


def iso(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class UserExtras:
    """What a User document needs beyond its own row: its values, groups, manager and
    Microsoft 365 link."""

    values: Sequence[Any]  # UserValue instances or user_values rows
    groups: list[tuple[str, str]]  # (group id, displayName)
    manager_display: str | None
    link: Any = None  # an m365_links row, if the sync has seen the user


def sync_state(link: Any) -> dict[str, Any]:
    """The read-only M365 attributes of a user or group, from its m365_links row."""
    if link is None:
        return {}
    out: dict[str, Any] = {"syncState": link.state}
    if link.object_id:
        out["objectId"] = link.object_id
    if link.last_synced_at is not None:
        out["lastSyncedAt"] = iso(link.last_synced_at)
    if link.last_error:
        out["lastError"] = link.last_error
    if getattr(link, "password_state", None):
        out["passwordState"] = link.password_state
    if getattr(link, "drift_found_at", None) is not None:
        out["lastDriftAt"] = iso(link.drift_found_at)
    return out


def user_to_doc(user: Any, extras: UserExtras, base_url: str) -> dict[str, Any]:
    """`user` is a User or a row of the users table: lists render from plain rows."""
    doc: dict[str, Any] = {"schemas": [USER_SCHEMA], "id": user.id}
    for attr, column in USER_SIMPLE.items():
        value = getattr(user, column)
        if value is not None:
            doc[attr] = value
    name = {a: getattr(user, c) for a, c in USER_NAME.items() if getattr(user, c) is not None}
    if name:
        doc["name"] = name
    if user.active is not None:
        doc["active"] = user.active
    for value in extras.values:
        doc.setdefault(value.attr, []).append(_value_to_doc(value))
    if extras.groups:
        doc["groups"] = [
            {"value": gid, "$ref": f"{base_url}/Groups/{gid}", "display": gname, "type": "direct"}
            for gid, gname in extras.groups
        ]
    ent = {
        a: getattr(user, c) for a, c in ENTERPRISE_SIMPLE.items() if getattr(user, c) is not None
    }
    if user.manager_id:
        manager: dict[str, Any] = {
            "value": user.manager_id,
            "$ref": f"{base_url}/Users/{user.manager_id}",
        }
        if extras.manager_display:
            manager["displayName"] = extras.manager_display
        ent["manager"] = manager
    if ent:
        doc["schemas"].append(ENTERPRISE_SCHEMA)
        # The extension object names its schema too, as scim2-models (and so scim2-tester)
        # write and read it; RFC 7643 clients ignore the extra member.
        doc[ENTERPRISE_SCHEMA] = {"schemas": [ENTERPRISE_SCHEMA], **ent}
    m365 = {a: getattr(user, c) for a, c in M365_SIMPLE.items() if getattr(user, c) is not None}
    m365.update(sync_state(extras.link))
    if m365:
        doc["schemas"].append(M365_USER_SCHEMA)
        doc[M365_USER_SCHEMA] = {"schemas": [M365_USER_SCHEMA], **m365}
    doc["meta"] = {
        "resourceType": "User",
        "created": iso(user.created),
        "lastModified": iso(user.last_modified),
        "location": f"{base_url}/Users/{user.id}",
        "version": etag(user.version),
    }
    return doc


def _value_to_doc(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if row.attr == "addresses":
        out = {a: getattr(row, c) for a, c in ADDRESS.items() if getattr(row, c) is not None}
    elif row.value is not None:
        out["value"] = row.value
    if row.display is not None:
        out["display"] = row.display
    if row.type is not None:
        out["type"] = row.type
    if row.primary is not None:
        out["primary"] = row.primary
    return out


def doc_to_user_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """Every column a full replace writes; absent attributes become NULL (RFC 7644 §3.5.1)."""
    cols: dict[str, Any] = {c: doc.get(a) for a, c in USER_SIMPLE.items()}
    cols["user_name_ci"] = doc["userName"].lower()
    name = doc.get("name") or {}
    cols.update({c: name.get(a) for a, c in USER_NAME.items()})
    cols["active"] = doc.get("active")
    ent = doc.get(ENTERPRISE_SCHEMA) or {}
    cols.update({c: ent.get(a) for a, c in ENTERPRISE_SIMPLE.items()})
    m365 = doc.get(M365_USER_SCHEMA) or {}
    cols.update({c: m365.get(a) for a, c in M365_SIMPLE.items()})
    usage = cols["usage_location"]
    if usage is not None:
        if not isinstance(usage, str) or usage.upper() not in _COUNTRIES:
            raise InvalidValue(
                f"{M365_USER_SCHEMA}:usageLocation must be an ISO 3166-1 alpha-2 country "
                f"code such as GB or US, not {usage!r}."
            )
        cols["usage_location"] = usage.upper()
    manager = ent.get("manager")
    cols["manager_id"] = manager.get("value") if isinstance(manager, dict) else None
    return cols


def doc_to_user_values(doc: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Rows for user_values. `value_ci` is the lower-cased value that filters compare."""
    for attr in MULTI_VALUED:
        for position, item in enumerate(doc.get(attr) or ()):
            row: dict[str, Any] = {
                "attr": attr,
                "position": position,
                "value": item.get("value"),
                "type": item.get("type"),
                "primary": item.get("primary"),
                "display": item.get("display"),
            }
            value = item.get("value")
            # Only short values are indexed: certificates and photo URLs need no lookup.
            row["value_ci"] = value.lower()[:512] if isinstance(value, str) else None
            if attr == "addresses":
                row.update({c: item.get(a) for a, c in ADDRESS.items()})
            yield row


def group_to_doc(
    group: Any,
    members: list[tuple[str, str, str | None]] | None,
    base_url: str,
    link: Any = None,
) -> dict[str, Any]:
    """members: (id, type, display) rows, or None when the caller chose not to load them."""
    doc: dict[str, Any] = {
        "schemas": [GROUP_SCHEMA],
        "id": group.id,
        "displayName": group.display_name,
    }
    if group.external_id is not None:
        doc["externalId"] = group.external_id
    if members:
        doc["members"] = [_member(mid, mtype, display, base_url) for mid, mtype, display in members]
    m365 = sync_state(link)
    if group.mail_nickname is not None:
        m365["mailNickname"] = group.mail_nickname
    if m365:
        doc["schemas"].append(M365_GROUP_SCHEMA)
        doc[M365_GROUP_SCHEMA] = {"schemas": [M365_GROUP_SCHEMA], **m365}
    doc["meta"] = {
        "resourceType": "Group",
        "created": iso(group.created),
        "lastModified": iso(group.last_modified),
        "location": f"{base_url}/Groups/{group.id}",
        "version": etag(group.version),
    }
    return doc


def _member(mid: str, mtype: str, display: str | None, base_url: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "value": mid,
        "$ref": f"{base_url}/{'Users' if mtype == 'User' else 'Groups'}/{mid}",
        "type": mtype,
    }
    if display is not None:
        out["display"] = display
    return out


# Graph's mailNickname for groups: ASCII, at most 64, none of @ ( ) \ [ ] " ; : . < > , or space.
_NICKNAME = re.compile(r"[!#$%&'*+\-/=?^_`{|}~A-Za-z0-9]{1,64}")


def group_mail_nickname(doc: dict[str, Any]) -> str | None:
    """The M365 extension's mailNickname of a group document, checked as Graph checks it."""
    value = (doc.get(M365_GROUP_SCHEMA) or {}).get("mailNickname")
    if value is None:
        return None
    if not isinstance(value, str) or not _NICKNAME.fullmatch(value):
        raise InvalidValue(
            f"{M365_GROUP_SCHEMA}:mailNickname must be 1 to 64 ASCII letters, digits or "
            'symbols, without spaces or any of @ ( ) \\ [ ] " ; : . < > ,'
        )
    return value
