"""canonicalize: POST/PUT bodies to canonical documents (RFC 7643 §2, RFC 7644 §3.3)."""

from __future__ import annotations

from typing import Any

import pytest

from scim_server.errors import InvalidFilter, InvalidValue
from scim_server.scim import filter_eval
from scim_server.scim.filter_parser import parse_path
from scim_server.scim.resource import canonical_item, canonical_value, canonicalize
from scim_server.scim.schema import (
    ENTERPRISE_SCHEMA,
    GROUP_TYPE,
    META,
    USER,
    USER_SCHEMA,
    USER_TYPE,
    Attribute,
)


def _user_attr(name: str) -> Attribute:
    attr = USER.attr(name)
    assert attr is not None
    return attr


EMAILS = _user_attr("emails")


def test_rfc7643_2_1_attribute_names_are_case_insensitive() -> None:
    doc = canonicalize(
        {"USERNAME": "bjensen", "Name": {"GivenName": "Barbara"}, "EMAILS": [{"VALUE": "b@x"}]},
        USER_TYPE,
    )
    assert doc == {
        "userName": "bjensen",
        "name": {"givenName": "Barbara"},
        "emails": [{"value": "b@x"}],
    }


def test_rfc7643_3_extension_nested_under_its_urn() -> None:
    doc = canonicalize(
        {
            "userName": "b",
            ENTERPRISE_SCHEMA.upper(): {"EmployeeNumber": "701984", "manager": {"value": "m1"}},
        },
        USER_TYPE,
    )
    assert doc[ENTERPRISE_SCHEMA] == {"employeeNumber": "701984", "manager": {"value": "m1"}}


def test_extension_and_core_attributes_as_urn_qualified_keys() -> None:
    doc = canonicalize(
        {
            f"{USER_SCHEMA}:userName": "b",
            f"{ENTERPRISE_SCHEMA}:employeeNumber": "1",
            f"{ENTERPRISE_SCHEMA}:manager": {"value": "m1", "displayName": "ignored"},
            ENTERPRISE_SCHEMA: {"department": "R&D"},
        },
        USER_TYPE,
    )
    assert doc == {
        "userName": "b",
        ENTERPRISE_SCHEMA: {"employeeNumber": "1", "manager": {"value": "m1"}, "department": "R&D"},
    }


def test_rfc7644_3_3_unknown_attributes_are_ignored() -> None:
    doc = canonicalize(
        {"userName": "b", "favouriteColour": "blue", "name": {"nickname2": "x"}}, USER_TYPE
    )
    assert doc == {"userName": "b"}


def test_rfc7643_2_2_read_only_attributes_are_ignored() -> None:
    doc = canonicalize(
        {
            "schemas": [USER_SCHEMA],
            "id": "client-id",
            "meta": {"version": "x"},
            "userName": "b",
            "groups": [{"value": "g1"}],
        },
        USER_TYPE,
    )
    assert doc == {"userName": "b"}


def test_rfc7643_2_5_null_means_unassigned() -> None:
    doc = canonicalize(
        {"userName": "b", "displayName": None, "name": {"givenName": None}, "emails": [None]},
        USER_TYPE,
    )
    assert doc == {"userName": "b"}


def test_password_is_kept_for_the_caller_to_hash() -> None:
    assert canonicalize({"userName": "b", "password": "s3cret"}, USER_TYPE)["password"] == "s3cret"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"userName": 7}, "userName"),
        ({"userName": "b", "active": "yes"}, "active"),
        ({"userName": "b", "name": "Barbara"}, "name"),
        ({"userName": "b", "emails": "b@x"}, "emails"),
        ({"userName": "b", "emails": [{"primary": "true"}]}, "emails.primary"),
        ({"userName": "b", "photos": [{"value": 1}]}, "photos.value"),
    ],
)
def test_rfc7643_2_3_type_errors_name_the_attribute(body: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidValue) as err:
        canonicalize(body, USER_TYPE)
    assert named in err.value.detail
    assert err.value.scim_type == "invalidValue"


def test_single_object_for_multi_valued_attribute_is_wrapped() -> None:
    doc = canonicalize({"userName": "b", "emails": {"value": "b@x", "type": "work"}}, USER_TYPE)
    assert doc["emails"] == [{"value": "b@x", "type": "work"}]


def test_rfc7643_2_4_at_most_one_primary() -> None:
    with pytest.raises(InvalidValue, match="primary"):
        canonicalize(
            {
                "userName": "b",
                "emails": [{"value": "a@x", "primary": True}, {"value": "b@x", "primary": True}],
            },
            USER_TYPE,
        )


@pytest.mark.parametrize("body", [{}, {"userName": ""}, {"userName": "  "}, {"userName": None}])
def test_rfc7643_4_1_user_name_is_required(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidValue, match="userName is required"):
        canonicalize(body, USER_TYPE)


def test_partial_body_skips_required_check() -> None:
    assert canonicalize({"title": "Boss"}, USER_TYPE, for_replace=False) == {"title": "Boss"}


def test_rfc7643_2_3_5_date_time_must_parse() -> None:
    created = META.sub("created")
    assert created is not None
    assert canonical_item(created, "2011-05-13T04:42:34Z") == "2011-05-13T04:42:34Z"
    with pytest.raises(InvalidValue, match="dateTime"):
        canonical_item(created, "last tuesday")


def test_rfc7643_4_2_group_members_keep_value_type_and_display() -> None:
    doc = canonicalize(
        {
            "displayName": "Team",
            "members": [
                {"value": "u1", "display": "Alice", "$ref": "https://x/Users/u1"},
                {"value": "g1", "type": "group"},
            ],
        },
        GROUP_TYPE,
    )
    assert doc == {
        "displayName": "Team",
        "members": [{"value": "u1", "display": "Alice"}, {"value": "g1", "type": "Group"}],
    }


@pytest.mark.parametrize(
    "member", [{"display": "x"}, {"value": 5}, {"value": "u1", "type": "Org"}, "u1"]
)
def test_group_member_must_have_string_value_and_known_type(member: Any) -> None:
    with pytest.raises(InvalidValue):
        canonicalize({"displayName": "Team", "members": [member]}, GROUP_TYPE)


def test_group_display_name_is_required() -> None:
    with pytest.raises(InvalidValue, match="displayName is required"):
        canonicalize({"members": []}, GROUP_TYPE)


def test_canonical_value_drops_read_only_sub_attributes() -> None:
    assert canonical_value(EMAILS, [{"Value": "a@x", "bogus": 1}, {}]) == [{"value": "a@x"}]


# ---------------------------------------------------------------- filter_eval


def _filter(path: str) -> Any:
    parsed = parse_path(path)
    assert parsed.value_filter is not None
    return parsed.value_filter


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('type eq "WORK"', True),  # caseExact false: case-insensitive
        ('type ne "work"', False),
        ('display ne "x"', True),  # missing sub-attribute matches ne
        ('display eq "x"', False),  # ... and not eq
        ('value co "EXAMPLE"', True),
        ('value sw "bjensen@"', True),
        ('value ew ".org"', False),
        ('value gt "a"', True),
        ('value le "a"', False),
        ("primary eq true", True),
        ("primary eq false", False),
        ("display pr", False),
        ("value pr", True),
        ('type eq "work" and primary eq true', True),
        ('type eq "home" or primary eq true', True),
        ('not (type eq "work")', False),
        ('Type Eq "work" AND Primary eq true', True),
    ],
)
def test_rfc7644_3_4_2_2_value_filter_operators(expression: str, expected: bool) -> None:
    element = {"value": "bjensen@example.com", "type": "work", "primary": True}
    assert filter_eval.matches(_filter(f"emails[{expression}]"), element, EMAILS) is expected


def test_case_exact_sub_attribute_compares_exactly() -> None:
    photos = _user_attr("photos")
    node = _filter('photos[value eq "HTTPS://X/A.JPG"]')
    assert not filter_eval.matches(node, {"value": "https://x/a.jpg"}, photos)
    assert filter_eval.matches(node, {"value": "HTTPS://X/A.JPG"}, photos)


def test_unknown_sub_attribute_in_filter_is_invalid_filter() -> None:
    with pytest.raises(InvalidFilter):
        filter_eval.validate(_filter('emails[colour eq "red"]'), EMAILS)
    with pytest.raises(InvalidFilter):
        filter_eval.matches(_filter('emails[colour eq "red"]'), {"value": "a"}, EMAILS)


def test_ordering_on_boolean_is_invalid_filter() -> None:
    with pytest.raises(InvalidFilter):
        filter_eval.validate(_filter("emails[primary gt true]"), EMAILS)
