"""`attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5) with the `returned` rules of
RFC 7643 §2.4: "always" is always returned, "never" never, "request" only when asked for."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from scim_server.errors import InvalidValue
from scim_server.scim.schema import COMMON, ResourceType, Schema, resolve

ALWAYS = ("id", "schemas")


@dataclass(frozen=True)
class Projection:
    """Parsed from the query: (schema id, attribute, sub-attribute or None) triples."""

    include: frozenset[tuple[str, str, str | None]] | None
    exclude: frozenset[tuple[str, str, str | None]]

    def wants(self, schema: Schema, attr: str) -> bool:
        """Whether a top-level attribute may appear; lets callers skip loading it."""
        if self.include is not None:
            return any(s == schema.id and a == attr for s, a, _ in self.include)
        if (schema.id, attr, None) in self.exclude:
            return False
        found = schema.attr(attr)
        return found is None or found.returned not in ("request", "never")

    def wants_any(self, schema: Schema, attrs: Iterable[str]) -> bool:
        """Whether any of these top-level attributes of `schema` may appear."""
        return any(self.wants(schema, a) for a in attrs)


def everything(rtype: ResourceType) -> Projection:
    """Every attribute that is ever returned, those returned on request included: for the
    server's own reads (a write's snapshot, a write's answer before the client's projection
    is applied to it), never a client's default."""
    core = rtype.schema.id
    include = {(core, a.name, None) for a in COMMON}
    include |= {(s.id, a.name, None) for s in rtype.all_schemas() for a in s.attributes}
    return Projection(include=frozenset(include), exclude=frozenset())


def parse(
    rtype: ResourceType, attributes: str | list[str] | None, excluded: str | list[str] | None
) -> Projection:
    return Projection(
        include=frozenset(_paths(rtype, attributes)) if attributes else None,
        exclude=frozenset(_paths(rtype, excluded)) if excluded else frozenset(),
    )


def _paths(rtype: ResourceType, raw: str | list[str]) -> list[tuple[str, str, str | None]]:
    if not isinstance(raw, list | str):
        raise InvalidValue("attributes and excludedAttributes must be a list of names or a string.")
    items = raw if isinstance(raw, list) else raw.split(",")
    out: list[tuple[str, str, str | None]] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidValue("attributes must be strings.")
        item = item.strip()
        if not item:
            continue
        extension = rtype.extension(item)
        if extension is not None:  # an extension's URN names all of its attributes
            out.extend((extension.id, a.name, None) for a in extension.attributes)
            continue
        found = resolve(rtype, item)
        if found is None:
            # RFC 7644 §3.4.2.5 does not make an unknown name an error; it selects nothing.
            continue
        schema, attr, sub = found
        out.append((schema.id, attr.name, sub.name if sub else None))
    return out


def apply(doc: dict[str, Any], rtype: ResourceType, projection: Projection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in ALWAYS:
            out[key] = value
            continue
        schema = rtype.extension(key)
        if schema is not None and schema.id == key:
            kept = _project_object(value, schema, projection)
            if kept:
                out[key] = kept
            continue
        kept_value = _project_attr(rtype.schema, key, value, projection)
        if kept_value is not None:
            out[key] = kept_value
    # Drop extension URNs from `schemas` when their object was projected away.
    if "schemas" in out:
        out["schemas"] = [s for s in out["schemas"] if s == rtype.schema.id or s in out]
    return out


def _project_object(obj: dict[str, Any], schema: Schema, projection: Projection) -> dict[str, Any]:
    out = {}
    for key, value in obj.items():
        kept = _project_attr(schema, key, value, projection)
        if kept is not None:
            out[key] = kept
    return out


def _project_attr(schema: Schema, key: str, value: Any, projection: Projection) -> Any:
    if projection.include is None and not projection.exclude:
        # No attributes or excludedAttributes (nearly every request): what goes depends only
        # on the attribute, so it is worked out once.
        dropped = _default_drop(schema, key)
        if dropped is None:
            return None
        return _strip_subs(value, dropped, None) if dropped else value
    attr = schema.attr(key)
    if key == "meta" or key == "externalId":
        returned = "default"
    elif attr is None:
        return None
    else:
        returned = attr.returned
    if returned == "never":
        return None
    if returned == "always":
        return value
    inc, exc = projection.include, projection.exclude
    sid = schema.id
    if (sid, key, None) in exc:
        return None
    asked = {s for i, k, s in inc or () if i == sid and k == key and s}
    # Sub-attributes returned "never", or "request" and not asked for, are always dropped.
    drop = {s for i, k, s in exc if i == sid and k == key and s}
    if attr is not None:
        drop |= {
            sub.name
            for sub in attr.sub_attributes
            if sub.returned == "never" or (sub.returned == "request" and sub.name not in asked)
        }
    if inc is not None:
        if (sid, key, None) in inc:
            return _strip_subs(value, drop, None)
        return _strip_subs(value, drop, asked) if asked else None
    if returned == "request":
        return None
    return _strip_subs(value, drop, None) if drop else value


_DEFAULT_DROPS: dict[tuple[str, str], frozenset[str] | None] = {}


def _default_drop(schema: Schema, key: str) -> frozenset[str] | None:
    """_project_attr under the default projection: None when the attribute goes, else the
    sub-attributes that go (none: the value stays as it is)."""
    cache_key = (schema.id, key)
    if cache_key in _DEFAULT_DROPS:
        return _DEFAULT_DROPS[cache_key]
    attr = schema.attr(key)
    returned = "default" if key == "meta" or key == "externalId" else attr and attr.returned
    drop: frozenset[str] | None
    if returned is None or returned in ("never", "request"):
        drop = None
    elif returned == "always" or attr is None:
        drop = frozenset()
    else:
        drop = frozenset(
            sub.name for sub in attr.sub_attributes if sub.returned in ("never", "request")
        )
    if len(_DEFAULT_DROPS) < 1024:  # keys are attribute names: a handful
        _DEFAULT_DROPS[cache_key] = drop
    return drop


def _strip_subs(value: Any, drop: AbstractSet[str], keep: set[str] | None) -> Any:
    def one(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        return {k: v for k, v in item.items() if k not in drop and (keep is None or k in keep)}

    # Only what stripping emptied goes: a value such as `active: false` stays.
    if isinstance(value, list):
        items = [one(v) for v in value]
        return [i for i in items if i != {}] or None
    result = one(value)
    return None if result == {} else result
