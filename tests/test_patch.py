"""apply_patch: RFC 7644 §3.5.2 PATCH, pure and atomic, on canonical documents."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from scim_server.errors import (
    InvalidFilter,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
)
from scim_server.scim.patch import MemberChange, PatchResult, apply_patch
from scim_server.scim.schema import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    GROUP_TYPE,
    USER_SCHEMA,
    USER_TYPE,
)

UID = "2819c223-7f76-453a-919d-413861904646"
META = {
    "resourceType": "User",
    "created": "2010-01-23T04:56:22Z",
    "lastModified": "2011-05-13T04:42:34Z",
    "location": f"https://x/Users/{UID}",
    "version": 'W/"3"',
}


def user(**attrs: Any) -> dict[str, Any]:
    return {"schemas": [USER_SCHEMA], "id": UID, "userName": "bjensen", **attrs, "meta": META}


def group(**attrs: Any) -> dict[str, Any]:
    return {
        "schemas": [GROUP_SCHEMA],
        "id": "g1",
        "displayName": "Team",
        **attrs,
        "meta": {"resourceType": "Group"},
    }


def patch_user(doc: dict[str, Any], *ops: dict[str, Any]) -> PatchResult:
    return apply_patch(doc, list(ops), USER_TYPE)


def patched(doc: dict[str, Any], *ops: dict[str, Any]) -> dict[str, Any]:
    return patch_user(doc, *ops).doc


def members(*ops: dict[str, Any]) -> MemberChange:
    result = apply_patch(group(), list(ops), GROUP_TYPE)
    assert result.members is not None
    return result.members


# ---------------------------------------------------------------- operations


def test_rfc7644_3_5_2_op_must_be_add_remove_or_replace() -> None:
    with pytest.raises(InvalidSyntax):
        patched(user(), {"op": "move", "path": "title", "value": "x"})
    with pytest.raises(InvalidSyntax):
        patched(user(), "add")  # type: ignore[arg-type]
    with pytest.raises(InvalidSyntax):
        apply_patch(user(), [], USER_TYPE)


def test_rfc7644_3_5_2_atomic_second_operation_fails_and_input_is_unchanged() -> None:
    doc = user(displayName="Before", emails=[{"value": "a@x", "type": "home"}])
    before = copy.deepcopy(doc)
    with pytest.raises(NoTarget):
        patched(
            doc,
            {"op": "replace", "path": "displayName", "value": "After"},
            {"op": "add", "path": "emails", "value": [{"value": "b@x"}]},
            {"op": "replace", "path": 'emails[type eq "work"].value', "value": "c@x"},
        )
    assert doc == before


def test_input_is_never_mutated_on_success() -> None:
    doc = user(emails=[{"value": "a@x", "type": "work"}], name={"givenName": "B"})
    before = copy.deepcopy(doc)
    out = patched(
        doc,
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "b@x"},
        {"op": "add", "path": "name.familyName", "value": "Jensen"},
    )
    assert doc == before
    assert out["emails"] == [{"value": "b@x", "type": "work"}]


def test_error_names_the_operation() -> None:
    with pytest.raises(Mutability) as err:
        patched(
            user(),
            {"op": "add", "path": "title", "value": "x"},
            {"op": "replace", "path": "id", "value": "y"},
        )
    assert err.value.detail.startswith("Operation 2 (replace)")


def test_id_and_meta_are_untouched() -> None:
    out = patched(
        user(),
        {"op": "replace", "value": {"id": "other", "meta": {"version": "x"}, "title": "Boss"}},
    )
    assert out["id"] == UID and out["meta"] == META and out["title"] == "Boss"


# ---------------------------------------------------------------- add (§3.5.2.1)


def test_rfc7644_3_5_2_1_add_emails() -> None:
    doc = user(emails=[{"value": "babs@jensen.org", "type": "home"}])
    out = patched(
        doc,
        {
            "op": "add",
            "path": "emails",
            "value": [{"type": "work", "value": "bjensen@example.com"}],
        },
    )
    assert out["emails"] == [
        {"value": "babs@jensen.org", "type": "home"},
        {"type": "work", "value": "bjensen@example.com"},
    ]


def test_rfc7644_3_5_2_1_add_existing_value_is_not_duplicated() -> None:
    doc = user(emails=[{"value": "babs@jensen.org", "type": "home"}])
    out = patched(
        doc,
        {"op": "add", "path": "emails", "value": [{"value": "BABS@jensen.org"}]},
        {"op": "add", "path": "emails", "value": {"value": "babs@jensen.org"}},
    )
    assert out["emails"] == [{"value": "babs@jensen.org", "type": "home"}]


def test_rfc7644_3_5_2_1_add_address_without_value_compares_whole_value() -> None:
    address = {"type": "work", "locality": "Hollywood"}
    out = patched(
        user(addresses=[dict(address)]), {"op": "add", "path": "addresses", "value": [address]}
    )
    assert out["addresses"] == [address]


def test_rfc7644_3_5_2_1_add_without_path_merges_attributes() -> None:
    doc = user(emails=[{"value": "a@x"}], name={"familyName": "Jensen"})
    out = patched(
        doc,
        {
            "op": "add",
            "value": {
                "emails": [{"value": "babs@jensen.org", "type": "home"}],
                "nickname": "Babs",
                "name": {"givenName": "Barbara"},
                "schemas": ["ignored"],
                "id": "ignored",
            },
        },
    )
    assert out["emails"] == [{"value": "a@x"}, {"value": "babs@jensen.org", "type": "home"}]
    assert out["nickName"] == "Babs"
    assert out["name"] == {"familyName": "Jensen", "givenName": "Barbara"}
    assert out["id"] == UID


def test_rfc7644_3_5_2_1_add_without_path_needs_an_object() -> None:
    with pytest.raises(InvalidValue):
        patched(user(), {"op": "add", "value": ["title"]})


def test_rfc7644_3_5_2_1_add_needs_a_value() -> None:
    with pytest.raises(InvalidValue):
        patched(user(), {"op": "add", "path": "title"})


def test_rfc7644_3_5_2_1_add_to_single_complex_merges_sub_attributes() -> None:
    out = patched(
        user(name={"familyName": "Jensen", "givenName": "B"}),
        {"op": "add", "path": "name", "value": {"givenName": "Barbara"}},
    )
    assert out["name"] == {"familyName": "Jensen", "givenName": "Barbara"}


def test_rfc7643_2_4_add_primary_clears_other_primary() -> None:
    doc = user(emails=[{"value": "a@x", "primary": True}])
    out = patched(
        doc, {"op": "add", "path": "emails", "value": [{"value": "b@x", "primary": True}]}
    )
    assert out["emails"] == [{"value": "a@x", "primary": False}, {"value": "b@x", "primary": True}]


def test_rfc7643_2_4_add_two_primaries_is_invalid_value() -> None:
    with pytest.raises(InvalidValue):
        patched(
            user(),
            {
                "op": "add",
                "path": "emails",
                "value": [{"value": "a@x", "primary": True}, {"value": "b@x", "primary": True}],
            },
        )


def test_entra_add_with_filter_and_no_match_creates_one_value_then_fills_it() -> None:
    out = patched(
        user(addresses=[{"type": "home", "locality": "Elsewhere"}]),
        {"op": "add", "path": 'addresses[type eq "work"].streetAddress', "value": "1 Main St"},
        {"op": "add", "path": 'addresses[type eq "work"].locality', "value": "Springfield"},
    )
    assert out["addresses"] == [
        {"type": "home", "locality": "Elsewhere"},
        {"type": "work", "streetAddress": "1 Main St", "locality": "Springfield"},
    ]


def test_entra_add_email_value_by_filter_creates_typed_email() -> None:
    out = patched(user(), {"op": "add", "path": 'emails[type eq "work"].value', "value": "w@x"})
    assert out["emails"] == [{"type": "work", "value": "w@x"}]


def test_add_with_filter_that_names_no_value_to_create_is_no_target() -> None:
    with pytest.raises(NoTarget):
        patched(user(), {"op": "add", "path": 'emails[type ne "work"].value', "value": "w@x"})


def test_add_with_filter_sets_sub_attribute_on_matches() -> None:
    doc = user(phoneNumbers=[{"value": "1", "type": "work"}, {"value": "2", "type": "home"}])
    out = patched(
        doc, {"op": "add", "path": 'phoneNumbers[type eq "work"].display', "value": "Office"}
    )
    assert out["phoneNumbers"][0] == {"value": "1", "type": "work", "display": "Office"}


def test_rfc7644_3_5_2_1_add_to_extension_attribute_by_urn_path() -> None:
    out = patched(
        user(), {"op": "add", "path": f"{ENTERPRISE_SCHEMA}:employeeNumber", "value": "701984"}
    )
    assert out[ENTERPRISE_SCHEMA] == {"employeeNumber": "701984"}
    assert out["schemas"] == [USER_SCHEMA, ENTERPRISE_SCHEMA]


def test_add_without_path_with_urn_keys() -> None:
    out = patched(
        user(),
        {
            "op": "add",
            "value": {
                f"{ENTERPRISE_SCHEMA}:department": "R&D",
                f"{USER_SCHEMA}:title": "Boss",
                ENTERPRISE_SCHEMA: {"costCenter": "4130"},
            },
        },
    )
    assert out["title"] == "Boss"
    assert out[ENTERPRISE_SCHEMA] == {"department": "R&D", "costCenter": "4130"}


# ---------------------------------------------------------------- replace (§3.5.2.3)


def test_rfc7644_3_5_2_3_replace_members_of_multi_valued_attribute() -> None:
    doc = user(emails=[{"value": "a@x"}, {"value": "b@x"}])
    out = patched(doc, {"op": "replace", "path": "emails", "value": [{"value": "c@x"}]})
    assert out["emails"] == [{"value": "c@x"}]


def test_rfc7644_3_5_2_3_replace_without_path() -> None:
    doc = user(emails=[{"value": "a@x"}], name={"familyName": "Jensen", "givenName": "B"})
    out = patched(
        doc,
        {
            "op": "replace",
            "value": {
                "emails": [{"value": "bjensen@example.com", "type": "work"}],
                "name": {"givenName": "Barbara"},
                "active": False,
            },
        },
    )
    assert out["emails"] == [{"value": "bjensen@example.com", "type": "work"}]
    # Sub-attributes not specified are left unchanged.
    assert out["name"] == {"familyName": "Jensen", "givenName": "Barbara"}
    assert out["active"] is False


def test_rfc7644_3_5_2_3_replace_without_path_with_dotted_keys() -> None:
    out = patched(
        user(name={"familyName": "Jensen"}),
        {
            "op": "replace",
            "value": {"name.givenName": "Barbara", "NAME.familyName": "Jensen-Smith"},
        },
    )
    assert out["name"] == {"familyName": "Jensen-Smith", "givenName": "Barbara"}


def test_rfc7644_3_5_2_3_replace_without_path_ignores_read_only_id() -> None:
    out = patched(user(), {"op": "replace", "value": {"id": "x", "groups": [], "active": False}})
    assert out["id"] == UID and out["active"] is False


def test_rfc7644_3_5_2_3_replace_filter_sub_attribute() -> None:
    doc = user(
        addresses=[
            {"type": "work", "streetAddress": "old"},
            {"type": "home", "streetAddress": "home"},
        ]
    )
    out = patched(
        doc,
        {
            "op": "replace",
            "path": 'addresses[type eq "work"].streetAddress',
            "value": "1010 Broadway Ave",
        },
    )
    assert out["addresses"] == [
        {"type": "work", "streetAddress": "1010 Broadway Ave"},
        {"type": "home", "streetAddress": "home"},
    ]


def test_rfc7644_3_5_2_3_replace_filter_merges_value_into_matches() -> None:
    doc = user(emails=[{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home"}])
    out = patched(
        doc,
        {
            "op": "replace",
            "path": 'emails[type eq "work"]',
            "value": {"value": "new@x", "primary": True},
        },
    )
    assert out["emails"] == [
        {"value": "new@x", "type": "work", "primary": True},
        {"value": "b@x", "type": "home"},
    ]


def test_rfc7644_3_5_2_3_replace_with_filter_and_no_match_is_no_target() -> None:
    with pytest.raises(NoTarget) as err:
        patched(
            user(emails=[{"value": "a@x", "type": "home"}]),
            {"op": "replace", "path": 'emails[type eq "work"].value', "value": "b@x"},
        )
    assert err.value.scim_type == "noTarget"


def test_rfc7643_2_1_case_insensitive_path_names() -> None:
    doc = user(emails=[{"value": "a@x", "type": "work"}])
    out = patched(doc, {"op": "replace", "path": 'Emails[Type eq "work"].Value', "value": "b@x"})
    assert out["emails"] == [{"value": "b@x", "type": "work"}]


def test_rfc7643_2_4_replace_primary_by_filter_clears_other_primary() -> None:
    doc = user(
        emails=[{"value": "a@x", "type": "home", "primary": True}, {"value": "b@x", "type": "work"}]
    )
    out = patched(doc, {"op": "replace", "path": 'emails[type eq "work"].primary', "value": True})
    assert [e.get("primary") for e in out["emails"]] == [False, True]


def test_rfc7643_2_4_replace_primary_on_two_matches_is_invalid_value() -> None:
    doc = user(emails=[{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "work"}])
    with pytest.raises(InvalidValue):
        patched(doc, {"op": "replace", "path": 'emails[type eq "work"].primary', "value": True})


def test_rfc7644_3_5_2_3_replace_enterprise_manager_by_urn_path() -> None:
    doc = user(
        **{
            ENTERPRISE_SCHEMA: {
                "manager": {
                    "value": "old",
                    "$ref": "https://x/Users/old",
                    "displayName": "Old Boss",
                }
            }
        }
    )
    out = patched(
        doc, {"op": "replace", "path": f"{ENTERPRISE_SCHEMA}:manager", "value": {"value": "new-id"}}
    )
    assert out[ENTERPRISE_SCHEMA] == {"manager": {"value": "new-id"}}


def test_replace_whole_extension_by_its_urn() -> None:
    doc = user(**{ENTERPRISE_SCHEMA: {"department": "Old", "division": "D"}})
    out = patched(doc, {"op": "replace", "path": ENTERPRISE_SCHEMA, "value": {"department": "New"}})
    assert out[ENTERPRISE_SCHEMA] == {"department": "New", "division": "D"}


def test_rfc7644_3_5_2_3_replace_type_mismatch_is_invalid_value() -> None:
    with pytest.raises(InvalidValue, match="active"):
        patched(user(), {"op": "replace", "path": "active", "value": "yes"})
    with pytest.raises(InvalidValue, match="givenName"):
        patched(user(), {"op": "replace", "path": "name.givenName", "value": 5})


def test_replace_user_name_with_empty_string_is_invalid_value() -> None:
    with pytest.raises(InvalidValue, match="userName is required"):
        patched(user(), {"op": "replace", "path": "userName", "value": ""})


def test_rfc7643_2_5_replace_with_null_unassigns() -> None:
    out = patched(user(title="Boss"), {"op": "replace", "path": "title", "value": None})
    assert "title" not in out


# ---------------------------------------------------------------- remove (§3.5.2.2)


def test_rfc7644_3_5_2_2_remove_without_path_is_no_target() -> None:
    with pytest.raises(NoTarget):
        patched(user(), {"op": "remove"})


def test_rfc7644_3_5_2_2_remove_single_valued_attribute() -> None:
    out = patched(
        user(title="Boss", name={"givenName": "B", "familyName": "J"}),
        {"op": "remove", "path": "title"},
        {"op": "remove", "path": "name.givenName"},
    )
    assert "title" not in out
    assert out["name"] == {"familyName": "J"}


def test_rfc7644_3_5_2_2_remove_all_values() -> None:
    out = patched(user(emails=[{"value": "a@x"}]), {"op": "remove", "path": "emails"})
    assert "emails" not in out


def test_rfc7644_3_5_2_2_remove_by_filter() -> None:
    doc = user(emails=[{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home"}])
    out = patched(doc, {"op": "remove", "path": 'emails[type eq "work"]'})
    assert out["emails"] == [{"value": "b@x", "type": "home"}]


def test_rfc7644_3_5_2_2_remove_by_filter_without_match_is_a_no_op() -> None:
    doc = user(emails=[{"value": "b@x", "type": "home"}])
    assert patched(doc, {"op": "remove", "path": 'emails[type eq "work"]'})["emails"] == [
        {"value": "b@x", "type": "home"}
    ]


def test_rfc7644_3_5_2_2_remove_last_value_unassigns_attribute() -> None:
    out = patched(
        user(emails=[{"value": "a@x", "type": "work"}]),
        {"op": "remove", "path": 'emails[value eq "A@X"]'},
    )
    assert "emails" not in out


def test_rfc7644_3_5_2_2_remove_sub_attribute_of_matches() -> None:
    doc = user(addresses=[{"type": "work", "streetAddress": "1", "locality": "L"}])
    out = patched(doc, {"op": "remove", "path": 'addresses[type eq "work"].streetAddress'})
    assert out["addresses"] == [{"type": "work", "locality": "L"}]


def test_remove_with_value_list_removes_only_listed_values() -> None:
    doc = user(emails=[{"value": "a@x"}, {"value": "b@x"}, {"value": "c@x"}])
    out = patched(
        doc, {"op": "remove", "path": "emails", "value": [{"value": "a@x"}, {"value": "C@X"}]}
    )
    assert out["emails"] == [{"value": "b@x"}]


def test_rfc7644_3_5_2_2_remove_required_attribute_is_mutability() -> None:
    with pytest.raises(Mutability):
        patched(user(), {"op": "remove", "path": "userName"})
    with pytest.raises(Mutability):
        apply_patch(group(), [{"op": "remove", "path": "displayName"}], GROUP_TYPE)


def test_remove_last_extension_attribute_drops_extension_and_schema() -> None:
    doc = user(**{ENTERPRISE_SCHEMA: {"department": "R&D"}})
    doc["schemas"] = [USER_SCHEMA, ENTERPRISE_SCHEMA]
    out = patched(doc, {"op": "remove", "path": f"{ENTERPRISE_SCHEMA}:department"})
    assert ENTERPRISE_SCHEMA not in out
    assert out["schemas"] == [USER_SCHEMA]


# ---------------------------------------------------------------- paths and mutability


@pytest.mark.parametrize(
    "path",
    ["id", "meta", "meta.lastModified", "groups", f"{ENTERPRISE_SCHEMA}:manager.displayName"],
)
def test_rfc7643_2_2_read_only_path_is_mutability(path: str) -> None:
    with pytest.raises(Mutability):
        patched(user(), {"op": "replace", "path": path, "value": "x"})


@pytest.mark.parametrize(
    "path", ["favouriteColour", "name.nickname", "title.x", "emails[", 'name[givenName eq "x"]']
)
def test_rfc7644_3_5_2_unknown_or_malformed_path_is_invalid_path(path: str) -> None:
    with pytest.raises(InvalidPath):
        patched(user(), {"op": "replace", "path": path, "value": "x"})


def test_rfc7644_table_9_unknown_attribute_in_path_filter_is_invalid_filter() -> None:
    with pytest.raises(InvalidFilter):
        patched(user(), {"op": "remove", "path": 'emails[colour eq "red"]'})


def test_sub_attribute_without_filter_applies_to_every_value() -> None:
    doc = user(emails=[{"value": "a@x", "type": "work"}, {"value": "b@x", "type": "home"}])
    out = patched(doc, {"op": "remove", "path": "emails.type"})
    assert out["emails"] == [{"value": "a@x"}, {"value": "b@x"}]


# ---------------------------------------------------------------- password


def test_password_is_returned_not_stored() -> None:
    result = patch_user(user(), {"op": "replace", "path": "password", "value": "n3w"})
    assert result.password == "n3w"
    assert "password" not in result.doc
    pathless = patch_user(user(), {"op": "replace", "value": {"password": "x", "title": "T"}})
    assert pathless.password == "x" and "password" not in pathless.doc


def test_password_cannot_be_removed() -> None:
    with pytest.raises(Mutability):
        patch_user(user(), {"op": "remove", "path": "password"})


def test_user_patch_has_no_member_change() -> None:
    result = patch_user(user(), {"op": "replace", "path": "title", "value": "T"})
    assert result.members is None and result.password is None


# ---------------------------------------------------------------- group members


def test_group_patch_without_members_has_no_member_change() -> None:
    result = apply_patch(
        group(), [{"op": "replace", "path": "displayName", "value": "Squad"}], GROUP_TYPE
    )
    assert result.doc["displayName"] == "Squad"
    assert result.members is None


def test_rfc7644_3_5_2_1_add_members() -> None:
    change = members(
        {
            "op": "add",
            "path": "members",
            "value": [{"value": "u1", "display": "A"}, {"value": "g2", "type": "Group"}],
        }
    )
    assert change == MemberChange(add={"u1": "User", "g2": "Group"}, display={"u1": "A"})


def test_add_then_remove_same_member_cancels() -> None:
    change = members(
        {"op": "add", "path": "members", "value": [{"value": "u1"}]},
        {"op": "remove", "path": 'members[value eq "u1"]'},
    )
    assert change.add == {} and change.remove == {"u1"} and not change.replace_all


def test_remove_then_add_same_member_keeps_it() -> None:
    change = members(
        {"op": "remove", "path": 'members[value eq "u1"]'},
        {"op": "add", "path": "members", "value": {"value": "u1"}},
    )
    assert change.add == {"u1": "User"} and change.remove == set()


def test_rfc7644_3_5_2_2_remove_members_by_filter_with_or() -> None:
    change = members({"op": "remove", "path": 'members[value eq "u1" or value eq "u2"]'})
    assert change.remove == {"u1", "u2"}


def test_remove_members_with_value_list() -> None:
    change = members(
        {"op": "remove", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]}
    )
    assert change == MemberChange(remove={"u1", "u2"})


def test_rfc7644_3_5_2_3_replace_members() -> None:
    change = members(
        {"op": "remove", "path": 'members[value eq "u9"]'},
        {"op": "replace", "path": "members", "value": [{"value": "u1"}]},
        {"op": "add", "path": "members", "value": [{"value": "u2"}]},
    )
    assert change == MemberChange(replace_all=True, add={"u1": "User", "u2": "User"})


def test_rfc7644_3_5_2_2_remove_all_members() -> None:
    change = members(
        {"op": "add", "path": "members", "value": [{"value": "u1"}]},
        {"op": "remove", "path": "members"},
    )
    assert change == MemberChange(replace_all=True)


def test_pathless_members_are_folded() -> None:
    added = members({"op": "add", "value": {"members": [{"value": "u1"}]}})
    assert added == MemberChange(add={"u1": "User"})
    replaced = apply_patch(
        group(),
        [{"op": "replace", "value": {"displayName": "Squad", "members": [{"value": "u2"}]}}],
        GROUP_TYPE,
    )
    assert replaced.members == MemberChange(replace_all=True, add={"u2": "User"})
    assert replaced.doc["displayName"] == "Squad" and "members" not in replaced.doc


@pytest.mark.parametrize(
    "path",
    [
        'members[value ne "u1"]',
        'members[type eq "User"]',
        'members[value eq "u1" and value eq "u2"]',
    ],
)
def test_unsupported_member_filter_is_invalid_filter(path: str) -> None:
    with pytest.raises(InvalidFilter, match="value eq"):
        members({"op": "remove", "path": path})


@pytest.mark.parametrize("path", ["members.value", 'members[value eq "u1"].display'])
def test_member_sub_attribute_path_is_invalid_path(path: str) -> None:
    with pytest.raises(InvalidPath):
        members({"op": "remove", "path": path})


@pytest.mark.parametrize("value", [["u1"], [{"display": "x"}], [{"value": "u1", "type": "Org"}]])
def test_member_values_need_a_string_value(value: Any) -> None:
    with pytest.raises(InvalidValue):
        members({"op": "add", "path": "members", "value": value})
