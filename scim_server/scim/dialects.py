"""What identity providers really send, made into RFC 7643/7644 before the RFC engine sees it.

This is the one place where the server bends. Each rule names the client and the shape it
sends; `resource.py` and `patch.py` then work on requests shaped like the spec. A request that
is already RFC-shaped passes through unchanged, so the rules never alter the spec path.

What the RFC engine already accepts, because the RFCs allow it, is not repeated here:
attribute names in any case (RFC 7643 §2.1: Entra's `UserName`, `Active`, `Primary`); unknown
and readOnly attributes ignored on write (RFC 7644 §3.3, RFC 7643 §2.2: Okta's `groups: []`
on create, and the `id` that Entra and Okta put inside a PATCH value); URN-qualified and
dotted attribute names in a pathless value (RFC 7644 §3.10: Entra's
`"urn:...:enterprise:2.0:User:employeeNumber"` and `"name.givenName"` keys); `$ref` in a
member value, which is derived from the id and so dropped, `null` included (Entra); and a
`remove` with a value list, which removes only the listed values (Entra's member removal
`{"op":"Remove","path":"members","value":[{"value":"id"}]}`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from scim_server.errors import ScimError
from scim_server.scim.filter_parser import parse_path
from scim_server.scim.schema import ENTERPRISE_SCHEMA, Attribute, ResourceType, resolve

_BOOLEAN_STRINGS = {"true": True, "false": False}


def resource_body(body: Any, rtype: ResourceType) -> Any:
    """A POST or PUT body (or a pathless PATCH value), with each dialect rule applied."""
    if not isinstance(body, dict):
        return body  # not an object: the RFC engine answers with the error
    return _object(body, rtype, prefix="")


_COMPARE = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
_JSON_LITERAL = re.compile(r"(?i:true|false|null)$|-?\d+(\.\d+)?([eE][+-]?\d+)?$")


def filter_text(text: str | None) -> str | None:
    """Microsoft's Entra tutorial shows filters with bare values (`externalId eq jyoung`,
    `id eq 54D3… and manager eq 2819…`). A bare word after a comparison operator that is no
    JSON literal or number is read as a string; quoted strings are left as they are."""
    if not text:
        return text
    out: list[str] = []
    previous = ""
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':  # copy a JSON string whole, escapes included
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            previous, i = "", j + 1
        elif char.isspace() or char in "()[]":
            out.append(char)
            if not char.isspace():
                previous = ""
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in '()[]"':
                j += 1
            word = text[i:j]
            if previous in _COMPARE and not _JSON_LITERAL.match(word):
                word = json.dumps(word)
            out.append(word)
            previous, i = word.lower(), j
    return "".join(out)


def patch_operations(operations: list[dict[str, Any]], rtype: ResourceType) -> list[dict[str, Any]]:
    """PatchOp operations (already checked to be a list of objects by the envelope)."""
    return [_operation(piece, rtype) for raw in operations for piece in _split_pathless(raw)]


def _split_pathless(op: dict[str, Any]) -> list[dict[str, Any]]:
    """Entra ID with aadOptscim062020 sends one pathless replace whose keys are paths, value
    paths included: `{"op":"replace","value":{"emails[type eq \"work\"].value":"x",
    "name.givenName":"y"}}`. A key holding a value filter becomes an operation of its own
    with that key as its path; the other keys stay in the pathless operation."""
    value = op.get("value")
    if op.get("path") or not isinstance(value, dict) or str(op.get("op")).lower() == "remove":
        return [op]
    paths = {k: v for k, v in value.items() if isinstance(k, str) and "[" in k}
    if not paths:
        return [op]
    rest = {k: v for k, v in value.items() if k not in paths}
    split = [{"op": op["op"], "path": k, "value": v} for k, v in paths.items()]
    return ([{**op, "value": rest}] if rest else []) + split


def _operation(raw: dict[str, Any], rtype: ResourceType) -> dict[str, Any]:
    op, path, value = raw.get("op"), raw.get("path"), raw.get("value")
    if isinstance(op, str):
        # Entra ID (without aadOptscim062020) capitalises the op: "Add", "Replace", "Remove".
        op = op.lower()
    out = {**raw, "op": op}
    if not isinstance(path, str) or not path.strip():
        if "value" in out:
            out["value"] = resource_body(value, rtype)
        return out
    return _path_operation(out, path, value, rtype)


def _path_operation(
    out: dict[str, Any], path: str, value: Any, rtype: ResourceType
) -> dict[str, Any]:
    target = _path_target(path, rtype)
    if target is None:
        return out  # an unknown or malformed path: the RFC engine reports it
    attr, qualified = target
    if qualified == _MANAGER:
        return _manager_operation(out, value)
    if "value" in out:
        out["value"] = _value(attr, value)
    return out


def _path_target(path: str, rtype: ResourceType) -> tuple[Attribute, str] | None:
    """The attribute (or sub-attribute) a path points at, and its URN-qualified name."""
    try:
        parsed = parse_path(path)
    except ScimError:
        return None
    found = resolve(rtype, parsed.attr)
    if found is None:
        return None
    schema, attr, _ = found
    qualified = f"{schema.id}:{attr.name}"
    if parsed.sub_attr is None:
        return attr, qualified
    sub = attr.sub(parsed.sub_attr)
    return (sub, f"{qualified}.{sub.name}") if sub is not None else None


_MANAGER = f"{ENTERPRISE_SCHEMA}:manager"


def _manager_operation(out: dict[str, Any], value: Any) -> dict[str, Any]:
    """Entra ID sends the manager's id as a bare string on the enterprise URN path, and
    clears the manager with an empty value (`""` or `{"value": ""}`) or a `Remove` that
    carries the old value. RFC 7643 §4.3 makes `manager` a complex attribute."""
    if isinstance(value, list) and len(value) == 1:
        # Entra ID's "Add Manager" and "Remove Manager" carry a one-element list:
        # `[{"$ref": "…", "value": "id"}]`, `[{"$ref": null, "value": "id"}]`.
        value = value[0]
    if isinstance(value, dict):
        ident = {k.lower(): v for k, v in value.items() if isinstance(k, str)}.get("value")
    else:
        ident = value
    if out["op"] == "remove" or (isinstance(ident, str) and not ident.strip()):
        return {**{k: v for k, v in out.items() if k != "value"}, "op": "remove"}
    out["value"] = {"value": value} if isinstance(value, str) else value
    return out


def _object(body: dict[str, Any], rtype: ResourceType, prefix: str) -> dict[str, Any]:
    """Walk a resource object; `prefix` is the extension URN (with ":") while inside one."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if not isinstance(key, str):
            out[key] = value
            continue
        extension = rtype.extension(key)
        if extension is not None and isinstance(value, dict):
            out[key] = _object(value, rtype, prefix=f"{extension.id}:")
            continue
        found = resolve(rtype, prefix + key)
        if found is None:
            out[key] = value
            continue
        schema, attr, sub = found
        if sub is None and f"{schema.id}:{attr.name}" == _MANAGER:
            value = _manager_value(value)
        out[key] = _unassigned_if_empty(sub or attr, _value(sub or attr, value))
    return out


def _manager_value(value: Any) -> Any:
    """Entra ID sends the manager as a bare id string (see `_manager_operation`). OneLogin's
    SCIM templates send `{"managerId": "…", "displayName": "…"}`, and an empty `managerId`
    when the user has no manager."""
    if isinstance(value, str):
        return {"value": value} if value.strip() else None
    if isinstance(value, dict):
        fields = {k.lower(): k for k in value if isinstance(k, str)}
        if "managerid" in fields and "value" not in fields:
            ident = value[fields["managerid"]]
            return {"value": ident} if isinstance(ident, str) and ident.strip() else None
    return value


def _unassigned_if_empty(attr: Attribute, value: Any) -> Any:
    """OneLogin fills its SCIM JSON template with "" where the user has no value:
    `"title": ""`, `{"value": "", "type": "fax"}`, `"organization": ""`. An empty string in an
    optional attribute is read as unassigned (RFC 7643 §2.5), and a multi-valued item whose
    `value` is empty is dropped. A required attribute keeps its "" so that it is refused."""
    if attr.required:
        return value
    if isinstance(value, str):
        return None if not value.strip() else value
    if attr.multi_valued and isinstance(value, list):
        return [_without_empty(item) for item in value if not _empty_item(item)]
    return _without_empty(value)


def _without_empty(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    return {k: v for k, v in item.items() if not (isinstance(v, str) and not v.strip())}


def _empty_item(item: Any) -> bool:
    if not isinstance(item, dict):
        return isinstance(item, str) and not item.strip()
    fields = {k.lower(): v for k, v in item.items() if isinstance(k, str)}
    return isinstance(fields.get("value"), str) and not fields["value"].strip()


def _value(attr: Attribute, value: Any) -> Any:
    """Coerce the values of `attr` (a whole multi-valued list, one item, or one value)."""
    if attr.type == "boolean":
        return _boolean(value)
    if attr.type != "complex":
        return value
    if isinstance(value, list):
        return [_complex_item(attr, item) for item in value]
    return _complex_item(attr, value)


def _complex_item(attr: Attribute, item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    out: dict[str, Any] = {}
    for key, value in item.items():
        sub = attr.sub(key) if isinstance(key, str) else None
        out[key] = _value(sub, value) if sub is not None else value
    return out


def _boolean(value: Any) -> Any:
    """Entra ID (without aadOptscim062020) sends booleans as the strings "True" and "False"
    (`"active": "False"`, `"primary": "True"`); so do OneLogin and JumpCloud for `active`.
    Only these two words, in any case, are booleans; any other string stays an error."""
    if isinstance(value, str):
        return _BOOLEAN_STRINGS.get(value.strip().lower(), value)
    return value
