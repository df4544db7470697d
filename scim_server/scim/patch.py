"""PATCH (RFC 7644 §3.5.2), pure and atomic: a new document or an error, never half of each.

`apply_patch` works on a deep copy, so a failing operation leaves the caller's document as it
was. Group members are never in the document (a group may have 50,000): every operation on
`members` is folded, in order, into a `MemberChange` that the caller applies with set-based SQL.
A new `password` is returned in plaintext for the caller to hash, never stored in the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scim2_filter_parser import ast

from scim_server.errors import (
    InvalidFilter,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
    ScimError,
)
from scim_server.scim import filter_eval
from scim_server.scim.filter_parser import PatchPath, parse_path
from scim_server.scim.resource import (
    canonical_item,
    canonical_member,
    canonical_value,
    check_one_primary,
    check_required,
    extension_schema,
)
from scim_server.scim.schema import Attribute, ResourceType, Schema, resolve

OPS = ("add", "remove", "replace")


@dataclass
class MemberChange:
    """Group membership edits, folded in operation order.

    `replace_all`: delete every current member first. `add`: member id → "User" | "Group"
    (insertion-ordered). `remove`: ids to delete (ignored when `replace_all`).
    """

    replace_all: bool = False
    add: dict[str, str] = field(default_factory=dict)
    display: dict[str, str] = field(default_factory=dict)  # member id → client-given display
    remove: set[str] = field(default_factory=set)

    def put(self, member: dict[str, str]) -> None:
        """Add one canonical member ({"value", "type"?, "display"?})."""
        ident = member["value"]
        self.add[ident] = member.get("type", "User")
        if "display" in member:
            self.display[ident] = member["display"]
        self.remove.discard(ident)


@dataclass
class PatchResult:
    doc: dict[str, Any]
    members: MemberChange | None
    password: str | None


@dataclass(frozen=True)
class _Target:
    """Where an operation applies: an attribute of `schema`, optionally one sub-attribute,
    optionally only the values of a multi-valued attribute that match `value_filter`."""

    schema: Schema
    attr: Attribute
    sub: Attribute | None = None
    value_filter: ast.Filter | None = None

    @property
    def label(self) -> str:
        return f"{self.attr.name}.{self.sub.name}" if self.sub else self.attr.name


@dataclass
class _State:
    doc: dict[str, Any]
    rtype: ResourceType
    members: MemberChange | None = None
    password: str | None = None

    def existing(self, schema: Schema) -> dict[str, Any] | None:
        """The object holding `schema`'s attributes: the document or its extension object."""
        if schema is self.rtype.schema:
            return self.doc
        obj = self.doc.get(schema.id)
        return obj if isinstance(obj, dict) else None

    def writable(self, schema: Schema) -> dict[str, Any]:
        """Like `existing`, creating the extension object when it is absent."""
        obj = self.existing(schema)
        if obj is None:
            obj = self.doc[schema.id] = {}
        return obj

    def member_change(self) -> MemberChange:
        if self.members is None:
            self.members = MemberChange()
        return self.members


def apply_patch(
    doc: dict[str, Any], operations: list[dict[str, Any]], rtype: ResourceType
) -> PatchResult:
    """Apply `operations` in order to a copy of `doc`; all of them apply or none do."""
    if not isinstance(operations, list) or not operations:
        raise InvalidSyntax("Operations must be a list of one or more operations.")
    state = _State(_copy_json(doc), rtype)
    for index, raw in enumerate(operations, start=1):
        op, path, value = _parse_operation(raw, index)
        try:
            _apply_operation(state, op, path, value)
        except ScimError as exc:
            raise type(exc)(f"Operation {index} ({op}): {exc.detail}", exc.scim_type) from None
    _tidy(state.doc, rtype)
    check_required(state.doc, rtype)
    return PatchResult(state.doc, state.members, state.password)


def _copy_json(value: Any) -> Any:
    """A deep copy of a JSON document (dicts, lists and immutable scalars), at a third of the
    cost of copy.deepcopy, which also tracks shared objects that JSON cannot have."""
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


# ---------------------------------------------------------------- parsing


def _parse_operation(raw: Any, index: int) -> tuple[str, str | None, Any]:
    """RFC 7644 §3.5.2: each operation has an "op", an optional "path" and a "value".

    Member names are case-insensitive (RFC 7643 §2.1); the op is "add", "remove" or
    "replace" (clients' capitalised ops are made so in `dialects`).
    """
    if not isinstance(raw, dict):
        raise InvalidSyntax(f"Operation {index} must be a JSON object.")
    fields = {k.lower(): v for k, v in raw.items() if isinstance(k, str)}
    op = fields.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise InvalidSyntax(f"Operation {index}: op must be add, remove or replace, not {op!r}.")
    path = fields.get("path")
    if path is not None and not isinstance(path, str):
        raise InvalidPath(f"Operation {index}: path must be a string.")
    if isinstance(path, str) and not path.strip():
        path = None
    return op, path, fields.get("value")


def _resolve_target(rtype: ResourceType, path: PatchPath) -> _Target:
    found = resolve(rtype, path.attr)
    if found is None:
        raise InvalidPath(f"Unknown attribute {path.attr!r}.")
    schema, attr, _ = found
    sub: Attribute | None = None
    if path.sub_attr is not None:
        sub = attr.sub(path.sub_attr) if attr.type == "complex" else None
        if sub is None:
            raise InvalidPath(f"{attr.name} has no sub-attribute {path.sub_attr!r}.")
    if path.value_filter is not None:
        if not attr.multi_valued or attr.type != "complex":
            raise InvalidPath(f"{attr.name} is not multi-valued; it takes no value filter.")
        if not _is_members(rtype, attr):
            # RFC 7644 Table 9: a filter naming what the attribute does not have: invalidFilter.
            filter_eval.validate(path.value_filter, attr)
    return _Target(schema, attr, sub, path.value_filter)


def _pathless_targets(rtype: ResourceType, key: Any, value: Any) -> list[tuple[_Target, Any]]:
    """The targets named by one key of a pathless add/replace value.

    Keys may be URN-qualified or dotted (`name.givenName`), and an extension's object is
    flattened. Unknown keys, `schemas` and readOnly attributes (clients such as Okta send
    `id`) are ignored, as in a POST body (RFC 7643 §2.2, RFC 7644 §3.3).
    """
    if not isinstance(key, str) or key.lower() == "schemas":
        return []
    extension = extension_schema(rtype, key)
    if extension is not None:
        if value is None:
            return []
        if not isinstance(value, dict):
            raise InvalidValue(f"{extension.id} must be a JSON object.")
        return [
            pair
            for inner, inner_value in value.items()
            if isinstance(inner, str)
            for pair in _pathless_targets(rtype, f"{extension.id}:{inner}", inner_value)
        ]
    found = resolve(rtype, key)
    if found is None:
        return []
    schema, attr, sub = found
    target = _Target(schema, attr, sub)
    if _is_read_only(target) or (sub is not None and _is_members(rtype, attr)):
        return []
    return [(target, value)]


# ---------------------------------------------------------------- dispatch


def _apply_operation(state: _State, op: str, path: str | None, value: Any) -> None:
    if path is None:
        if op == "remove":
            raise NoTarget("remove needs a path (RFC 7644 §3.5.2.2).")
        _apply_pathless(state, op, value)
        return
    parsed = parse_path(path)
    extension = extension_schema(state.rtype, parsed.attr)
    if extension is not None and parsed.sub_attr is None and parsed.value_filter is None:
        _apply_to_extension(state, op, extension, value)
        return
    target = _resolve_target(state.rtype, parsed)
    if _is_read_only(target) and not _is_members(state.rtype, target.attr):
        raise Mutability(f"{target.label} is readOnly.")
    if op == "add" and value is None:
        raise InvalidValue("add needs a value (RFC 7644 §3.5.2.1).")
    _apply_at(state, op, target, value)


def _apply_pathless(state: _State, op: str, value: Any) -> None:
    """RFC 7644 §3.5.2.1, §3.5.2.3: without a path, the value holds the attributes to change."""
    if not isinstance(value, dict):
        raise InvalidValue(f"Without a path, the value of {op} must be an object of attributes.")
    for key, item in value.items():
        for target, target_value in _pathless_targets(state.rtype, key, item):
            if target_value is None and op == "add":
                continue
            _apply_at(state, op, target, target_value)


def _apply_to_extension(state: _State, op: str, schema: Schema, value: Any) -> None:
    """A path naming an extension URN addresses the whole extension object."""
    if op == "remove" or value is None:
        if op == "add":
            raise InvalidValue("add needs a value (RFC 7644 §3.5.2.1).")
        state.doc.pop(schema.id, None)
        return
    if not isinstance(value, dict):
        raise InvalidValue(f"{schema.id} must be a JSON object.")
    for target, target_value in _pathless_targets(state.rtype, schema.id, value):
        if target_value is not None or op == "replace":
            _apply_at(state, op, target, target_value)


def _apply_at(state: _State, op: str, target: _Target, value: Any) -> None:
    if _is_members(state.rtype, target.attr):
        _fold_members(state.member_change(), op, target, value)
    elif target.attr.name == "password" and target.schema is state.rtype.schema:
        state.password = _password(op, value)
    elif op == "remove" or value is None:  # RFC 7643 §2.5: null means unassigned
        _remove(state, target, value if op == "remove" else None)
    elif target.attr.multi_valued and (target.value_filter is not None or target.sub):
        _set_selected(state, op, target, value)
    elif target.sub is not None:
        _merge_complex(state, target, {target.sub.name: value})
    elif target.attr.multi_valued:
        _set_values(state, op, target, value)
    elif target.attr.type == "complex":
        _merge_complex(state, target, value)
    else:
        container = state.writable(target.schema)
        container[target.attr.name] = canonical_value(target.attr, value)


# ---------------------------------------------------------------- add and replace


def _set_values(state: _State, op: str, target: _Target, value: Any) -> None:
    """A multi-valued attribute without a filter: add appends (§3.5.2.1), replace replaces
    all values (§3.5.2.3)."""
    attr = target.attr
    container = state.writable(target.schema)
    new_items: list[dict[str, Any]] = canonical_value(attr, value) or []
    if op == "replace":
        container[attr.name] = new_items
        return
    items = _items(container, attr)
    winners: list[dict[str, Any]] = []
    for new in new_items:
        existing = next((i for i in items if _same_value(i, new, attr)), None)
        if existing is None:
            items.append(new)
            existing = new
        else:  # §3.5.2.1: a value already present is not added twice.
            _merge_into(existing, new, attr)
        if new.get("primary") is True:
            winners.append(existing)
    _settle_primary(attr, items, winners)


def _set_selected(state: _State, op: str, target: _Target, value: Any) -> None:
    """`attr[filter]`, `attr[filter].sub` or `attr.sub`: change the selected values.

    With no match, replace is noTarget (§3.5.2.3); add creates one value from the filter's
    `eq` terms plus the given value, as Microsoft Entra expects for
    `addresses[type eq "work"].streetAddress`, so a second add fills the same value.
    """
    attr = target.attr
    container = state.writable(target.schema)
    items = _items(container, attr)
    change = _element_change(target, value)
    selected = [i for i in items if _selects(target, i)]
    if not selected:
        if op == "replace":
            raise NoTarget(f"No value of {attr.name} matches the path's filter.")
        element = canonical_item(attr, {**_seed(target), **change})
        items.append(element)
        selected = [element]
    else:
        for item in selected:
            _merge_into(item, change, attr)
    _settle_primary(attr, items, selected if change.get("primary") is True else [])


def _element_change(target: _Target, value: Any) -> dict[str, Any]:
    if target.sub is not None:
        return {target.sub.name: canonical_item(target.sub, value, name=target.label)}
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    change: dict[str, Any] = canonical_item(target.attr, value)
    return change


def _seed(target: _Target) -> dict[str, Any]:
    """The `eq` terms of a filter joined by `and`: what a value created by add must hold."""
    if target.value_filter is None:
        return {}
    seed = _equalities(target.value_filter, target.attr)
    if seed is None:
        raise NoTarget(
            f"No value of {target.attr.name} matches, and the filter does not "
            "say which value to create."
        )
    return seed


def _equalities(node: Any, attr: Attribute) -> dict[str, Any] | None:
    if isinstance(node, ast.Filter) and not node.negated and node.namespace is None:
        return _equalities(node.expr, attr)
    if isinstance(node, ast.LogExpr) and node.op.lower() == "and":
        left, right = _equalities(node.expr1, attr), _equalities(node.expr2, attr)
        return None if left is None or right is None else {**left, **right}
    if isinstance(node, ast.AttrExpr) and node.value.lower() == "eq":
        sub = attr.sub(node.attr_path.attr_name)
        if sub is not None and node.comp_value is not None and node.comp_value.value is not None:
            return {sub.name: node.comp_value.value}
    return None


def _merge_complex(state: _State, target: _Target, value: Any) -> None:
    """A single complex attribute: the given sub-attributes replace theirs and the others
    are left unchanged (RFC 7644 §3.5.2.1, §3.5.2.3)."""
    container = state.writable(target.schema)
    change = canonical_item(target.attr, value)
    current = container.get(target.attr.name)
    if not isinstance(current, dict):
        current = container[target.attr.name] = {}
    _merge_into(current, change, target.attr)


def _merge_into(current: dict[str, Any], change: dict[str, Any], attr: Attribute) -> None:
    """Merge sub-attributes. A new `value` drops the `$ref` and readOnly sub-attributes
    (e.g. manager.displayName) that described the old one."""
    if "value" in change and change["value"] != current.get("value"):
        for sub in attr.sub_attributes:
            if sub.name == "$ref" or sub.mutability == "readOnly":
                current.pop(sub.name, None)
    current.update(change)


def _settle_primary(
    attr: Attribute, items: list[dict[str, Any]], winners: list[dict[str, Any]]
) -> None:
    """RFC 7643 §2.4: at most one primary value; the one this operation marked wins."""
    if len(winners) > 1:
        raise InvalidValue(f"At most one value of {attr.name} may be primary.")
    if winners:
        for item in items:
            if item is not winners[0] and item.get("primary") is True:
                item["primary"] = False
    check_one_primary(attr, items)


# ---------------------------------------------------------------- remove


def _remove(state: _State, target: _Target, value: Any) -> None:
    """RFC 7644 §3.5.2.2. Making a required attribute unassigned is a mutability error."""
    attr = target.attr
    if attr.required and target.sub is None and target.value_filter is None:
        raise Mutability(f"{attr.name} is required and cannot be removed.")
    container = state.existing(target.schema)
    if container is None or attr.name not in container:
        return
    if not attr.multi_valued:
        current = container[attr.name]
        if target.sub is None:
            del container[attr.name]
        elif isinstance(current, dict):
            current.pop(target.sub.name, None)
        return
    items = _items(container, attr)
    if target.value_filter is None and target.sub is None:
        if value is None:
            del container[attr.name]
        else:  # remove only the listed values
            listed: list[dict[str, Any]] = canonical_value(attr, value) or []
            container[attr.name] = [
                i for i in items if not any(_same_value(i, v, attr) for v in listed)
            ]
        return
    if target.sub is None:  # §3.5.2.2: no match is not an error; the values are gone.
        container[attr.name] = [i for i in items if not _selects(target, i)]
        return
    for item in items:
        if _selects(target, item):
            item.pop(target.sub.name, None)


# ---------------------------------------------------------------- members and password


def _fold_members(change: MemberChange, op: str, target: _Target, value: Any) -> None:
    """Fold one operation on Group `members` into `change`, in order."""
    if target.sub is not None:
        raise InvalidPath(
            "Paths to members' sub-attributes are not supported; "
            'use members or members[value eq "id"].'
        )
    if target.value_filter is not None:
        if op != "remove":
            raise InvalidPath("A filter on members is supported only by remove.")
        for ident in _member_ids(target.value_filter):
            _drop_member(change, ident)
        return
    if op == "remove" and value is not None:
        for member in _members(value):
            _drop_member(change, member["value"])
        return
    if op in ("replace", "remove"):  # remove without a value: every member goes.
        change.replace_all = True
        change.add.clear()
        change.display.clear()
        change.remove.clear()
        if op == "remove":
            return
    for member in _members(value):
        change.put(member)


def _drop_member(change: MemberChange, ident: str) -> None:
    change.add.pop(ident, None)
    change.display.pop(ident, None)
    change.remove.add(ident)


def _members(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise InvalidValue("members must be a list of objects with a value.")
    return [canonical_member(v) for v in value if v is not None]


def _member_ids(node: Any) -> list[str]:
    """The ids of `value eq "id"` terms joined by `or`: the only member filters supported."""
    if isinstance(node, ast.Filter) and not node.negated and node.namespace is None:
        return _member_ids(node.expr)
    if isinstance(node, ast.LogExpr) and node.op.lower() == "or":
        return _member_ids(node.expr1) + _member_ids(node.expr2)
    if (
        isinstance(node, ast.AttrExpr)
        and node.value.lower() == "eq"
        and isinstance(node.attr_path.attr_name, str)
        and node.attr_path.attr_name.lower() == "value"
        and node.attr_path.sub_attr is None
        and node.comp_value is not None
        and isinstance(node.comp_value.value, str)
    ):
        return [node.comp_value.value]
    raise InvalidFilter('Filters on members support only value eq "id", joined by or.')


def _password(op: str, value: Any) -> str:
    """password is writeOnly (RFC 7643 §4.1.1): returned to the caller to hash, never stored."""
    if op == "remove" or value is None:
        raise Mutability("password cannot be removed; replace it instead.")
    if not isinstance(value, str) or not value:
        raise InvalidValue("password must be a non-empty string.")
    return value


# ---------------------------------------------------------------- helpers


def _is_members(rtype: ResourceType, attr: Attribute) -> bool:
    return rtype.name == "Group" and attr.name == "members"


def _is_read_only(target: _Target) -> bool:
    return target.attr.mutability == "readOnly" or (
        target.sub is not None and target.sub.mutability == "readOnly"
    )


def _items(container: dict[str, Any], attr: Attribute) -> list[dict[str, Any]]:
    items = container.get(attr.name)
    if not isinstance(items, list):
        items = container[attr.name] = []
    return items


def _selects(target: _Target, item: dict[str, Any]) -> bool:
    """`attr.sub` without a filter selects every value."""
    if target.value_filter is None:
        return True
    return filter_eval.matches(target.value_filter, item, target.attr)


def _same_value(item: dict[str, Any], other: dict[str, Any], attr: Attribute) -> bool:
    """Two values are the same if their `value` sub-attributes are equal (caseExact
    respected), or, for values without one (addresses), if they are equal as a whole."""
    if "value" not in other:
        return item == other
    a, b = item.get("value"), other["value"]
    sub = attr.sub("value")
    if isinstance(a, str) and isinstance(b, str) and sub is not None and not sub.case_exact:
        return a.casefold() == b.casefold()
    return bool(a == b)


def _tidy(doc: dict[str, Any], rtype: ResourceType) -> None:
    """Drop what became unassigned (empty values, lists, objects, extensions) and keep the
    `schemas` list in step with the extension objects present (RFC 7643 §3)."""
    for schema in rtype.all_schemas():
        container = doc if schema is rtype.schema else doc.get(schema.id)
        if not isinstance(container, dict):
            continue
        for attr in schema.attributes:
            value = container.get(attr.name)
            if isinstance(value, list):
                value = container[attr.name] = [v for v in value if v != {}]
            if value is None or value == [] or value == {}:
                container.pop(attr.name, None)
    schemas = doc.get("schemas")
    for extension in rtype.extensions:
        present = bool(doc.get(extension.id))
        if not present:
            doc.pop(extension.id, None)
        if isinstance(schemas, list):
            if present and extension.id not in schemas:
                schemas.append(extension.id)
            elif not present and extension.id in schemas:
                schemas.remove(extension.id)
