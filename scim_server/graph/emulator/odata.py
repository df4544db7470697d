"""The OData the emulator understands: the query options $filter (a small allowlisted subset),
$select, $top and opaque skip/delta tokens; and instance annotations in request bodies.

https://learn.microsoft.com/en-us/graph/query-parameters and
https://learn.microsoft.com/en-us/graph/paging
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scim_server.graph.emulator.errors import BadRequest, UnsupportedQuery
from scim_server.graph.emulator.tokens import b64url, b64url_decode

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<lp>\()|(?P<rp>\))|(?P<comma>,)|(?P<word>[A-Za-z_][\w.]*))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise BadRequest(f"Invalid filter clause: syntax error at position {pos} in '{text}'.")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return out


MAX_FILTER_DEPTH = 50  # nested parentheses; deeper is a 400, never a RecursionError


class FilterParser:
    """prop eq 'v' | prop in ('a','b') | startswith(prop,'v'), joined by and/or, with ()."""

    def __init__(self, text: str, properties: set[str], resource: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.depth = 0
        self.operators: set[str] = set()
        self.properties = {p.lower(): p for p in properties}
        self.resource = resource

    def parse(self) -> Predicate:
        predicate = self._or()
        if self.pos != len(self.tokens):
            raise BadRequest("Invalid filter clause: unexpected trailing tokens.")
        return predicate

    def equality(self) -> tuple[str, str] | None:
        """(property, value) when the whole filter, once parsed, is `property eq 'value'`
        (a lookup, which an index can answer); else None."""
        kinds = [kind for kind, _ in self.tokens]
        if kinds != ["word", "word", "str"] or self.tokens[1][1].lower() != "eq":
            return None
        return self.properties[self.tokens[0][1].lower()], self.tokens[2][1][1:-1].replace(
            "''", "'"
        )

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise BadRequest("Invalid filter clause: unexpected end of expression.")
        self.pos += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token and token[0] == "word" and token[1].lower() == word:
            self.pos += 1
            return True
        return False

    # Flat lists, not nested lambdas: a long chain of or/and must not recurse per clause.
    def _or(self) -> Predicate:
        terms = [self._and()]
        while self._keyword("or"):
            terms.append(self._and())
        if len(terms) == 1:
            return terms[0]
        return lambda o: any(term(o) for term in terms)

    def _and(self) -> Predicate:
        terms = [self._term()]
        while self._keyword("and"):
            terms.append(self._term())
        if len(terms) == 1:
            return terms[0]
        return lambda o: all(term(o) for term in terms)

    def _property(self, name: str) -> str:
        prop = self.properties.get(name.lower())
        if prop is None:
            raise UnsupportedQuery(
                f"Unsupported or invalid query filter clause specified for property '{name}' "
                f"of resource '{self.resource}'."
            )
        return prop

    def _literal(self) -> Any:
        kind, value = self._next()
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "word" and value.lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[value.lower()]
        raise BadRequest(f"Invalid filter clause: '{value}' is not a literal.")

    def _term(self) -> Predicate:
        kind, value = self._next()
        if kind == "lp":
            self.depth += 1
            if self.depth > MAX_FILTER_DEPTH:
                raise BadRequest("Invalid filter clause: the expression is nested too deeply.")
            inner = self._or()
            if self._next()[0] != "rp":
                raise BadRequest("Invalid filter clause: ')' expected.")
            self.depth -= 1
            return inner
        if kind != "word":
            raise BadRequest(f"Invalid filter clause: unexpected '{value}'.")
        if value.lower() == "startswith" and self._peek() == ("lp", "("):
            self._next()
            prop = self._property(self._next()[1])
            if self._next()[0] != "comma":
                raise BadRequest("Invalid filter clause: ',' expected.")
            prefix = str(self._literal()).lower()
            if self._next()[0] != "rp":
                raise BadRequest("Invalid filter clause: ')' expected.")
            return lambda o: str(o.get(prop) or "").lower().startswith(prefix)
        prop = self._property(value)
        if self._keyword("eq"):
            literal = self._literal()
            return lambda o: _equal(o.get(prop), literal)
        if self._keyword("ne"):
            self.operators.add("ne")
            literal = self._literal()
            return lambda o: not _equal(o.get(prop), literal)
        if self._keyword("in"):
            if self._next()[0] != "lp":
                raise BadRequest("Invalid filter clause: '(' expected.")
            values = [self._literal()]
            while self._peek() == ("comma", ","):
                self._next()
                values.append(self._literal())
            if self._next()[0] != "rp":
                raise BadRequest("Invalid filter clause: ')' expected.")
            return lambda o: any(_equal(o.get(prop), v) for v in values)
        raise UnsupportedQuery("Unsupported Query.")


def _equal(value: Any, literal: Any) -> bool:
    # Directory string comparisons are case-insensitive (a UPN matches in any case).
    if isinstance(value, str) and isinstance(literal, str):
        return value.lower() == literal.lower()
    return bool(value == literal)


ADVANCED_ONLY = (
    "Operator '{op}' is not supported because the required parameters might be missing. Try "
    "adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to "
    "https://aka.ms/graph-docs/advanced-queries for more information"
)


@dataclass(frozen=True)
class Filter:
    """A parsed $filter: `test` says whether an object's properties match; `equality` is
    (property, value) when the filter is a single `property eq 'value'`."""

    test: Predicate
    equality: tuple[str, str] | None


def parse_filter(
    text: str | None, properties: set[str], resource: str, *, advanced: bool = True
) -> Filter | None:
    """$filter, parsed. `ne` is an advanced query (aad-advanced-queries): without
    ConsistencyLevel: eventual and $count=true (`advanced` False) it is a 400."""
    if not text:
        return None
    parser = FilterParser(text, properties, resource)
    predicate = parser.parse()
    if not advanced and "ne" in parser.operators:
        raise UnsupportedQuery(ADVANCED_ONLY.format(op="ne"))
    return Filter(predicate, parser.equality())


def is_advanced(args: dict[str, str], headers: dict[str, str]) -> bool:
    """ConsistencyLevel: eventual and $count=true, the advanced query parameters."""
    return (
        headers.get("consistencylevel", "").lower() == "eventual"
        and args.get("$count", "").lower() == "true"
    )


def check_unsupported_options(args: dict[str, str], headers: dict[str, str]) -> None:
    """$search needs ConsistencyLevel: eventual (Graph's 400 otherwise); the emulator does not
    implement it, and says so rather than ignoring it."""
    if "$search" in args:
        if headers.get("consistencylevel", "").lower() != "eventual":
            raise UnsupportedQuery(
                "Request with $search query parameter only works through MSGraph with a "
                "special request header: 'ConsistencyLevel: eventual'"
            )
        raise UnsupportedQuery("The Graph emulator does not support $search.")
    if "$count" in args and args["$count"].lower() not in ("true", "false"):
        raise BadRequest(f"Invalid value '{args['$count']}' for $count: true or false expected.")


def parse_orderby(text: str | None, sortable: set[str]) -> list[tuple[str, bool]]:
    """[(property, descending)] for `$orderby=prop [asc|desc], ...`, only `sortable` ones."""
    if text is None:
        return []
    keys = []
    for clause in text.split(","):
        words = clause.split()
        if not 1 <= len(words) <= 2 or (len(words) == 2 and words[1].lower() not in DIRECTIONS):
            raise BadRequest(f"Invalid $orderby clause '{clause.strip()}'.")
        if words[0] not in sortable:
            raise UnsupportedQuery("Sorting not supported for current query.")
        keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return keys


DIRECTIONS = ("asc", "desc")


def parse_top(text: str | None, default: int = 100) -> int:
    """$top runs 1-999 for directory objects."""
    if text is None:
        return default
    try:
        top = int(text)
    except ValueError:
        raise BadRequest(f"Invalid page size specified: '{text}'.") from None
    if not 1 <= top <= 999:
        raise BadRequest(
            f"Invalid page size specified: '{text}'. Must be between 1 and 999 inclusive."
        )
    return top


def parse_select(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [p.strip() for p in text.split(",") if p.strip()]


def encode_token(data: dict[str, Any]) -> str:
    return b64url(json.dumps(data, separators=(",", ":")).encode())


INVALID_TOKEN = "The specified page token value has expired or is invalid."


def decode_token(text: str) -> dict[str, Any]:
    try:
        data = json.loads(b64url_decode(text))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BadRequest(INVALID_TOKEN)
    return data


def token_int(data: dict[str, Any], key: str, *, nullable: bool = False) -> Any:
    """A counter from a decoded token: a non-negative int (or None if `nullable`), else 400.
    Tokens are opaque to clients, but one they forged or cut must not become a 500."""
    value = data.get(key, ...)
    if value is None and nullable:
        return None
    if type(value) is not int or value < 0:
        raise BadRequest(INVALID_TOKEN)
    return value


# ---------------------------------------------------------------------- instance annotations

# OData JSON Format 4.01 (OASIS), section 20 "Instance Annotations": an annotation is a
# name/value pair named `@namespace.term` (it annotates the object it is in) or
# `property@namespace.term` (it annotates that property), the term optionally followed by
# `#qualifier`; control information (section 4.5: `@odata.type`, `@odata.context`,
# `@odata.id`, ...) has the same shape. Section 22 "Extensibility": annotations may be added to
# any JSON object, and "the receiving party MUST ignore unknown annotations". Graph does so: its
# docs send `"@odata.type": "#microsoft.graph.user"` in POST /users bodies
# (microsoft-graph-docs-contrib, api-reference/v1.0/api/intune-mam-user-create.md; beta
# user-post-users.md uses it to pick the type created), and Microsoft's SDKs send it in every
# create and update, nested objects (passwordProfile) included. What Graph refuses is an unknown
# *property*: a name without `@namespace.term`.
_ANNOTATION = re.compile(r"^(?:[A-Za-z_]\w*)?@[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:#\w+)?$")
# A binding (section 8.5 "Bind Operation"), e.g. `members@odata.bind`: control information that
# carries data, so it stays in the body for the handler to act on (or to refuse).
_BIND = "@odata.bind"


def is_annotation(name: str) -> bool:
    """`@namespace.term[#qualifier]` or `property@namespace.term[#qualifier]`."""
    return bool(_ANNOTATION.match(name))


def _without_annotations(value: Any) -> Any:
    if isinstance(value, list):
        return [_without_annotations(item) for item in value]
    if isinstance(value, dict):
        return {
            name: _without_annotations(item)
            for name, item in value.items()
            if not is_annotation(name) or name.endswith(_BIND)
        }
    return value


def split_annotations(body: Any) -> tuple[Any, dict[str, Any]]:
    """(the body with its instance annotations removed at every depth, bindings kept; the
    annotations of its top-level object, such as a reference's `@odata.id`)."""
    if not isinstance(body, dict):
        return _without_annotations(body), {}
    top = {k: v for k, v in body.items() if is_annotation(k) and not k.endswith(_BIND)}
    return _without_annotations(body), top
