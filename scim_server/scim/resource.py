"""Canonical resource documents from client JSON (RFC 7643 §2, RFC 7644 §3.3, §3.5.1).

A document uses canonical attribute names: core attributes at the top level, the enterprise
extension nested under its URN, multi-valued attributes as lists. Absent attributes are absent
keys, never None. The per-attribute checks here are shared with PATCH (`patch.py`).
"""

from __future__ import annotations

import math
import re
import sys
from datetime import datetime
from typing import Any

from scim_server.errors import InvalidValue
from scim_server.scim.schema import GROUP, Attribute, ResourceType, Schema, resolve

MEMBERS = GROUP.attr("members")
MEMBER_TYPES = {"user": "User", "group": "Group"}
# Limits of what a value may be, on every database alike (each column may be narrower:
# mapping.check_lengths). Integers are what a signed 64-bit column holds; a string is at most
# 64 Ki characters (a certificate or a long address fits many times over).
MIN_INTEGER, MAX_INTEGER = -(2**63), 2**63 - 1
MAX_STRING_LENGTH = 65_536
MAX_DOUBLE = sys.float_info.max
# C0 control characters other than tab, line feed and carriage return (an address's
# `formatted` may hold line breaks, RFC 7643 §4.1.2). NUL cannot be stored in PostgreSQL text;
# the others have no place in names, titles or addresses, and would only travel on to M365.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def canonicalize(
    body: dict[str, Any], rtype: ResourceType, *, for_replace: bool = True
) -> dict[str, Any]:
    """Canonicalise a POST/PUT body.

    Keys are matched case-insensitively (RFC 7643 §2.1) and may be URN-qualified or nested under
    an extension URN. Unknown attributes (RFC 7644 §3.3), readOnly attributes (RFC 7643 §2.2),
    nulls (RFC 7643 §2.5) and `schemas` are dropped. With `for_replace` (a whole resource), the
    schema's required attributes must be present; without it the body is a partial set.
    """
    if not isinstance(body, dict):
        raise InvalidValue("The resource must be a JSON object.")
    out: dict[str, Any] = {}
    for key, value in body.items():
        _put(out, rtype, key, value)
    _drop_empty(out, rtype)
    if for_replace:
        check_required(out, rtype)
    return out


def check_required(doc: dict[str, Any], rtype: ResourceType) -> None:
    """Required attributes (userName, Group displayName) must have a non-empty value."""
    for attr in rtype.schema.attributes:
        if attr.required and _is_empty(doc.get(attr.name)):
            raise InvalidValue(f"{attr.name} is required")


def extension_schema(rtype: ResourceType, key: str) -> Schema | None:
    """The extension schema whose URN is exactly `key` (case-insensitive), if any."""
    return rtype.extension(key)


def canonical_value(attr: Attribute, value: Any, *, name: str | None = None) -> Any:
    """Validate a whole value of `attr`: a list for a multi-valued attribute, else one item.

    None stays None (unassigned). A single object for a multi-valued attribute is wrapped into
    a list (lenient); null and empty items are dropped.
    """
    label = name or attr.name
    if value is None:
        return None
    if not attr.multi_valued:
        return canonical_item(attr, value, name=label)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise InvalidValue(f"{label} is multi-valued and must be a list.")
    items = [canonical_item(attr, v, name=label) for v in value if v is not None]
    items = [i for i in items if i != {}]
    check_one_primary(attr, items, label)
    return items


def canonical_item(attr: Attribute, value: Any, *, name: str | None = None) -> Any:
    """Validate one value of `attr` (one element when multi-valued).

    A complex value keeps only known, writable, non-null sub-attributes under their canonical
    names.
    """
    label = name or attr.name
    if attr is MEMBERS:
        return canonical_member(value)
    if attr.type != "complex":
        return _simple(attr, value, label)
    if not isinstance(value, dict):
        raise InvalidValue(f"{label} must be a JSON object.")
    out: dict[str, Any] = {}
    for key, sub_value in value.items():
        sub = attr.sub(key) if isinstance(key, str) else None
        # RFC 7643 §2.2: readOnly values sent by a client SHALL be ignored.
        if sub is None or sub.mutability == "readOnly" or sub_value is None:
            continue
        out[sub.name] = _simple(sub, sub_value, f"{label}.{sub.name}")
    return out


def canonical_member(value: Any) -> dict[str, str]:
    """A Group member: a string `value`, an optional `type` of "User" or "Group", and an
    optional `display` (immutable, RFC 7643 §2.4). `$ref` is derived from the id: dropped."""
    if not isinstance(value, dict):
        raise InvalidValue("Each member must be a JSON object with a value.")
    fields = {k.lower(): v for k, v in value.items() if isinstance(k, str)}
    ident = fields.get("value")
    if not isinstance(ident, str) or not ident.strip() or "\x00" in ident:
        raise InvalidValue("Each member must have a string value (the member's id).")
    out = {"value": ident}
    kind = fields.get("type")
    if kind is not None:
        canonical = MEMBER_TYPES.get(kind.lower()) if isinstance(kind, str) else None
        if canonical is None:
            raise InvalidValue(f"members.type must be 'User' or 'Group', not {kind!r}.")
        out["type"] = canonical
    display = fields.get("display")
    if display is not None:
        if not isinstance(display, str) or _CONTROL.search(display):
            raise InvalidValue("members.display must be a string without control characters.")
        out["display"] = display
    return out


def check_one_primary(attr: Attribute, items: list[Any], label: str | None = None) -> None:
    """RFC 7643 §2.4: the primary attribute value "true" MUST appear no more than once."""
    if attr.sub("primary") is None:
        return
    if sum(1 for i in items if isinstance(i, dict) and i.get("primary") is True) > 1:
        raise InvalidValue(f"At most one value of {label or attr.name} may be primary.")


def _put(out: dict[str, Any], rtype: ResourceType, key: Any, value: Any) -> None:
    if not isinstance(key, str) or key.lower() == "schemas" or value is None:
        return
    extension = extension_schema(rtype, key)
    if extension is not None:
        if not isinstance(value, dict):
            raise InvalidValue(f"{extension.id} must be a JSON object.")
        for inner, inner_value in value.items():
            if isinstance(inner, str):
                _put(out, rtype, f"{extension.id}:{inner}", inner_value)
        return
    found = resolve(rtype, key)
    if found is None:
        return  # RFC 7644 §3.3: unknown attributes may be ignored.
    schema, attr, sub = found
    if attr.mutability == "readOnly" or (sub is not None and sub.mutability == "readOnly"):
        return  # RFC 7643 §2.2
    container = out if schema is rtype.schema else out.setdefault(schema.id, {})
    if sub is None:
        container[attr.name] = canonical_value(attr, value)
    elif not attr.multi_valued:  # `name.givenName` as a key
        current = container.get(attr.name)
        if not isinstance(current, dict):
            current = container[attr.name] = {}
        current[sub.name] = _simple(sub, value, f"{attr.name}.{sub.name}")


def _drop_empty(out: dict[str, Any], rtype: ResourceType) -> None:
    for schema in rtype.extensions:
        obj = out.get(schema.id)
        if isinstance(obj, dict):
            _drop_empty_values(obj)
            if not obj:
                del out[schema.id]
    _drop_empty_values(out)


def _drop_empty_values(container: dict[str, Any]) -> None:
    for key in [k for k, v in container.items() if v is None or v == [] or v == {}]:
        del container[key]


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _simple(attr: Attribute, value: Any, label: str) -> Any:
    """RFC 7643 §2.3: the JSON type of a value must match the attribute's data type."""
    kind = attr.type
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidValue(f"{label} must be a boolean.")
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidValue(f"{label} must be an integer.")
        if not MIN_INTEGER <= value <= MAX_INTEGER:
            raise InvalidValue(f"{label} must be between {MIN_INTEGER} and {MAX_INTEGER}.")
    elif kind == "decimal":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidValue(f"{label} must be a number.")
        # RFC 7493 §2.2: a number an IEEE double holds.
        if not (math.isfinite(value) if isinstance(value, float) else abs(value) <= MAX_DOUBLE):
            raise InvalidValue(f"{label} must be a finite number.")
    elif kind == "complex":
        raise InvalidValue(f"{label} must be a JSON object.")
    elif not isinstance(value, str):
        raise InvalidValue(f"{label} must be a string.")
    elif len(value) > MAX_STRING_LENGTH:
        raise InvalidValue(f"{label} is longer than {MAX_STRING_LENGTH} characters.")
    elif _CONTROL.search(value):
        raise InvalidValue(f"{label} must not contain NUL or other control characters.")
    elif kind == "dateTime" and not is_datetime(value):
        raise InvalidValue(f"{label} must be an xsd:dateTime such as 2015-09-01T12:00:00Z.")
    if attr.required and _is_empty(value):
        raise InvalidValue(f"{attr.name} is required")
    return value


def is_datetime(value: str) -> bool:
    """RFC 7643 §2.3.5: an xsd:dateTime (RFC 3339 style, `Z` or an offset)."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return "T" in value.upper()
