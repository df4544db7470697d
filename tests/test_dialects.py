"""The dialect rules as pure functions: what each one rewrites, and that RFC-shaped requests
pass through unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from scim_server.scim import dialects
from scim_server.scim.schema import ENTERPRISE_SCHEMA, GROUP_TYPE, USER_TYPE

RFC_OPERATIONS: list[dict[str, Any]] = [
    {"op": "add", "path": "emails", "value": [{"value": "a@x", "type": "work", "primary": True}]},
    {"op": "replace", "path": "active", "value": False},
    {"op": "replace", "value": {"active": True, "name": {"givenName": "B"}}},
    {"op": "replace", "path": f"{ENTERPRISE_SCHEMA}:manager", "value": {"value": "m1"}},
    {"op": "remove", "path": 'emails[type eq "work"]'},
    {"op": "add", "path": 'addresses[type eq "work"].locality', "value": "Springfield"},
    {"op": "replace", "path": "title", "value": "True"},  # a string attribute stays a string
]


@pytest.mark.parametrize("operation", RFC_OPERATIONS)
def test_rfc_shaped_operations_pass_unchanged(operation: dict[str, Any]) -> None:
    assert dialects.patch_operations([operation], USER_TYPE) == [operation]


def test_rfc_shaped_bodies_pass_unchanged() -> None:
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_SCHEMA],
        "userName": "b",
        "active": False,
        "nickName": "False",
        "emails": [{"value": "b@x", "primary": True}],
        ENTERPRISE_SCHEMA: {"manager": {"value": "m1"}, "department": "True"},
        "unknownThing": "True",
    }
    assert dialects.resource_body(body, USER_TYPE) == body


def test_capitalised_op_is_lower_cased() -> None:
    out = dialects.patch_operations([{"op": "Replace", "path": "title", "value": "x"}], USER_TYPE)
    assert out == [{"op": "replace", "path": "title", "value": "x"}]


def test_string_booleans_become_booleans_only_where_the_schema_says_boolean() -> None:
    out = dialects.resource_body(
        {
            "Active": "FALSE",
            "emails": [{"Primary": "True", "value": "x"}],
            "title": "true",
        },
        USER_TYPE,
    )
    assert out == {"Active": False, "emails": [{"Primary": True, "value": "x"}], "title": "true"}


def test_pathless_value_path_keys_become_operations_of_their_own() -> None:
    out = dialects.patch_operations(
        [
            {
                "op": "replace",
                "value": {'emails[type eq "work"].primary': "True", "displayName": "D"},
            }
        ],
        USER_TYPE,
    )
    assert out == [
        {"op": "replace", "value": {"displayName": "D"}},
        {"op": "replace", "path": 'emails[type eq "work"].primary', "value": True},
    ]


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (
            {"op": "Add", "path": f"{ENTERPRISE_SCHEMA}:manager", "value": "m1"},
            {"op": "add", "path": f"{ENTERPRISE_SCHEMA}:manager", "value": {"value": "m1"}},
        ),
        (
            {"op": "Add", "path": "manager", "value": [{"$ref": "u", "value": "m1"}]},
            {"op": "add", "path": "manager", "value": {"$ref": "u", "value": "m1"}},
        ),
        (
            {"op": "Remove", "path": "manager", "value": [{"$ref": None, "value": "m1"}]},
            {"op": "remove", "path": "manager"},
        ),
        (
            {"op": "Replace", "path": f"{ENTERPRISE_SCHEMA}:manager", "value": ""},
            {"op": "remove", "path": f"{ENTERPRISE_SCHEMA}:manager"},
        ),
    ],
)
def test_entra_manager_shapes(sent: dict[str, Any], expected: dict[str, Any]) -> None:
    assert dialects.patch_operations([sent], USER_TYPE) == [expected]


def test_manager_as_a_bare_string_in_a_body() -> None:
    out = dialects.resource_body({ENTERPRISE_SCHEMA: {"manager": "m1"}}, USER_TYPE)
    assert out == {ENTERPRISE_SCHEMA: {"manager": {"value": "m1"}}}


def test_group_operations_are_left_alone_but_the_op() -> None:
    ops = [{"op": "Remove", "path": "members", "value": [{"$ref": None, "value": "u1"}]}]
    assert dialects.patch_operations(ops, GROUP_TYPE) == [
        {"op": "remove", "path": "members", "value": [{"$ref": None, "value": "u1"}]}
    ]
