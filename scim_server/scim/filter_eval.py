"""Evaluate a value filter (RFC 7644 §3.4.2.2) against one element of a multi-valued attribute.

This is the filter inside brackets in a PATCH path, e.g. `emails[type eq "work"]`: its
attribute names are sub-attributes of the multi-valued attribute. Names are case-insensitive
(RFC 7643 §2.1); strings compare case-insensitively unless the sub-attribute is caseExact.
Unsupported names and comparisons raise InvalidFilter (RFC 7644 Table 9).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scim2_filter_parser import ast

from scim_server.errors import InvalidFilter
from scim_server.scim.schema import Attribute

ORDERING = ("gt", "ge", "lt", "le")
SUBSTRING = ("co", "sw", "ew")
OPERATORS = ("eq", "ne", "pr", *ORDERING, *SUBSTRING)


def matches(
    node: ast.Filter | ast.LogExpr | ast.AttrExpr, element: dict[str, Any], attr: Attribute
) -> bool:
    """Whether `element` (one value of the complex multi-valued `attr`) satisfies `node`."""
    if isinstance(node, ast.Filter):
        if node.namespace is not None:
            raise InvalidFilter("A value filter cannot contain another value filter.")
        result = matches(node.expr, element, attr)
        return not result if node.negated else result
    if isinstance(node, ast.LogExpr):
        op = node.op.lower()
        if op == "and":
            return matches(node.expr1, element, attr) and matches(node.expr2, element, attr)
        if op == "or":
            return matches(node.expr1, element, attr) or matches(node.expr2, element, attr)
        raise InvalidFilter(f"Unsupported logical operator {node.op!r}.")
    if isinstance(node, ast.AttrExpr):
        return _compare(node, element, attr)
    raise InvalidFilter("Unsupported filter expression.")


def validate(node: ast.Filter | ast.LogExpr | ast.AttrExpr, attr: Attribute) -> None:
    """Check every name and comparison in `node` up front, even if no element is evaluated."""
    if isinstance(node, ast.Filter):
        if node.namespace is not None:
            raise InvalidFilter("A value filter cannot contain another value filter.")
        validate(node.expr, attr)
    elif isinstance(node, ast.LogExpr):
        if node.op.lower() not in ("and", "or"):
            raise InvalidFilter(f"Unsupported logical operator {node.op!r}.")
        validate(node.expr1, attr)
        validate(node.expr2, attr)
    elif isinstance(node, ast.AttrExpr):
        _check_comparison(node, _sub_attribute(node, attr))
    else:
        raise InvalidFilter("Unsupported filter expression.")


def _sub_attribute(node: ast.AttrExpr, attr: Attribute) -> Attribute:
    path = node.attr_path
    if attr.type != "complex":
        raise InvalidFilter(f"{attr.name} has no sub-attributes to filter on.")
    if not isinstance(path.attr_name, str) or path.sub_attr is not None:
        raise InvalidFilter(f"Filters on {attr.name} name one sub-attribute, e.g. type.")
    sub = attr.sub(path.attr_name)
    if sub is None:
        raise InvalidFilter(f"{attr.name} has no sub-attribute {path.attr_name!r}.")
    return sub


def _check_comparison(node: ast.AttrExpr, sub: Attribute) -> None:
    op = node.value.lower()
    if op not in OPERATORS:
        raise InvalidFilter(f"Unsupported operator {node.value!r}.")
    # RFC 7644 §3.4.2.2: ordering and substring operators do not apply to booleans or binary.
    if sub.type in ("boolean", "binary") and op in ORDERING + SUBSTRING:
        raise InvalidFilter(f"{op} cannot compare the {sub.type} attribute {sub.name}.")


def _compare(node: ast.AttrExpr, element: dict[str, Any], attr: Attribute) -> bool:
    sub = _sub_attribute(node, attr)
    _check_comparison(node, sub)
    op = node.value.lower()
    actual = _lookup(element, sub.name)
    if op == "pr":
        return actual is not None and actual not in ("", [], {})
    expected = node.comp_value.value if node.comp_value is not None else None
    if op == "eq":
        return _equal(actual, expected, sub)
    if op == "ne":
        return not _equal(actual, expected, sub)
    if not isinstance(actual, str | int | float) or not isinstance(expected, str | int | float):
        return False
    if op in SUBSTRING:
        return _substring(op, actual, expected, sub)
    return _ordered(op, actual, expected, sub)


def _lookup(element: dict[str, Any], name: str) -> Any:
    if name in element:
        return element[name]
    lowered = name.lower()
    return next((v for k, v in element.items() if k.lower() == lowered), None)


def _normal(value: Any, sub: Attribute) -> Any:
    if isinstance(value, str) and sub.type == "dateTime":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, str) and not sub.case_exact:
        return value.casefold()
    return value


def _equal(actual: Any, expected: Any, sub: Attribute) -> bool:
    if expected is None:  # `eq null`: unassigned (RFC 7643 §2.5)
        return actual is None
    if actual is None or isinstance(actual, bool) != isinstance(expected, bool):
        return False
    return bool(_normal(actual, sub) == _normal(expected, sub))


def _substring(op: str, actual: Any, expected: Any, sub: Attribute) -> bool:
    if not isinstance(actual, str) or not isinstance(expected, str):
        return False
    if not sub.case_exact:
        actual, expected = actual.casefold(), expected.casefold()
    if op == "co":
        return expected in actual
    if op == "sw":
        return bool(actual.startswith(expected))
    return bool(actual.endswith(expected))


def _ordered(op: str, actual: Any, expected: Any, sub: Attribute) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return False
    have, want = _normal(actual, sub), _normal(expected, sub)
    try:
        if op == "gt":
            return bool(have > want)
        if op == "ge":
            return bool(have >= want)
        if op == "lt":
            return bool(have < want)
        return bool(have <= want)
    except TypeError:  # a string against a number, or naive against aware datetimes
        return False
