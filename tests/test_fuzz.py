"""Property-based fuzzing of the SCIM endpoint (issue 11): whatever a client sends, the answer
is never a 5xx; every 4xx is a SCIM Error (RFC 7644 §3.12) whose `status` is the HTTP status,
as application/scim+json; and a user and a group attacked only with invalid requests keep
their ETags, with no outbox event recorded for them.

Most of it runs through the Flask test client (fast); `test_fuzz_over_a_socket` sends raw
bytes to a real `scim-server serve` process, including what a test client cannot send.

The hypothesis profile is fixed for CI: derandomized (the same examples every run), no
example database, no deadline. SCIM_FUZZ_SCALE multiplies the number of examples (say 10 for
a longer local run); at 1, one run sends over 12,000 requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.http import parse_options_header

from scim_server.scim.schema import ENTERPRISE, GROUP, M365_USER, USER
from tests.conftest import SCIM, ScimClient, _token

# A failing example with a 70,000-character string is long to print, and worth printing.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
SCALE = float(os.environ.get("SCIM_FUZZ_SCALE", "1"))
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
    ],
)


def examples(n: int) -> settings:
    return settings(FUZZ, max_examples=max(1, int(n * SCALE)))


ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


# ---------------------------------------------------------------- what is checked


@dataclass
class Victims:
    """A user and a group that only invalid requests reach: their versions and outbox events
    must not move."""

    app: Flask
    user: str
    group: str
    before: tuple[int, int, int] = (0, 0, 0)

    def state(self) -> tuple[int, int, int]:
        from scim_server.db import db

        with self.app.app_context():
            user_version = db.session.execute(
                sa.text("SELECT version FROM users WHERE id = :i"), {"i": self.user}
            ).scalar_one()
            group_version = db.session.execute(
                sa.text("SELECT version FROM groups WHERE id = :i"), {"i": self.group}
            ).scalar_one()
            events = db.session.execute(
                sa.text("SELECT count(*) FROM outbox WHERE resource_id IN (:u, :g)"),
                {"u": self.user, "g": self.group},
            ).scalar_one()
            db.session.remove()
        return int(user_version), int(group_version), int(events)

    def untouched(self) -> None:
        assert self.state() == self.before, "an invalid request changed a victim"


@dataclass
class Target:
    """The resources of one fuzz test: victims (only invalid requests) and a sandbox user
    and group that anything may change or delete."""

    scim: ScimClient
    victims: Victims
    user: str
    group: str
    sent: list[int] = field(default_factory=lambda: [0])

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        must_fail: bool = False,
    ) -> Any:
        sent = {"Authorization": f"Bearer {self.scim.token}", "Content-Type": SCIM}
        sent.update(headers or {})
        sent = {k: v for k, v in sent.items() if v is not None}
        response = self.scim.client.open("/scim/v2" + path, method=method, data=body, headers=sent)
        self.sent[0] += 1
        check_scim_answer(
            response.status_code, response.content_type, response.get_data(), method, path
        )
        if must_fail:
            assert 400 <= response.status_code < 500, (method, path, response.status_code)
        return response


def check_scim_answer(
    status: int, content_type: str | None, body: bytes, method: str, path: str = ""
) -> None:
    """No 5xx; a 4xx is a SCIM Error whose status is the HTTP status. One exception: RFC 7644
    §3.11 makes /Me 501 for a provider without it (an answer about the server, not a fault)."""
    me = status == 501 and path.split("?")[0].rstrip("/").endswith("/Me")
    assert status < 500 or me, (status, body[:500])
    if status < 400 or method.upper() == "HEAD":
        return
    assert content_type == SCIM, (status, content_type, body[:300])
    error = json.loads(body)
    assert error["schemas"] == [ERROR], error
    assert error["status"] == str(status), error
    assert "scimType" not in error or isinstance(error["scimType"], str), error


def check_refused_below_flask(status: int | None, content_type: str | None, body: bytes) -> None:
    """Requests the HTTP layer refuses: those over our own limits (a request target over
    8 KiB, headers over 64 KiB: scim_server/httplimits.py) get a SCIM error; those past
    granian's own (over 64 KiB of target, 100 header fields, 1 MiB of head) or that are not
    HTTP at all get granian's bare status. Either way a 4xx, never a 5xx."""
    assert status is not None, "no answer at all"
    assert 400 <= status < 500, (status, body[:300])
    if content_type == SCIM:
        check_scim_answer(status, content_type, body, "GET")


@pytest.fixture
def target(scim: ScimClient, app: Flask) -> Target:
    victim_user = scim.user("victim@example.com", title="Target", emails=[{"value": "v@x.org"}])
    victim_group = scim.group("Victims", members=[victim_user["id"]])
    victims = Victims(app, victim_user["id"], victim_group["id"])
    victims.before = victims.state()
    user = scim.user("sandbox@example.com")
    group = scim.group("Sandbox", members=[user["id"]])
    return Target(scim, victims, user["id"], group["id"])


# ---------------------------------------------------------------- strategies

# Every kind of character: lone surrogates (json.dumps writes them as \udXXX escapes, as a
# client would) and control characters are not in st.text()'s default alphabet.
CHARS = st.characters() | st.characters(categories=["Cs"]) | st.characters(max_codepoint=0x1F)
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff x",
    "\ufeff",
    "\u202e",
    "\x1b[31m",
    "\r\n",
    "%00",
    "%ff",
    "'; DROP TABLE users; --",
    '"',
    "\\",
    "null",
    "True",
    "False",
    'W/"1"',
    "*",
    "bulkId:missing",
    "x" * 300,
    "\U0001f600" * 300,
]
TEXT = st.text(CHARS, max_size=24) | st.sampled_from(ODD_STRINGS)
BIG_INTS = st.sampled_from(
    [2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**64, 10**30, -(10**30), 10**4000, 0, -1]
)
NUMBERS = (
    st.integers()
    | BIG_INTS
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1e308, -0.0, 5e-324])
)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT


def _names(*schemas: Any) -> list[str]:
    out = ["schemas", "id", "meta", "meta.version", "externalId", "password"]
    for schema in schemas:
        core = schema in (USER, GROUP)
        if not core:
            out.append(schema.id)
        for attr in schema.attributes:
            names = [attr.name, *(f"{attr.name}.{s.name}" for s in attr.sub_attributes)]
            out.extend(names if core else [f"{schema.id}:{n}" for n in names])
    return out


USER_NAMES = _names(USER, ENTERPRISE, M365_USER)
GROUP_NAMES = _names(GROUP)
NAMES = st.sampled_from(USER_NAMES + GROUP_NAMES)
KEYS = NAMES | NAMES.map(str.upper) | TEXT


def json_values(keys: st.SearchStrategy[str] = KEYS) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=10,
    )


VALUES = json_values()


def dumps(value: Any) -> bytes:
    """JSON as a careless client writes it: NaN and Infinity as bare words, surrogates as
    escapes; a 10**4000 is more digits than Python writes, so it becomes a string of them."""
    try:
        return json.dumps(value, allow_nan=True).encode()
    except ValueError:
        return json.dumps(str(value)[:5000]).encode()


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([63, 64, 65, 66, 200, 999, 1000, 5000, 100_000]))
    kind = draw(st.sampled_from(["list", "object"]))
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def mangled(draw: st.DrawFn, body: bytes) -> bytes:
    """A JSON object's text made invalid at the byte level (a proper prefix of an object's
    text is never JSON; every other way adds what JSON or UTF-8 does not allow)."""
    how = draw(
        st.sampled_from(
            ["truncate", "invalid-utf8", "utf16", "bom", "duplicate", "trailing", "nul"]
        )
    )
    if how == "truncate":
        return body[: draw(st.integers(0, max(0, len(body) - 1)))]
    if how == "invalid-utf8":
        at = draw(st.integers(0, len(body)))
        return (
            body[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80"]))
            + body[at:]
        )
    if how == "utf16":
        return body.decode("utf-8", "replace").encode("utf-16")
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    if how == "duplicate" and body.startswith(b"{") and len(body) > 2:
        return b'{"dup":1,"dup":2,' + body[1:]
    if how == "nul" and b'"' in body:
        return body.replace(b'"', b'"\x00', 1)
    return body + draw(st.sampled_from([b"}", b",", b" x", b"\x00"]))


def user_body(extra: st.SearchStrategy[dict[str, Any]] | None = None) -> st.SearchStrategy[Any]:
    base = st.fixed_dictionaries(
        {"schemas": st.just([USER.id]), "userName": st.text(min_size=1, max_size=12) | TEXT},
        optional={
            "name": st.fixed_dictionaries({"givenName": TEXT, "familyName": TEXT}),
            "emails": st.lists(
                st.fixed_dictionaries(
                    {"value": TEXT},
                    optional={"type": TEXT, "primary": st.booleans() | SCALARS},
                ),
                max_size=3,
            ),
            "active": st.booleans() | SCALARS,
            ENTERPRISE.id: st.dictionaries(st.sampled_from(USER_NAMES) | TEXT, VALUES, max_size=3),
        },
    )
    return st.builds(
        lambda b, e: {**b, **e}, base, extra or st.dictionaries(KEYS, VALUES, max_size=4)
    )


def group_body(member_ids: list[str]) -> st.SearchStrategy[Any]:
    member = st.fixed_dictionaries(
        {"value": st.sampled_from(member_ids) | TEXT},
        optional={"type": TEXT | st.sampled_from(["User", "Group"]), "display": TEXT},
    )
    base = st.fixed_dictionaries(
        {"displayName": st.text(min_size=1, max_size=12) | TEXT},
        optional={"members": st.lists(member | VALUES, max_size=3), "externalId": SCALARS},
    )
    extra = st.dictionaries(st.sampled_from(GROUP_NAMES) | KEYS, VALUES, max_size=3)
    return st.builds(lambda b, e: {**b, **e}, base, extra)


# Changes that make a whole request invalid, whatever else it holds: a PUT with one of them,
# or a PATCH with one of them among its operations, must change nothing (RFC 7644 §3.5.2:
# all operations or none).
USER_POISONS: list[tuple[str, Any]] = [
    ("userName", 12345),
    ("active", "maybe"),
    ("emails", [{"value": "a@x.org", "primary": True}, {"value": "b@x.org", "primary": True}]),
    ("title", "bell\x07"),
    ("name", "not an object"),
    ("nickName", "x" * 70_000),
]
GROUP_POISONS: list[tuple[str, Any]] = [
    ("displayName", 7),
    ("displayName", ""),
    ("members", [{"display": "no value"}]),
    ("externalId", "\x01"),
]
POISON_OPS: list[dict[str, Any]] = [
    {"op": "frobnicate", "path": "title", "value": "x"},
    {"op": "add", "path": "title"},
    {"op": "replace", "path": 'emails[type eq "work"', "value": "x"},
    {"op": "replace", "path": "userName", "value": 7},
    {"op": "replace", "path": "title", "value": "a\x00"},
    {"op": "replace", "path": "displayName", "value": ["not", "a", "string"]},
    {"op": "add", "path": "members", "value": [{"display": "no value"}]},
    {"op": "remove", "path": 'members[value eq "x"'},
    {"op": "replace", "path": "nickName", "value": "y" * 70_000},
]


def _collides(key: Any, attr: str) -> bool:
    """Whether `key` could name `attr` (any case, URN-qualified, or as `attr.sub`)."""
    if not isinstance(key, str):
        return False
    return key.rsplit(":", 1)[-1].split(".")[0].strip().lower() == attr.lower()


def poisoned(body: Any, poison: tuple[str, Any]) -> dict[str, Any]:
    attr, value = poison
    clean = body if isinstance(body, dict) else {}
    return {**{k: v for k, v in clean.items() if not _collides(k, attr)}, attr: value}


PATCH_PATHS = [
    "title",
    "userName",
    "active",
    "displayName",
    "name.givenName",
    "emails",
    'emails[type eq "work"].value',
    'emails[type eq "work" and primary eq true]',
    'emails[value co "@"].primary',
    "members",
    'members[value eq "x"]',
    'addresses[type eq "work"].locality',
    f"{ENTERPRISE.id}:manager",
    f"{ENTERPRISE.id}:department",
    f"{M365_USER.id}:usageLocation",
    "meta.version",
    "id",
    "password",
    "x.y.z",
]


@st.composite
def patch_path(draw: st.DrawFn) -> Any:
    path = draw(st.sampled_from(PATCH_PATHS))
    how = draw(st.sampled_from(["as-is", "as-is", "splice", "cut", "case", "other"]))
    if how == "splice":
        at = draw(st.integers(0, len(path)))
        return (
            path[:at]
            + draw(TEXT | st.sampled_from(["[", "]", ".", ":", " ", '"', "("]))
            + path[at:]
        )
    if how == "cut":
        return path[: draw(st.integers(0, len(path)))]
    if how == "case":
        return path.upper()
    if how == "other":
        return draw(st.none() | SCALARS)
    return path


OPERATION = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["add", "remove", "replace", "Add", "Replace", "REMOVE", "move"])
        | SCALARS
    },
    optional={"path": patch_path(), "value": VALUES | st.sampled_from(["x", True, [], {}])},
)


def patch_body(ops: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[Any]:
    envelope = st.fixed_dictionaries(
        {"Operations": ops}, optional={"schemas": st.just([PATCH_OP]) | VALUES}
    )
    return envelope | VALUES


FILTER_ATTRS = [
    "userName",
    "title",
    "displayName",
    "emails",
    "emails.value",
    "emails.type",
    "emails.primary",
    "name.givenName",
    "meta.created",
    "meta.lastModified",
    "meta.version",
    "meta.resourceType",
    "id",
    "externalId",
    "active",
    "members",
    "members.value",
    "groups",
    "schemas",
    f"{ENTERPRISE.id}:department",
    f"{ENTERPRISE.id}:manager.value",
    "nosuch",
]
COMPARATORS = ["eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le", "EQ", "Sw", "xx"]
COMP_VALUES = st.sampled_from(
    [
        "true",
        "false",
        "null",
        "1",
        "-0",
        "1e400",
        "99999999999999999999999",
        "9" * 5000,
        '"2011-05-13T04:42:34Z"',
        '"99999-01-01T00:00:00Z"',
        '"W/\\"99999999999999999999\\""',
        '"\\ud800"',
        '"\\u0000"',
        '"a\\"b"',
        '"unterminated',
    ]
) | TEXT.map(lambda t: json.dumps(t))


@st.composite
def filter_text(draw: st.DrawFn) -> str:
    def term() -> str:
        attr = draw(st.sampled_from(FILTER_ATTRS))
        if draw(st.booleans()):
            return f"{attr} pr"
        return f"{attr} {draw(st.sampled_from(COMPARATORS))} {draw(COMP_VALUES)}"

    def expr(depth: int) -> str:
        shape = draw(st.integers(0, 4)) if depth < 3 else 0
        if shape == 1:
            return (
                f"{expr(depth + 1)} {draw(st.sampled_from(['and', 'or', 'AND']))} {expr(depth + 1)}"
            )
        if shape == 2:
            return f"not ({expr(depth + 1)})"
        if shape == 3:
            return f"({expr(depth + 1)})"
        if shape == 4:
            return f"emails[{expr(depth + 1)}]"
        return term()

    text = expr(0)
    how = draw(st.sampled_from(["as-is", "as-is", "splice", "cut", "deep", "many", "garbage"]))
    if how == "many":
        n = draw(st.sampled_from([199, 200, 1000]))
        return " or ".join([text] * n)
    if how == "splice":
        at = draw(st.integers(0, len(text)))
        return (
            text[:at] + draw(TEXT | st.sampled_from(["(", ")", "[", "]", '"', " and "])) + text[at:]
        )
    if how == "cut":
        return text[: draw(st.integers(0, len(text)))]
    if how == "deep":
        n = draw(st.sampled_from([63, 64, 65, 300, 3000]))
        return "(" * n + text + ")" * n
    if how == "garbage":
        return draw(TEXT)
    return text


PAGING = (
    st.none()
    | st.integers()
    | BIG_INTS
    | st.sampled_from(
        ["", "-1", "0", "1e5", "0x10", "1_000", " 7", "99999999999999999999999", "NaN"]
    )
    | TEXT
)


def query_params() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "filter": filter_text(),
            "startIndex": PAGING,
            "count": PAGING,
            "sortBy": st.sampled_from(FILTER_ATTRS) | TEXT,
            "sortOrder": st.sampled_from(["ascending", "descending", "DESC"]) | TEXT,
            "attributes": st.sampled_from(USER_NAMES) | TEXT,
            "excludedAttributes": st.sampled_from(USER_NAMES) | TEXT,
        },
    )


def query_string(params: dict[str, Any]) -> str:
    pairs = []
    for key, value in params.items():
        if value is None:
            continue
        text = str(value) if not isinstance(value, str) else value
        pairs.append(f"{key}={urllib.parse.quote(text.encode('utf-8', 'surrogatepass'))}")
    return "&".join(pairs)


def latin1(text: str) -> str:
    """A header value as the wire carries it: UTF-8 bytes (surrogates too), read as latin-1
    (werkzeug's test client writes headers as latin-1)."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


PLAIN_CONTENT_TYPES = [
    SCIM,
    "application/json",
    "application/scim+json; charset=utf-8",
    "application/scim+json; charset=latin1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "",
    ";;;",
    "application/scim+json; charset=",
    "*/*",
]
CONTENT_TYPES = st.sampled_from(PLAIN_CONTENT_TYPES) | TEXT.filter(
    lambda t: "\n" not in t and "\r" not in t
).map(latin1)


def header_value() -> st.SearchStrategy[str]:
    # What werkzeug's test client can put in a header: no line breaks.
    return (
        (TEXT | st.sampled_from(['W/"1"', 'W/"99999999999999999999999"', "*", '"', ""]))
        .filter(lambda t: "\n" not in t and "\r" not in t and "\x00" not in t)
        .map(latin1)
    )


PLAIN_HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


# ---------------------------------------------------------------- the Flask test client


def test_fuzz_resources(target: Target) -> None:
    """POST and PUT of mutated users and groups; the victims get only poisoned ones. Three
    requests an example: a create, a PUT of the sandbox, a poisoned PUT of a victim."""
    ids = [target.user, target.group, "no-such-id"]

    @examples(900)
    @given(
        kind=st.sampled_from(["user", "group"]),
        user=user_body(),
        group=group_body(ids),
        user_poison=st.sampled_from(USER_POISONS),
        group_poison=st.sampled_from(GROUP_POISONS),
        mangle=st.booleans(),
        data=st.data(),
    )
    def run(
        kind: str,
        user: Any,
        group: Any,
        user_poison: tuple[str, Any],
        group_poison: tuple[str, Any],
        mangle: bool,
        data: st.DataObject,
    ) -> None:
        if kind == "user":
            body, path, sandbox, victim = user, "/Users", target.user, target.victims.user
        else:
            body, path, sandbox, victim = group, "/Groups", target.group, target.victims.group
        target.send("POST", path, dumps(body))
        target.send("PUT", f"{path}/{sandbox}", dumps(body))
        if mangle:
            raw = data.draw(mangled(dumps(body)))
        else:
            raw = dumps(poisoned(body, user_poison if kind == "user" else group_poison))
        target.send("PUT", f"{path}/{victim}", raw, must_fail=True)

    run()
    assert target.sent[0] >= 3 * 900 * SCALE
    target.victims.untouched()


def test_fuzz_patch(target: Target) -> None:
    """PATCH: operations of valid shape with mutated paths and values, and garbage. Three
    requests an example: the operations on the sandbox, the same with one that fails on a
    victim (RFC 7644 §3.5.2: all or none), and garbage on a victim."""

    @examples(800)
    @given(
        kind=st.sampled_from(["Users", "Groups"]),
        ops=st.lists(OPERATION | VALUES, max_size=4),
        poison=st.sampled_from(POISON_OPS),
        at=st.integers(0, 4),
        garbage=VALUES,
    )
    def run(kind: str, ops: list[Any], poison: dict[str, Any], at: int, garbage: Any) -> None:
        if kind == "Users":
            sandbox, victim = target.user, target.victims.user
        else:
            sandbox, victim = target.group, target.victims.group
        body = {"schemas": [PATCH_OP], "Operations": ops}
        target.send("PATCH", f"/{kind}/{sandbox}", dumps(body))
        body = {"schemas": [PATCH_OP], "Operations": [*ops[:at], poison, *ops[at:]]}
        target.send("PATCH", f"/{kind}/{victim}", dumps(body), must_fail=True)
        # Garbage, unless it happens to hold operations (in any case of the name).
        holds_ops = isinstance(garbage, dict) and any(
            isinstance(k, str) and k.lower() == "operations" for k in garbage
        )
        target.send(
            "PATCH", f"/{kind}/{victim}", dumps([] if holds_ops else garbage), must_fail=True
        )

    run()
    assert target.sent[0] >= 3 * 800 * SCALE
    target.victims.untouched()


def test_fuzz_queries(target: Target) -> None:
    """Filters, paging, sorting and projections: each as a GET query string and as a
    /.search body."""

    @examples(1200)
    @given(
        kind=st.sampled_from(["Users", "Groups", None]),
        params=query_params(),
        extra=st.dictionaries(KEYS, VALUES, max_size=2),
        garbage=st.none() | VALUES,
    )
    def run(kind: str | None, params: dict[str, Any], extra: dict[str, Any], garbage: Any) -> None:
        where = f"/{kind}" if kind else "/Users"
        target.send("GET", f"{where}?{query_string(params)}")
        body: Any = {"schemas": [SEARCH_REQUEST], **params, **extra}
        search = f"/{kind}/.search" if kind else "/.search"
        target.send("POST", search, dumps(body if garbage is None else garbage))

    run()
    assert target.sent[0] >= 2 * 1200 * SCALE
    target.victims.untouched()


def test_fuzz_bulk(target: Target) -> None:
    """/Bulk with mutated operations of every method; the victims are never named."""
    paths = [
        "/Users",
        "/Groups",
        f"/Users/{target.user}",
        f"/Groups/{target.group}",
        "/Users/bulkId:u1",
        "/Groups/bulkId:g1",
        "/Users/no-such-id",
        "/Users/a\x00b",
    ]
    operation = st.fixed_dictionaries(
        {
            "method": st.sampled_from(["POST", "PUT", "PATCH", "DELETE", "GET", "post"]) | SCALARS,
            "path": st.sampled_from(paths) | TEXT | SCALARS,
        },
        optional={
            "bulkId": st.sampled_from(["u1", "g1", "u1"]) | TEXT | SCALARS,
            "version": header_value() | SCALARS,
            "data": user_body()
            | group_body([target.user, "bulkId:u1"])
            | patch_body(st.lists(OPERATION, max_size=3))
            | VALUES,
        },
    )

    @examples(700)
    @given(
        ops=st.lists(operation | VALUES, max_size=5),
        fail_on_errors=st.none() | st.integers() | BIG_INTS | SCALARS,
        garbage=VALUES.map(dumps) | nested(),
    )
    def run(ops: list[Any], fail_on_errors: Any, garbage: bytes) -> None:
        body: Any = {"schemas": [BULK_REQUEST], "Operations": ops}
        if fail_on_errors is not None:
            body["failOnErrors"] = fail_on_errors
        target.send("POST", "/Bulk", dumps(body))
        target.send("POST", "/Bulk", garbage)

    run()
    assert target.sent[0] >= 2 * 700 * SCALE
    target.victims.untouched()


def test_fuzz_headers_and_bodies(target: Target) -> None:
    """Odd methods, paths, headers, content types and raw bodies; and in each example a write
    to a victim whose valid body is made invalid by its transport (content type, bytes,
    If-Match)."""
    endpoints = [
        "/Users",
        "/Groups",
        f"/Users/{target.user}",
        f"/Groups/{target.group}",
        "/Bulk",
        "/.search",
        "/Users/.search",
        "/ServiceProviderConfig",
        "/Schemas",
        f"/Schemas/{USER.id}",
        "/ResourceTypes",
        "/ResourceTypes/User",
        "/Me",
        "/",
        "/Nope",
    ]

    @examples(1200)
    @given(
        method=st.sampled_from(
            ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]
        ),
        endpoint=st.sampled_from(endpoints),
        tail=st.none() | TEXT,
        content_type=CONTENT_TYPES,
        headers=st.dictionaries(
            st.sampled_from(
                [
                    "If-Match",
                    "If-None-Match",
                    "Accept",
                    "X-Request-Id",
                    "Authorization",
                    "Accept-Charset",
                    "Content-Encoding",
                    "Transfer-Encoding",
                ]
            ),
            header_value(),
            max_size=3,
        ),
        body=st.none() | st.binary(max_size=64) | VALUES.map(dumps) | nested(),
        victim=st.sampled_from(["Users", "Groups"]),
        user=user_body(),
        transport=st.sampled_from(["content-type", "mangled", "if-match", "nested"]),
        mangle=st.data(),
    )
    def run(
        method: str,
        endpoint: str,
        tail: str | None,
        content_type: str,
        headers: dict[str, str],
        body: bytes | None,
        victim: str,
        user: Any,
        transport: str,
        mangle: st.DataObject,
    ) -> None:
        path = endpoint
        if tail is not None:
            path += "/" + urllib.parse.quote(tail.encode("utf-8", "surrogatepass"), safe="")
        target.send(method, path, body, {"Content-Type": content_type, **headers})
        ident = target.victims.user if victim == "Users" else target.victims.group
        valid = dumps(
            {**user, "displayName": "renamed"} if victim == "Users" else {"displayName": "renamed"}
        )
        sent: dict[str, str] = {}
        if transport == "content-type":
            # A type that is not JSON (none at all is read as JSON: see api/http.json_body).
            ct = mangle.draw(
                CONTENT_TYPES.filter(
                    lambda c: (
                        parse_options_header(c)[0].lower() not in ("", SCIM, "application/json")
                    )
                )
            )
            sent["Content-Type"] = ct
        elif transport == "mangled":
            valid = mangle.draw(mangled(valid))
        elif transport == "if-match":
            sent["If-Match"] = 'W/"99999"'
        else:
            valid = mangle.draw(nested().filter(lambda b: len(b) > 200))
        write = mangle.draw(st.sampled_from(["PUT", "PATCH"]))
        if write == "PATCH" and transport in ("content-type", "if-match"):
            op = {"op": "replace", "path": "displayName", "value": "renamed"}
            valid = dumps({"schemas": [PATCH_OP], "Operations": [op]})
        target.send(write, f"/{victim}/{ident}", valid, sent, must_fail=True)

    run()
    assert target.sent[0] >= 2 * 1200 * SCALE
    target.victims.untouched()


# ---------------------------------------------------------------- a real server on a socket


@dataclass
class Served:
    port: int
    token: str
    log: Path

    def exchange(self, raw: bytes, timeout: float = 20) -> tuple[int | None, str | None, bytes]:
        """Send raw bytes on a fresh connection and read the answer: until the server closes
        (every request says Connection: close), or a whole response (by its Content-Length)
        has come. A request the server waits on for ever (a body shorter than it says) gets
        `timeout`; then our side closes, and whatever came is the answer."""
        with self.send(raw, timeout) as sock:
            return answer(sock)

    def send(self, raw: bytes, timeout: float) -> socket.socket:
        """A fresh connection with `raw` sent on it; reads on it wait `timeout` a chunk."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        with contextlib.suppress(OSError):  # it answered (and closed) before reading all
            sock.sendall(raw)
        return sock


def answer(sock: socket.socket) -> tuple[int | None, str | None, bytes]:
    """(status, Content-Type, body) of what the server sends on `sock`; None for a status
    when what came is no HTTP response (or nothing came)."""
    chunks: list[bytes] = []
    try:
        while not _whole_response(b"".join(chunks)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return None, None, data
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        body = body[: int(length)]
    return int(parts[1]), headers.get("content-type"), body


class Waiting:
    """Requests the server must wait on (a body that never comes), each given WAIT seconds
    to be answered wrongly: what the server says at once about such a request, it says in
    milliseconds. They wait side by side, at most `limit` at a time (the server must serve
    the others meanwhile: it does), rather than one after another."""

    WAIT = 0.3

    def __init__(self, served: Served, limit: int = 16) -> None:
        self.served = served
        self.limit = limit
        self.queue: deque[tuple[float, str, bytes, socket.socket]] = deque()
        self.failures: list[tuple[str, bytes, str]] = []

    def add(self, fault: str, raw: bytes) -> None:
        sock = self.served.send(raw, timeout=self.WAIT)
        self.queue.append((time.monotonic() + self.WAIT, fault, raw, sock))
        while len(self.queue) > self.limit or (self.queue and self.queue[0][0] <= time.monotonic()):
            self._settle_oldest()

    def settle_all(self) -> None:
        while self.queue:
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        deadline, fault, raw, sock = self.queue.popleft()
        time.sleep(max(0.0, deadline - time.monotonic()))
        with sock:
            sock.settimeout(0.05)  # its time is up: what has come is the answer
            status, content_type, body = answer(sock)
        try:
            judge(fault, status, content_type, body, raw)
        except AssertionError as failed:
            self.failures.append((fault, raw[:200], str(failed)))


def judge(
    fault: str, status: int | None, content_type: str | None, body: bytes, raw: bytes
) -> None:
    """What the server answered `raw`, a request made wrong by `fault`, must be."""
    if status is None and fault in INCOMPLETE:
        return  # nothing to answer yet: a body that never ends is the client's to finish
    if fault in REACH_FLASK:
        assert status is not None, (fault, raw[:200], body[:200])
        check_scim_answer(status, content_type, body, raw.split(b" ", 1)[0].decode("latin-1"))
    elif status is not None and status < 400:
        pass  # a lenient parse that Flask then answered: checked below if it is an error
    else:
        check_refused_below_flask(status, content_type, body)


@pytest.fixture
def served(app: Flask, database_url: str, tmp_path: Path) -> Iterator[Served]:
    """`scim-server serve --no-sync` on the tests' own database."""
    token = _token(app, "fuzz")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = tmp_path / "serve.log"
    env = {**os.environ, "DATABASE_URL": database_url}
    cli = str(Path(sys.executable).parent / "scim-server")
    with log.open("wb") as out:
        server = subprocess.Popen(
            [cli, "serve", "--no-sync", "--port", str(port), "--workers", "1", "--no-access-log"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(port, token, log)
    try:
        for _ in range(200):
            try:
                request = b"GET /scim/v2/ServiceProviderConfig HTTP/1.1\r\nHost: x\r\n\r\n"
                if served.exchange(request, timeout=2)[0] is not None:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"serve did not answer: {log.read_text()[-2000:]}")
        yield served
    finally:
        server.terminate()
        server.wait(20)
    assert b"Traceback" not in log.read_bytes(), log.read_text()[-3000:]


def _whole_response(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value.strip())
    return False


# How a request is made wrong at the HTTP level. "clean" requests are valid HTTP and reach
# Flask; the others may be refused by the HTTP server itself.
REACH_FLASK = ("clean", "http-1.0", "chunked", "absurd-content-length")
# Requests that end before they say they do (a body shorter than its length, an HTTP/0.9
# line that an HTTP/1 parser reads as a head not yet ended): a server waits for the rest.
INCOMPLETE = ("short-body", "bad-chunked", "http-0.9")
# Request lines past our own limit (8 KiB: a SCIM 414) are not "clean".
MAX_CLEAN_LINE = 8000
HTTP_FAULTS = [
    "clean",
    "clean",
    "clean",
    "clean",
    "invalid-utf8-target",
    "space-in-target",
    "overlong-target",
    "overlong-header",
    "many-headers",
    "bare-lf",
    "absurd-content-length",
    "overflowing-content-length",
    "negative-content-length",
    "garbage-content-length",
    "two-content-lengths",
    "short-body",
    "bad-chunked",
    "chunked",
    "nul-in-header",
    "folded-header",
    "no-version",
    "http-0.9",
    "http-1.0",
    "garbage-method",
    "lowercase-method",
    "binary",
]


@st.composite
def http_request(draw: st.DrawFn, token: str, victim: str, sandbox: str) -> tuple[str, bytes]:
    fault = draw(st.sampled_from(HTTP_FAULTS))
    # A clean request is one that any HTTP server passes on: printable ASCII headers.
    clean = fault in REACH_FLASK
    types = st.sampled_from(PLAIN_CONTENT_TYPES) if clean else CONTENT_TYPES
    values = PLAIN_HEADER_VALUES if clean else header_value()
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
    resource = draw(
        st.sampled_from(
            ["Users", "Groups", f"Users/{sandbox}", "Bulk", ".search", "Users/.search", "Schemas"]
        )
    )
    if method == "GET" and draw(st.booleans()):
        resource = f"Users/{victim}"  # reads only: the victim is never written here
    target = f"/scim/v2/{resource}".encode()
    params = draw(query_params())
    if params:
        target += b"?" + query_string(params).encode()
    payload = draw(
        st.none()
        | user_body().map(dumps)
        | patch_body(st.lists(OPERATION, max_size=3)).map(dumps)
        | VALUES.map(dumps)
        | st.binary(max_size=64)
        | nested()
    )
    body = payload or b""
    headers = [
        (b"Host", b"127.0.0.1"),
        (b"Authorization", b"Bearer " + token.encode()),
        (b"Content-Type", draw(types).encode("latin-1")),
        (b"Content-Length", str(len(body)).encode()),
        (b"Connection", b"close"),
    ]
    extra = st.dictionaries(
        st.sampled_from(["If-Match", "If-None-Match", "Accept", "X-Request-Id"]), values, max_size=2
    )
    for name, value in draw(extra).items():
        headers.append((name.encode(), value.encode("latin-1")))
    version = b"HTTP/1.1"
    eol = b"\r\n"
    verb = method.encode()
    if fault == "invalid-utf8-target":
        at = draw(st.integers(len(b"/scim/v2/"), len(target)))
        target = (
            target[:at]
            + draw(
                st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"%ff", b"%ed%a0%80", b"\x00"])
            )
            + target[at:]
        )
    elif fault == "space-in-target":
        target += b" extra"
    elif fault == "overlong-target":
        target += b"?filter=" + b"a" * draw(st.sampled_from([4000, 4095, 8200, 70_000]))
    elif fault == "overlong-header":
        headers.append((b"X-Long", b"v" * draw(st.sampled_from([8000, 8191, 9000, 70_000]))))
    elif fault == "many-headers":
        headers += [(f"X-{i}".encode(), b"1") for i in range(draw(st.sampled_from([99, 101, 500])))]
    elif fault == "bare-lf":
        eol = b"\n"
    elif fault == "absurd-content-length":
        # Larger than any body we take, but a number HTTP servers parse: Flask answers 413.
        headers[3] = (
            b"Content-Length",
            draw(st.sampled_from([b"17000000", b"4294967296", str(2**63).encode()])),
        )
    elif fault == "overflowing-content-length":
        # Past 64 bits: not a length an HTTP server can hold (RFC 9112 §6.3: a 400 of its own).
        headers[3] = (b"Content-Length", b"99999999999999999999999")
    elif fault == "negative-content-length":
        headers[3] = (b"Content-Length", b"-1")
    elif fault == "garbage-content-length":
        headers[3] = (
            b"Content-Length",
            draw(st.sampled_from([b"abc", b"1e3", b" ", b"0x10", b"1,2"])),
        )
    elif fault == "two-content-lengths":
        headers.append((b"Content-Length", str(len(body) + 1).encode()))
    elif fault == "short-body":
        headers[3] = (b"Content-Length", str(len(body) + draw(st.integers(1, 1000))).encode())
    elif fault in ("bad-chunked", "chunked"):
        headers[3] = (b"Transfer-Encoding", b"chunked")
        if fault == "chunked":
            body = (
                (f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n") if body else b"0\r\n\r\n"
            )
        else:
            body = draw(
                st.sampled_from(
                    [
                        b"zz\r\n",
                        b"ffffffffffffffffffff\r\nx",
                        b"5\r\nabc",
                        b"-1\r\n",
                        b"3\r\nabcde\r\n0\r\n\r\n",
                    ]
                )
            )
    elif fault == "nul-in-header":
        headers.append((b"X-Nul", b"a\x00b"))
    elif fault == "folded-header":
        headers.append((b"X-Folded", b"a\r\n b"))
    elif fault == "no-version":
        version = b""
    elif fault == "http-0.9":
        return fault, verb + b" " + target + b"\r\n"
    elif fault == "http-1.0":
        version = b"HTTP/1.0"
    elif fault == "garbage-method":
        verb = draw(st.sampled_from([b"G\xffT", b"", b"GET GET", b"\x00", b"PURGE", b"X" * 300]))
    elif fault == "lowercase-method":
        verb = verb.lower()
    elif fault == "binary":
        # Ended as a request head is, so that the server has something to answer; not only
        # line ends, which are no request at all (RFC 9112 §2.2: a server ignores empty lines
        # before a request line, and may wait for one).
        noise = st.binary(min_size=1, max_size=200).filter(lambda b: b.strip(b"\r\n") != b"")
        return fault, draw(noise) + b"\r\n\r\n"
    line = verb + b" " + target + (b" " + version if version else b"")
    if clean and len(line) > MAX_CLEAN_LINE:
        fault = "overlong-target"  # a long filter: over the HTTP server's request-line limit
    head = eol.join([line, *(n + b": " + v for n, v in headers)])
    return fault, head + eol + eol + body


def test_fuzz_over_a_socket(target: Target, served: Served) -> None:
    """Raw HTTP to `scim-server serve`: what reaches Flask must answer the SCIM way; what the
    HTTP server refuses itself must at least be a 4xx."""
    counted = [0]
    waiting = Waiting(served)

    @examples(2500)
    @given(request=http_request(served.token, target.victims.user, target.user))
    def run(request: tuple[str, bytes]) -> None:
        fault, raw = request
        counted[0] += 1
        if fault in INCOMPLETE:
            waiting.add(fault, raw)
        else:
            judge(fault, *served.exchange(raw, timeout=10), raw)

    try:
        run()
        waiting.settle_all()
    finally:
        for *_, sock in waiting.queue:
            sock.close()
    assert not waiting.failures, waiting.failures[:5]
    assert counted[0] >= 2500 * SCALE
    target.victims.untouched()
