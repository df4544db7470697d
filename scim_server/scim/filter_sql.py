"""SCIM filters (RFC 7644 §3.4.2.2) and sortBy (§3.4.2.3) as SQLAlchemy expressions.

`to_sql(tree, rtype)` turns a tree from `filter_parser.parse_filter` into one boolean
expression over the models; `sort_column(rtype, sort_by)` gives the expression to ORDER BY.
Both are pure: no session, no Flask, no SQL text. Values are always bound parameters.

Only the attributes of the allowlists below (`USER_FILTERABLE`, `GROUP_FILTERABLE`) can be
filtered on; anything else is 400 invalidFilter. Data types and caseExact come from the schema
definitions (schema.py), so the allowlist only says where each attribute lives.

Semantics that SQL does not give for free:
- Two-valued logic. SCIM has no "unknown": `not (title eq "x")` must match a user without a
  title. Every comparison on a nullable column is guarded (`col IS NOT NULL AND …`, and
  `col IS NULL OR …` for `ne`), so no term ever evaluates to NULL and `not` is plain negation.
- Multi-valued attributes are rows (user_values, group_members): a term is EXISTS over the
  rows, and everything inside `attr[...]`, plus a trailing `.sub op value`, applies to one row.
- Case: caseExact=false attributes compare lower-cased on both sides, through the indexed
  lower-cased copy where the model keeps one (users.user_name_ci, groups.display_name_ci,
  user_values.value_ci). Python lower-cases the value; SQLite's lower() only folds ASCII, so
  non-ASCII letters fold alike on both backends only for the columns with a lower-cased copy.
- Ordering (gt/ge/lt/le, sortBy) follows the database's collation, so that a `gt` filter and
  a sort agree. RFC 7644 §3.4.2.3 asks for code point order, "no specific locale implied":
  SQLite's BINARY gives it; on PostgreSQL create the database with a "C" collation.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from scim2_filter_parser import ast
from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select, true
from sqlalchemy.orm import QueryableAttribute, aliased, join

from models import Group, GroupMember, User, UserValue
from scim_server.errors import InvalidFilter, InvalidValue
from scim_server.scim.schema import (
    ENTERPRISE_SCHEMA,
    GROUP_TYPE,
    USER_TYPE,
    Attribute,
    ResourceType,
    resolve,
)

ORDERING = frozenset({"gt", "ge", "lt", "le"})
SUBSTRING = frozenset({"co", "sw", "ew"})
OPERATORS = frozenset({"eq", "ne", "pr"}) | ORDERING | SUBSTRING

# mapping.doc_to_user_values keeps this many characters of user_values.value_ci.
VALUE_CI_LENGTH = 512


# --- Where each attribute lives ---------------------------------------------------------------


@dataclass(frozen=True)
class _Col:
    """A column of the resource's own row."""

    column: QueryableAttribute[Any]
    # A complete lower-cased copy with an index: caseExact=false comparisons use it as is.
    folded: QueryableAttribute[Any] | None = None


@dataclass(frozen=True)
class _RowCol:
    """A column of the rows holding a multi-valued attribute, by its name on the row source."""

    name: str
    folded: str | None = None
    folded_max: int | None = None  # the folded copy keeps at most this many characters


@dataclass(frozen=True)
class _Const:
    """A value every resource of the type shares (meta.resourceType, groups.type)."""

    value: str


@dataclass(frozen=True)
class _Version:
    """meta.version: the weak ETag W/"n" of an integer column (RFC 7644 §3.14)."""

    column: QueryableAttribute[Any]


Field = _Col | _RowCol | _Const | _Version

_VALUE_SUBS: Mapping[str, _RowCol] = {
    "value": _RowCol("value", folded="value_ci", folded_max=VALUE_CI_LENGTH),
    "display": _RowCol("display"),
    "type": _RowCol("type"),
    "primary": _RowCol("primary"),
}
_ADDRESS_SUBS: Mapping[str, _RowCol] = {
    "formatted": _RowCol("formatted"),
    "streetAddress": _RowCol("street_address"),
    "locality": _RowCol("locality"),
    "region": _RowCol("region"),
    "postalCode": _RowCol("postal_code"),
    "country": _RowCol("country"),
    "display": _RowCol("display"),
    "type": _RowCol("type"),
    "primary": _RowCol("primary"),
}
# Multi-valued User attributes stored in user_values, keyed by user_values.attr.
VALUE_ATTRS = (
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "entitlements",
    "roles",
    "x509Certificates",
)
_E = ENTERPRISE_SCHEMA + ":"

# Canonical attribute path → where it lives. Not listed, not filterable: notably `password`
# (RFC 7643 §4.1.1 allows, but does not require, equality filters on it; we store a salted
# hash, which SQL cannot compare), meta.location and the $ref sub-attributes (built from the
# request's base URL), members.display and manager.displayName (they live on other rows).
USER_FILTERABLE: Mapping[str, Field] = {
    "id": _Col(User.id),
    "externalId": _Col(User.external_id),
    "userName": _Col(User.user_name, folded=User.user_name_ci),
    "name.formatted": _Col(User.name_formatted),
    "name.familyName": _Col(User.name_family),
    "name.givenName": _Col(User.name_given),
    "name.middleName": _Col(User.name_middle),
    "name.honorificPrefix": _Col(User.name_prefix),
    "name.honorificSuffix": _Col(User.name_suffix),
    "displayName": _Col(User.display_name),
    "nickName": _Col(User.nick_name),
    "profileUrl": _Col(User.profile_url),
    "title": _Col(User.title),
    "userType": _Col(User.user_type),
    "preferredLanguage": _Col(User.preferred_language),
    "locale": _Col(User.locale),
    "timezone": _Col(User.timezone),
    "active": _Col(User.active),
    **{f"{attr}.{sub}": col for attr in VALUE_ATTRS for sub, col in _VALUE_SUBS.items()},
    **{f"addresses.{sub}": col for sub, col in _ADDRESS_SUBS.items()},
    "groups.value": _RowCol("group_id"),
    "groups.display": _RowCol("display_name", folded="display_name_ci"),
    "groups.type": _Const("direct"),  # memberships are direct only (see mapping.user_to_doc)
    "meta.resourceType": _Const("User"),
    "meta.created": _Col(User.created),
    "meta.lastModified": _Col(User.last_modified),
    "meta.version": _Version(User.version),
    f"{_E}employeeNumber": _Col(User.employee_number),
    f"{_E}costCenter": _Col(User.cost_center),
    f"{_E}organization": _Col(User.organization),
    f"{_E}division": _Col(User.division),
    f"{_E}department": _Col(User.department),
    f"{_E}manager.value": _Col(User.manager_id),
}

GROUP_FILTERABLE: Mapping[str, Field] = {
    "id": _Col(Group.id),
    "externalId": _Col(Group.external_id),
    "displayName": _Col(Group.display_name, folded=Group.display_name_ci),
    "members.value": _RowCol("member_id"),
    "members.type": _RowCol("member_type"),
    "meta.resourceType": _Const("Group"),
    "meta.created": _Col(Group.created),
    "meta.lastModified": _Col(Group.last_modified),
    "meta.version": _Version(Group.version),
}

FILTERABLE: Mapping[str, Mapping[str, Field]] = {
    USER_TYPE.name: USER_FILTERABLE,
    GROUP_TYPE.name: GROUP_FILTERABLE,
}


# --- Rows of multi-valued attributes ------------------------------------------------------------


class _Rows:
    """The rows holding one resource's values of a multi-valued attribute.

    Each instance has fresh aliases, so its EXISTS never collides with the outer query or a
    sibling subquery, and correlates explicitly to the resource table.
    """

    def column(self, name: str) -> ColumnElement[Any]:
        raise NotImplementedError

    def exists(self, *where: ColumnElement[bool]) -> ColumnElement[bool]:
        raise NotImplementedError

    def first(self, column: ColumnElement[Any]) -> ColumnElement[Any] | None:
        """`column` of the primary value, else of the first value; None if not orderable."""
        return None


class _ValueRows(_Rows):
    def __init__(self, attr: str) -> None:
        self.attr = attr
        self.row = aliased(UserValue)

    def column(self, name: str) -> ColumnElement[Any]:
        attribute: QueryableAttribute[Any] = getattr(self.row, name)
        return attribute.expression

    def exists(self, *where: ColumnElement[bool]) -> ColumnElement[bool]:
        row = self.row
        return (
            select(row.id)
            .where(row.user_id == User.id, row.attr == self.attr, *where)
            .correlate(User)
            .exists()
        )

    def first(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # RFC 7644 §3.4.2.3: a multi-valued attribute sorts by its primary value if any, or
        # else by the first value in the list.
        row = self.row
        return (
            select(column)
            .where(row.user_id == User.id, row.attr == self.attr)
            .order_by(row.primary.desc(), row.position)
            .limit(1)
            .correlate(User)
            .scalar_subquery()
        )


class _UserGroupRows(_Rows):
    """A User's `groups`: its memberships, joined to the group only when a filter needs it."""

    def __init__(self) -> None:
        self.member = aliased(GroupMember)
        self.group = aliased(Group)
        self.joined = False

    def column(self, name: str) -> ColumnElement[Any]:
        if name == "group_id":
            return self.member.group_id.expression
        self.joined = True
        attribute: QueryableAttribute[Any] = getattr(self.group, name)
        return attribute.expression

    def exists(self, *where: ColumnElement[bool]) -> ColumnElement[bool]:
        member, group = self.member, self.group
        source = join(member, group, group.id == member.group_id) if self.joined else member
        return (
            select(member.group_id)
            .select_from(source)
            .where(member.member_id == User.id, member.member_type == "User", *where)
            .correlate(User)
            .exists()
        )


class _GroupMemberRows(_Rows):
    def __init__(self) -> None:
        self.member = aliased(GroupMember)

    def column(self, name: str) -> ColumnElement[Any]:
        attribute: QueryableAttribute[Any] = getattr(self.member, name)
        return attribute.expression

    def exists(self, *where: ColumnElement[bool]) -> ColumnElement[bool]:
        member = self.member
        return (
            select(member.member_id)
            .where(member.group_id == Group.id, *where)
            .correlate(Group)
            .exists()
        )


_ROWS: Mapping[str, Mapping[str, Callable[[], _Rows]]] = {
    USER_TYPE.name: {
        **{attr: partial(_ValueRows, attr) for attr in (*VALUE_ATTRS, "addresses")},
        "groups": _UserGroupRows,
    },
    GROUP_TYPE.name: {"members": _GroupMemberRows},
}


# --- Public API -----------------------------------------------------------------------------------


def to_sql(tree: ast.Filter, rtype: ResourceType) -> ColumnElement[bool]:
    """The WHERE clause for a parsed filter on resources of `rtype` (User or Group).

    Raises InvalidFilter for attributes outside the allowlist, operators that do not apply to
    the attribute's type and values of the wrong type.
    """
    return _Translator(rtype).filter(tree, None)


def sort_column(rtype: ResourceType, sort_by: str) -> ColumnElement[Any]:
    """The expression to ORDER BY for `sortBy` (RFC 7644 §3.4.2.3).

    caseExact=false strings sort case-insensitively (their lower-cased form); a multi-valued
    attribute sorts by its primary, else first, value. Raises InvalidValue for anything else.
    """
    translator = _Translator(rtype)
    refused = InvalidValue(f"The attribute '{sort_by}' cannot be used to sort.")
    try:
        path = translator.resolve(sort_by.strip())
    except InvalidFilter:
        raise refused from None
    if path.sub is None and path.attr.type == "complex":
        value = path.attr.sub("value")
        if value is None:
            raise refused
        path = _Path(path.prefix, path.attr, value)
    field = translator.fields.get(path.key)
    target = path.target
    insensitive = target.type in ("string", "reference") and not target.case_exact
    if isinstance(field, _Col):
        if insensitive:
            return field.folded.expression if field.folded else func.lower(field.column)
        return field.column.expression
    if isinstance(field, _Version):
        return field.column.expression
    if isinstance(field, _RowCol):
        rows = translator.rows[path.container]()
        column = rows.column(field.name)
        if insensitive:
            column = rows.column(field.folded) if field.folded else func.lower(column)
        first = rows.first(column)
        if first is not None:
            return first
    raise refused


# --- Translation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Path:
    """A resolved attribute path, with canonical names."""

    prefix: str  # "" for the resource's core schema, else "<extension URN>:"
    attr: Attribute
    sub: Attribute | None = None

    @property
    def container(self) -> str:
        return self.prefix + self.attr.name

    @property
    def key(self) -> str:
        return self.container + (f".{self.sub.name}" if self.sub else "")

    @property
    def target(self) -> Attribute:
        return self.sub or self.attr


@dataclass(frozen=True)
class _Scope:
    """Inside `attr[...]`: names are sub-attributes of `container`, compared on `rows`
    (one row of a multi-valued attribute) or on the resource row (a single complex one)."""

    container: str
    rows: _Rows | None


@dataclass(frozen=True)
class _Term:
    path: _Path
    op: str
    value: Any


class _Translator:
    def __init__(self, rtype: ResourceType) -> None:
        if rtype.name not in FILTERABLE:
            raise ValueError(f"No filter allowlist for resource type {rtype.name!r}.")
        self.rtype = rtype
        self.fields = FILTERABLE[rtype.name]
        self.rows = _ROWS[rtype.name]

    def filter(self, node: Any, scope: _Scope | None) -> ColumnElement[bool]:
        if isinstance(node, ast.Filter):
            if node.namespace is not None:
                if scope is not None:
                    raise InvalidFilter(f"Brackets cannot be nested inside '{scope.container}[…]'.")
                expr = self.complex_term(self.container(node.namespace), node.expr, None)
            else:
                expr = self.filter(node.expr, scope)
            return not_(expr) if node.negated else expr
        if isinstance(node, ast.LogExpr):
            left, right = self.filter(node.expr1, scope), self.filter(node.expr2, scope)
            return and_(left, right) if str(node.op).lower() == "and" else or_(left, right)
        if isinstance(node, ast.AttrExpr):
            return self.attr_expr(node, scope)
        raise InvalidFilter("The filter could not be understood.")

    def resolve(self, text: str) -> _Path:
        found = resolve(self.rtype, text)
        if found is None:
            raise InvalidFilter(f"The attribute '{text}' is not filterable.")
        schema, attr, sub = found
        return _Path("" if schema is self.rtype.schema else schema.id + ":", attr, sub)

    def attr_expr(self, node: Any, scope: _Scope | None) -> ColumnElement[bool]:
        op = str(node.value).lower()
        if op not in OPERATORS:
            raise InvalidFilter(f"Unknown operator '{op}'.")
        value = None if node.comp_value is None else node.comp_value.value
        if value is None and op != "pr":
            # `attr eq null` is in the grammar but RFC 7644 gives it no meaning; read it as
            # absence (RFC 7643 §2.5: unassigned and null are equivalent).
            if op not in ("eq", "ne"):
                raise InvalidFilter(f"The operator '{op}' cannot compare with null.")
            present = self.attr_term(node.attr_path, "pr", None, scope)
            return not_(present) if op == "eq" else present
        return self.attr_term(node.attr_path, op, value, scope)

    def attr_term(
        self, path: Any, op: str, value: Any, scope: _Scope | None
    ) -> ColumnElement[bool]:
        if scope is not None:
            # RFC 7644 §3.4.2.2 valFilter: names inside brackets are sub-attributes.
            if path.uri or path.sub_attr is not None or not isinstance(path.attr_name, str):
                raise InvalidFilter(
                    f"Inside '{scope.container}[…]' name a sub-attribute of "
                    f"'{scope.container}', such as 'value' or 'type'."
                )
            resolved = self.resolve(f"{scope.container}.{path.attr_name}")
            return self.compare(_Term(resolved, op, value), scope.rows)
        if isinstance(path.attr_name, ast.Filter):
            # `emails[type eq "work"].value eq "x"`: the brackets and the comparison hold on
            # the same value.
            value_path = path.attr_name
            container = self.container(value_path.namespace)
            sub = self.resolve(f"{container.container}.{path.sub_attr.value}")
            term = _Term(sub, op, value)
            return self.complex_term(container, value_path.expr, term)
        if path.uri is None and path.sub_attr is None and str(path.attr_name).lower() == "schemas":
            return self.schemas(op, value)
        text = (
            str(path.attr_name)
            if path.sub_attr is None
            else f"{path.attr_name}.{path.sub_attr.value}"
        )
        resolved = self.resolve(f"{path.uri}:{text}" if path.uri else text)
        if resolved.sub is None and resolved.attr.type == "complex":
            if op == "pr":
                return self.present(resolved)
            # `emails eq "x"`, `members eq "id"`, `manager eq "id"`: a complex attribute
            # without a sub-attribute stands for its value.
            value_sub = resolved.attr.sub("value")
            if value_sub is None:
                raise InvalidFilter(
                    f"The attribute '{resolved.key}' is complex: compare one of its "
                    "sub-attributes instead."
                )
            resolved = _Path(resolved.prefix, resolved.attr, value_sub)
        term = _Term(resolved, op, value)
        if resolved.attr.multi_valued:
            return self.complex_term(resolved, None, term)
        return self.compare(term, None)

    def container(self, namespace: Any) -> _Path:
        """The complex attribute before `[`."""
        if namespace.sub_attr is not None or not isinstance(namespace.attr_name, str):
            raise InvalidFilter("Brackets must follow a complex attribute, such as 'emails[…]'.")
        text = f"{namespace.uri}:{namespace.attr_name}" if namespace.uri else namespace.attr_name
        path = self.resolve(text)
        if path.attr.type != "complex":
            raise InvalidFilter(f"The attribute '{path.key}' has no sub-attributes to filter on.")
        return path

    def complex_term(
        self, container: _Path, bracket: Any, term: _Term | None
    ) -> ColumnElement[bool]:
        """`bracket` (a filter inside `container[…]`) and `term` on the same value."""
        if not container.attr.multi_valued:
            scope = _Scope(container.container, None)
            parts = [self.filter(bracket, scope)] if bracket is not None else []
            if term is not None:
                parts.append(self.compare(term, None))
            return and_(true(), *parts)
        factory = self.rows.get(container.container)
        if factory is None:
            raise InvalidFilter(f"The attribute '{container.container}' is not filterable.")

        def on_one_row(with_term: bool) -> ColumnElement[bool]:
            rows = factory()
            scope = _Scope(container.container, rows)
            parts = [self.filter(bracket, scope)] if bracket is not None else []
            if with_term and term is not None:
                parts.append(self.compare(term, rows))
            return rows.exists(*parts)

        # RFC 7644 §3.4.2.2: a filter on a multi-valued attribute matches if any value does.
        found = on_one_row(with_term=True)
        if term is not None and term.op == "ne":
            # As for a single value, having no value (among those the brackets select)
            # matches `ne`.
            return or_(found, not_(on_one_row(with_term=False)))
        return found

    def present(self, path: _Path) -> ColumnElement[bool]:
        """`attr pr` on a complex attribute: some value (multi-valued) or some sub-attribute."""
        if path.attr.multi_valued:
            return self.complex_term(path, None, None)
        subs = [
            self.compare(_Term(_Path(path.prefix, path.attr, sub), "pr", None), None)
            for sub in path.attr.sub_attributes
            if f"{path.key}.{sub.name}" in self.fields
        ]
        if not subs:
            raise InvalidFilter(f"The attribute '{path.key}' is not filterable.")
        return or_(*subs)

    def schemas(self, op: str, value: Any) -> ColumnElement[bool]:
        """`schemas eq "urn:…"`: the core schema always; an extension when any of its
        attributes has a value (mapping.user_to_doc lists it then)."""
        if op == "pr":
            return true()
        if op not in ("eq", "ne") or not isinstance(value, str):
            raise InvalidFilter("'schemas' supports only eq, ne and pr with a schema URI.")
        uri = value.lower()
        found: ColumnElement[bool] = false()
        if uri == self.rtype.schema.id.lower():
            found = true()
        for extension in self.rtype.extensions:
            if uri == extension.id.lower():
                columns = [
                    field.column.is_not(None)
                    for key, field in self.fields.items()
                    if key.startswith(extension.id + ":") and isinstance(field, _Col)
                ]
                found = or_(false(), *columns)
        return found if op == "eq" else not_(found)

    def compare(self, term: _Term, rows: _Rows | None) -> ColumnElement[bool]:
        """One comparison on the resource row, or on `rows` for a multi-valued attribute."""
        path = term.path
        field = self.fields.get(path.key)
        if field is None:
            raise InvalidFilter(f"The attribute '{path.key}' is not filterable.")
        if isinstance(field, _Const):
            return _compare_constant(path, term.op, term.value, field.value)
        if isinstance(field, _Version):
            return _compare_version(path, term.op, term.value, field.column.expression)
        if isinstance(field, _Col):
            column = field.column.expression
            folded = field.folded.expression if field.folded is not None else None
            return _compare_column(path, term.op, term.value, column, folded, None)
        if rows is None:  # a multi-valued sub-attribute outside EXISTS: a bug, not the client's
            raise AssertionError(f"{path.key} needs its rows")
        folded_row = rows.column(field.folded) if field.folded is not None else None
        return _compare_column(
            path, term.op, term.value, rows.column(field.name), folded_row, field.folded_max
        )


# --- Comparisons --------------------------------------------------------------------------------


def _compare_column(
    path: _Path,
    op: str,
    value: Any,
    column: ColumnElement[Any],
    folded: ColumnElement[Any] | None,
    folded_max: int | None,
) -> ColumnElement[bool]:
    attr, name = path.target, path.key
    if attr.type == "boolean":
        # RFC 7644 §3.4.2.2: gt/ge/lt/le on a boolean is invalidFilter; co/sw/ew mean nothing.
        if op not in ("eq", "ne", "pr"):
            raise InvalidFilter(
                f"The operator '{op}' cannot be used with the boolean attribute '{name}'."
            )
        if op == "pr":
            return column.is_not(None)
        if not isinstance(value, bool):
            raise InvalidFilter(
                f"The attribute '{name}' is a boolean: compare it with true or false."
            )
        return _guarded(column, op, column == value if op == "eq" else column != value)
    if attr.type == "dateTime":
        if op in SUBSTRING:
            raise InvalidFilter(
                f"The operator '{op}' cannot be used with the dateTime attribute '{name}'."
            )
        if op == "pr":
            return column.is_not(None)
        return _guarded(column, op, _ordered(column, op, _parse_datetime(name, value)))
    # string, reference, binary
    if op == "pr":
        # RFC 7644 §3.4.2.2: pr means a non-empty value.
        return and_(column.is_not(None), column != "")
    if not isinstance(value, str):
        raise InvalidFilter(f"The attribute '{name}' is a string: compare it with a quoted string.")
    if attr.type == "binary" and op in ORDERING:
        raise InvalidFilter(
            f"The operator '{op}' cannot be used with the binary attribute '{name}'."
        )
    if attr.case_exact:
        return _guarded(column, op, _exact(column, op, value))
    lowered = value.lower()
    # RFC 7643 §2.2 caseExact=false: compare lower-cased; the lower-cased copy is indexed,
    # but a truncated copy only answers eq/ne/sw on values that fit in it.
    if folded is not None and (
        folded_max is None or (op in ("eq", "ne", "sw") and len(lowered) <= folded_max)
    ):
        return _guarded(folded, op, _folded(folded, op, lowered))
    return _guarded(column, op, _folded(func.lower(column), op, lowered))


def _guarded(
    column: ColumnElement[Any], op: str, comparison: ColumnElement[bool]
) -> ColumnElement[bool]:
    """Make a comparison two-valued: a missing value never matches, except for `ne`."""
    if not getattr(column, "nullable", True):
        return comparison
    if op == "ne":
        return or_(column.is_(None), comparison)
    return and_(column.is_not(None), comparison)


_COMPARE: Mapping[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def _ordered(column: ColumnElement[Any], op: str, value: Any) -> ColumnElement[bool]:
    comparison: ColumnElement[bool] = _COMPARE[op](column, value)
    return comparison


def _folded(target: ColumnElement[Any], op: str, lowered: str) -> ColumnElement[bool]:
    """caseExact=false: `target` and `lowered` are both lower-cased, so LIKE's own case rules
    (insensitive on SQLite, sensitive on PostgreSQL) cannot change the result."""
    if op == "co":
        return target.contains(lowered, autoescape=True)
    if op == "sw":
        return target.startswith(lowered, autoescape=True)
    if op == "ew":
        return target.endswith(lowered, autoescape=True)
    return _ordered(target, op, lowered)


def _exact(column: ColumnElement[Any], op: str, value: str) -> ColumnElement[bool]:
    """caseExact=true. SQLite's LIKE ignores ASCII case, so substring tests use functions that
    compare exactly on SQLite and PostgreSQL alike: substr() and replace()."""
    if op == "co":
        if not value:
            return true()
        # `column` contains `value` exactly when removing `value` changes it.
        return func.replace(column, value, "") != column
    if op == "sw":
        return func.substr(column, 1, len(value)) == value
    if op == "ew":
        length = func.length(column)
        return and_(length >= len(value), func.substr(column, length - len(value) + 1) == value)
    return _ordered(column, op, value)


def _compare_constant(path: _Path, op: str, value: Any, constant: str) -> ColumnElement[bool]:
    """A comparison known before the query runs (e.g. meta.resourceType)."""
    if op == "pr":
        return true() if constant else false()
    if not isinstance(value, str):
        raise InvalidFilter(
            f"The attribute '{path.key}' is a string: compare it with a quoted string."
        )
    left, right = (constant, value) if path.target.case_exact else (constant.lower(), value.lower())
    if op in SUBSTRING:
        outcome = {"co": right in left, "sw": left.startswith(right), "ew": left.endswith(right)}[
            op
        ]
    else:
        outcome = bool(_COMPARE[op](left, right))
    return true() if outcome else false()


_ETAG = re.compile(r'W/"(\d{1,18})"')


def _compare_version(
    path: _Path, op: str, value: Any, column: ColumnElement[Any]
) -> ColumnElement[bool]:
    """meta.version is caseExact; only equality means anything for an ETag."""
    if op == "pr":
        return true()
    if op not in ("eq", "ne"):
        raise InvalidFilter(f"The operator '{op}' cannot be used with '{path.key}'.")
    if not isinstance(value, str):
        raise InvalidFilter(f"The attribute '{path.key}' is a string such as 'W/\"3\"'.")
    match = _ETAG.fullmatch(value)
    if match is None:  # no resource has that version
        return false() if op == "eq" else true()
    version = int(match.group(1))
    return column == version if op == "eq" else column != version


# RFC 7643 §2.3.5: xsd:dateTime, as RFC 3339 writes it; fractional seconds and offset optional.
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?", re.IGNORECASE
)


def _parse_datetime(name: str, value: Any) -> datetime:
    """A naive UTC datetime, as the models store them; no offset means UTC."""
    example = '"2011-05-13T04:42:34Z"'
    if not isinstance(value, str) or not _DATETIME.fullmatch(value):
        raise InvalidFilter(f"The attribute '{name}' needs a date and time such as {example}.")
    try:
        moment = datetime.fromisoformat(value.upper())
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise InvalidFilter(
            f"The attribute '{name}' needs a date and time such as {example}."
        ) from None
    return moment
