# mypy: disable-error-code="name-defined,no-redef,untyped-decorator,misc"
"""SCIM filter and PATCH path parsing (RFC 7644 §3.4.2.2, §3.5.2) on scim2-filter-parser.

We extend its lexer and restate its grammar, keeping its AST nodes:
- strings are JSON strings, so `"a \\"b\\""` is a valid compValue (0.7.0 rejects it);
- numbers are JSON numbers (0.7.0 lexes a single digit);
- `and` binds tighter than `or` (0.7.0 gives them equal precedence), and `not` binds tightest.

The AST (scim2_filter_parser.ast):
    Filter(expr, negated, namespace)   namespace is an AttrPath for `attr[...]`, else None
    LogExpr(op, expr1, expr2)          op is "and" / "or" in the case the client sent
    AttrExpr(value, attr_path, comp_value)   value is the operator ("eq", "pr", …)
    AttrPath(attr_name, sub_attr, uri) attr_name may be a Filter for `emails[...].value`
    SubAttr(value)
    CompValue(value)                   value is a Python str, int, float, bool or None
"""

# ruff: noqa: F821, F811
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from scim2_filter_parser import ast
from scim2_filter_parser.lexer import SCIMLexer
from sly import Parser

from scim_server.errors import InvalidFilter, InvalidPath

# Limits on what a client may ask the parser, the SQL translation and the database to build:
# IdPs send one or two comparisons; these are far beyond that, and far below the depth at
# which the recursive walks of a filter tree (ours and SQLAlchemy's) exhaust the stack.
MAX_FILTER_LENGTH = 65_536  # characters
MAX_FILTER_COMPARISONS = 200  # `and` / `or` join at most this many comparisons
MAX_FILTER_DEPTH = 64  # parentheses and brackets nested in one another
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class FilterLexer(SCIMLexer):
    tokens = SCIMLexer.tokens

    @_(r'"(?:[^"\\]|\\.)*"')
    def COMP_VALUE(self, t: Any) -> Any:
        # RFC 7644 §3.4.2.2: compValue follows JSON (RFC 7159), escapes included.
        t.value = json.loads(t.value)
        if "\x00" in t.value:
            raise InvalidFilter("A filter value must not contain NUL characters.")
        if _SURROGATE.search(t.value):
            # A lone \ud800 escape is no Unicode string: nothing stored can equal it.
            raise InvalidFilter("A filter value must not contain a lone surrogate escape.")
        return t

    @_(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
    def NUMBER(self, t: Any) -> Any:
        t.value = json.loads(t.value)
        return t

    def error(self, t: Any) -> None:
        raise InvalidFilter(f"Unexpected character {t.value[0]!r} at position {t.index}.")


class FilterParser(Parser):
    tokens = FilterLexer.tokens

    # RFC 7644 §3.4.2.2: "not" over "and" over "or".
    precedence = (
        ("left", OR),
        ("left", AND),
        ("right", NOT),
    )

    @_("attr_exp", "log_exp", "value_path")
    def filter(self, p: Any) -> Any:
        return ast.Filter(p[0], False, None)

    @_("LPAREN filter RPAREN")
    def filter(self, p: Any) -> Any:
        return ast.Filter(p.filter, False, None)

    @_("NOT LPAREN filter RPAREN")
    def filter(self, p: Any) -> Any:
        return ast.Filter(p.filter, True, None)

    @_("attr_path LBRACKET filter RBRACKET")
    def value_path(self, p: Any) -> Any:
        return ast.Filter(p.filter, False, p.attr_path)

    @_(
        "attr_path EQ comp_value",
        "attr_path NE comp_value",
        "attr_path CO comp_value",
        "attr_path SW comp_value",
        "attr_path EW comp_value",
        "attr_path GT comp_value",
        "attr_path LT comp_value",
        "attr_path GE comp_value",
        "attr_path LE comp_value",
    )
    def attr_exp(self, p: Any) -> Any:
        return ast.AttrExpr(p[1].lower(), p.attr_path, p.comp_value)

    @_("attr_path PR")
    def attr_exp(self, p: Any) -> Any:
        return ast.AttrExpr("pr", p.attr_path, None)

    @_("filter OR filter", "filter AND filter")
    def log_exp(self, p: Any) -> Any:
        return ast.LogExpr(p[1].lower(), p.filter0, p.filter1)

    @_("COMP_VALUE", "NUMBER")
    def comp_value(self, p: Any) -> Any:
        return ast.CompValue(p[0])

    @_("TRUE")
    def comp_value(self, p: Any) -> Any:
        return ast.CompValue(True)

    @_("FALSE")
    def comp_value(self, p: Any) -> Any:
        return ast.CompValue(False)

    @_("NULL")
    def comp_value(self, p: Any) -> Any:
        return ast.CompValue(None)

    @_("ATTRNAME")
    def attr_path(self, p: Any) -> Any:
        return ast.AttrPath(p[0], None, None)

    @_("ATTRNAME SUBATTR")
    def attr_path(self, p: Any) -> Any:
        return ast.AttrPath(p[0], ast.SubAttr(p[1]), None)

    @_("SCHEMA_URI ATTRNAME")
    def attr_path(self, p: Any) -> Any:
        return ast.AttrPath(p[1], None, p[0])

    @_("SCHEMA_URI ATTRNAME SUBATTR")
    def attr_path(self, p: Any) -> Any:
        return ast.AttrPath(p[1], ast.SubAttr(p[2]), p[0])

    @_("value_path SUBATTR")
    def attr_path(self, p: Any) -> Any:
        # `emails[type eq "work"].value eq "x"`: a sub-attribute of the matched values.
        return ast.AttrPath(p.value_path, ast.SubAttr(p[1]), None)

    def error(self, p: Any) -> None:
        if p is None:
            raise InvalidFilter("The filter ends unexpectedly.")
        raise InvalidFilter(f"Unexpected {p.value!r} at position {p.index}.")


def parse_filter(text: str) -> ast.Filter:
    """Parse a filter; any failure is 400 invalidFilter."""
    if not text or not text.strip():
        raise InvalidFilter("The filter is empty.")
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(f"The filter is longer than {MAX_FILTER_LENGTH} characters.")
    try:
        tokens = list(FilterLexer().tokenize(text))
        _check_size(tokens)
        tree = FilterParser().parse(iter(tokens))
    except InvalidFilter:
        raise
    except Exception as exc:  # sly and json raise several types
        raise InvalidFilter(f"The filter could not be parsed: {exc}") from None
    if tree is None:
        raise InvalidFilter("The filter could not be parsed.")
    return tree


def _check_size(tokens: list[Any]) -> None:
    joins = depth = deepest = 0
    for token in tokens:
        kind = token.type
        if kind in ("AND", "OR"):
            joins += 1
        elif kind in ("LPAREN", "LBRACKET"):
            depth += 1
            deepest = max(deepest, depth)
        elif kind in ("RPAREN", "RBRACKET"):
            depth -= 1
    if joins >= MAX_FILTER_COMPARISONS:
        raise InvalidFilter(f"The filter joins more than {MAX_FILTER_COMPARISONS} comparisons.")
    if deepest > MAX_FILTER_DEPTH:
        raise InvalidFilter(f"The filter nests more than {MAX_FILTER_DEPTH} levels deep.")


@dataclass(frozen=True)
class PatchPath:
    """RFC 7644 §3.5.2: PATH = attrPath / valuePath [subAttr].

    `attr` is the attribute name with its schema URN when one was given
    (`urn:...:enterprise:2.0:User:manager`), `sub_attr` the sub-attribute if any,
    and `value_filter` the filter inside brackets, evaluated against each value.
    """

    attr: str
    sub_attr: str | None = None
    value_filter: ast.Filter | None = None


def parse_path(text: str) -> PatchPath:
    if not isinstance(text, str) or not text.strip():
        raise InvalidPath("The path is empty.")
    text = text.strip()
    if "[" not in text:
        # attrPath: [URI ":"] ATTRNAME *1subAttr. The URN may contain dots (`2.0`), so split
        # the sub-attribute off the part after the last colon only.
        uri, colon, name = text.rpartition(":")
        head, dot, sub = name.partition(".")
        if not head or (dot and not sub) or "." in sub or " " in text:
            raise InvalidPath(f"Invalid path {text!r}.")
        return PatchPath(f"{uri}{colon}{head}", sub or None, None)
    try:
        # Parse `attr[filter]` or `attr[filter].sub` as the filter `attr[filter]` (+ pr).
        probe = text + " pr" if text.endswith("]") is False else text
        tree = parse_filter(probe)
    except InvalidFilter as exc:
        raise InvalidPath(f"Invalid path {text!r}: {exc.detail}") from None
    node = tree.expr
    sub_attr: str | None = None
    if isinstance(node, ast.AttrExpr):  # `attr[filter].sub pr`
        path = node.attr_path
        if not isinstance(path.attr_name, ast.Filter) or path.sub_attr is None:
            raise InvalidPath(f"Invalid path {text!r}.")
        sub_attr = path.sub_attr.value
        node = path.attr_name
    if not isinstance(node, ast.Filter) or node.namespace is None:
        raise InvalidPath(f"Invalid path {text!r}.")
    ns = node.namespace
    if ns.sub_attr is not None or isinstance(ns.attr_name, ast.Filter):
        raise InvalidPath(f"Invalid path {text!r}.")
    attr = f"{ns.uri}:{ns.attr_name}" if ns.uri else ns.attr_name
    return PatchPath(
        attr,
        sub_attr,
        node.expr if isinstance(node.expr, ast.Filter) else ast.Filter(node.expr, False, None),
    )
