"""Microsoft Entra ID's requests, sent exactly as Entra sends them, each checked by a GET.

Shapes from Microsoft's "Tutorial: Develop and plan provisioning for a SCIM endpoint" and
"Known issues and resolutions with SCIM 2.0 protocol compliance" (the default dialect, and
the one behind the `aadOptscim062020` flag on the tenant URL).
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import ScimClient

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
FLAG = "?aadOptscim062020"


def _ops(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def _entra_user(scim: ScimClient, user_name: str, query: str = "", **extra: Any) -> dict[str, Any]:
    """POST /Users as in the tutorial's "Create User" request."""
    body = {
        "schemas": [USER, ENTERPRISE],
        "externalId": str(uuid.uuid4()),
        "userName": user_name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": f"{user_name}@contoso.com"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Given Family", "familyName": "Family", "givenName": "Given"},
        "roles": [],
        **extra,
    }
    response = scim.post(f"/Users{query}", body)
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def _patch_user(scim: ScimClient, uid: str, *ops: dict[str, Any], query: str = "") -> Any:
    response = scim.patch(f"/Users/{uid}{query}", _ops(*ops))
    assert response.status_code == 200, response.get_json()
    return scim.get(f"/Users/{uid}").get_json()


def _filter(scim: ScimClient, resource: str, expression: str, extra: str = "") -> Any:
    response = scim.get(f"/{resource}?filter={quote(expression)}{extra}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# ---------------------------------------------------------------- PATCH shapes


def test_capitalised_ops(scim: ScimClient) -> None:
    user = _entra_user(scim, "ops")
    got = _patch_user(
        scim,
        user["id"],
        {"op": "Replace", "path": "displayName", "value": "Capital"},
        {"op": "Add", "path": "title", "value": "Engineer"},
        {"op": "Remove", "path": "roles"},
    )
    assert (got["displayName"], got["title"]) == ("Capital", "Engineer")


@pytest.mark.parametrize(("sent", "stored"), [("False", False), ("True", True), ("false", False)])
def test_active_as_a_string(scim: ScimClient, sent: str, stored: bool) -> None:
    user = _entra_user(scim, "strbool", active=not stored)
    got = _patch_user(scim, user["id"], {"op": "Replace", "path": "active", "value": sent})
    assert got["active"] is stored


def test_string_booleans_in_a_create_and_in_sub_attributes(scim: ScimClient) -> None:
    user = _entra_user(
        scim,
        "strcreate",
        active="False",
        emails=[{"primary": "True", "type": "work", "value": "s@contoso.com"}],
    )
    got = scim.get(f"/Users/{user['id']}").get_json()
    assert got["active"] is False
    assert got["emails"][0]["primary"] is True


def test_a_string_that_is_no_boolean_is_still_refused(scim: ScimClient) -> None:
    user = _entra_user(scim, "notbool")
    response = scim.patch(
        f"/Users/{user['id']}", _ops({"op": "Replace", "path": "active", "value": "maybe"})
    )
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidValue"
    assert scim.get(f"/Users/{user['id']}").get_json()["active"] is True


def test_pathless_replace_with_dotted_and_urn_keys(scim: ScimClient) -> None:
    user = _entra_user(scim, "dotted")
    got = _patch_user(
        scim,
        user["id"],
        {
            "op": "Replace",
            "value": {
                "name.givenName": "Barbara",
                "name.familyName": "Jensen",
                f"{ENTERPRISE}:employeeNumber": "701984",
                "id": "not-the-id",  # an id inside the body is ignored
            },
        },
    )
    assert got["id"] == user["id"]
    assert (got["name"]["givenName"], got["name"]["familyName"]) == ("Barbara", "Jensen")
    assert got["name"]["formatted"] == "Given Family"  # the other sub-attributes stay
    assert got[ENTERPRISE]["employeeNumber"] == "701984"


def test_optscim062020_pathless_replace_with_value_path_keys(scim: ScimClient) -> None:
    """The flag's "replace multiple attributes" request: keys are paths, filters included."""
    user = _entra_user(scim, "flagreplace", query=FLAG)
    response = scim.patch(
        f"/Users/{user['id']}{FLAG}",
        _ops(
            {
                "op": "replace",
                "value": {
                    "displayName": "Pvlo",
                    'emails[type eq "work"].value': "pvlo@contoso.com",
                    "name.givenName": "Gtfd",
                    "name.familyName": "Pkqf",
                    "externalId": "Eqpj",
                    f"{ENTERPRISE}:employeeNumber": "Eqpj",
                },
            }
        ),
    )
    assert response.status_code == 200, response.get_json()
    got = scim.get(f"/Users/{user['id']}").get_json()
    assert got["displayName"] == "Pvlo"
    assert got["emails"] == [{"primary": True, "type": "work", "value": "pvlo@contoso.com"}]
    assert (got["name"]["givenName"], got["name"]["familyName"]) == ("Gtfd", "Pkqf")
    assert got["externalId"] == "Eqpj"
    assert got[ENTERPRISE]["employeeNumber"] == "Eqpj"


def test_optscim062020_pathless_add_of_one_attribute(scim: ScimClient) -> None:
    user = _entra_user(scim, "flagadd", query=FLAG)
    got = _patch_user(scim, user["id"], {"op": "add", "value": {"nickName": "Babs"}}, query=FLAG)
    assert got["nickName"] == "Babs"


def test_optscim062020_active_as_a_boolean(scim: ScimClient) -> None:
    user = _entra_user(scim, "flagactive", query=FLAG)
    got = _patch_user(
        scim, user["id"], {"op": "replace", "path": "active", "value": False}, query=FLAG
    )
    assert got["active"] is False


def test_manager_as_a_bare_string_on_the_urn_path_then_removed_without_value(
    scim: ScimClient,
) -> None:
    boss = _entra_user(scim, "boss")
    user = _entra_user(scim, "report")
    path = f"{ENTERPRISE}:manager"
    got = _patch_user(scim, user["id"], {"op": "Add", "path": path, "value": boss["id"]})
    assert got[ENTERPRISE]["manager"]["value"] == boss["id"]
    got = _patch_user(scim, user["id"], {"op": "Remove", "path": path})
    assert "manager" not in got.get(ENTERPRISE, {})


def test_manager_as_in_the_tutorial_add_and_remove_with_ref(scim: ScimClient) -> None:
    boss = _entra_user(scim, "boss2")
    user = _entra_user(scim, "report2")
    ref = f"http://localhost/scim/v2/Users/{boss['id']}"
    got = _patch_user(
        scim,
        user["id"],
        {"op": "Add", "path": "manager", "value": [{"$ref": ref, "value": boss["id"]}]},
    )
    assert got[ENTERPRISE]["manager"]["value"] == boss["id"]
    got = _patch_user(
        scim,
        user["id"],
        {"op": "Remove", "path": "manager", "value": [{"$ref": None, "value": boss["id"]}]},
    )
    assert "manager" not in got.get(ENTERPRISE, {})


@pytest.mark.parametrize("empty", ["", {"value": ""}])
def test_manager_replaced_with_an_empty_value_is_removed(scim: ScimClient, empty: Any) -> None:
    boss = _entra_user(scim, "boss3")
    user = _entra_user(scim, "report3", **{ENTERPRISE: {"manager": {"value": boss["id"]}}})
    assert scim.get(f"/Users/{user['id']}").get_json()[ENTERPRISE]["manager"]
    path = f"{ENTERPRISE}:manager"
    got = _patch_user(scim, user["id"], {"op": "Replace", "path": path, "value": empty})
    assert "manager" not in got.get(ENTERPRISE, {})


def test_add_on_a_value_path_creates_then_fills_one_entry(scim: ScimClient) -> None:
    user = _entra_user(scim, "address")
    got = _patch_user(
        scim,
        user["id"],
        {"op": "Add", "path": 'addresses[type eq "work"].streetAddress', "value": "1 Main St"},
    )
    got = _patch_user(
        scim,
        user["id"],
        {"op": "Add", "path": 'addresses[type eq "work"].locality', "value": "Springfield"},
    )
    assert got["addresses"] == [
        {"type": "work", "streetAddress": "1 Main St", "locality": "Springfield"}
    ]


def test_add_on_an_existing_work_email_value_path_updates_it(scim: ScimClient) -> None:
    """Entra sends Add (not Replace) for `emails[type eq "work"].value` that already exists."""
    user = _entra_user(scim, "emailadd")
    got = _patch_user(
        scim,
        user["id"],
        {"op": "Add", "path": 'emails[type eq "work"].value', "value": "new@contoso.com"},
    )
    assert got["emails"] == [{"primary": True, "type": "work", "value": "new@contoso.com"}]


def test_attribute_names_in_any_case(scim: ScimClient) -> None:
    response = scim.post(
        "/Users",
        {
            "schemas": [USER],
            "UserName": "Cased",
            "Active": True,
            "Emails": [{"Primary": True, "Type": "work", "Value": "cased@contoso.com"}],
        },
    )
    assert response.status_code == 201, response.get_json()
    uid = response.get_json()["id"]
    got = _patch_user(scim, uid, {"op": "Replace", "path": "Active", "value": "False"})
    assert got["userName"] == "Cased"
    assert got["active"] is False
    assert got["emails"] == [{"primary": True, "type": "work", "value": "cased@contoso.com"}]
    found = _filter(scim, "Users", 'UserName eq "cased"')
    assert [r["id"] for r in found["Resources"]] == [uid]


# ---------------------------------------------------------------- groups


def _entra_group(scim: ScimClient, name: str, query: str = "") -> dict[str, Any]:
    response = scim.post(
        f"/Groups{query}",
        {
            "schemas": [GROUP],
            "externalId": str(uuid.uuid4()),
            "displayName": name,
            "meta": {"resourceType": "Group"},
        },
    )
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def _members(scim: ScimClient, gid: str) -> set[str]:
    return {m["value"] for m in scim.get(f"/Groups/{gid}").get_json().get("members", [])}


def test_member_add_with_null_ref_then_removal_by_value_list(scim: ScimClient) -> None:
    users = [_entra_user(scim, f"m{i}") for i in range(3)]
    group = _entra_group(scim, "Entra Group")
    response = scim.patch(
        f"/Groups/{group['id']}",
        _ops(
            {
                "op": "Add",
                "path": "members",
                "value": [{"$ref": None, "value": u["id"]} for u in users],
            }
        ),
    )
    assert response.status_code == 204, response.get_json()
    assert _members(scim, group["id"]) == {u["id"] for u in users}
    response = scim.patch(
        f"/Groups/{group['id']}",
        _ops({"op": "Remove", "path": "members", "value": [{"value": users[0]["id"]}]}),
    )
    assert response.status_code == 204, response.get_json()
    # Only the listed member goes.
    assert _members(scim, group["id"]) == {users[1]["id"], users[2]["id"]}


def test_optscim062020_member_removal_by_value_filter(scim: ScimClient) -> None:
    users = [_entra_user(scim, f"f{i}", query=FLAG) for i in range(2)]
    group = _entra_group(scim, "Flag Group", query=FLAG)
    scim.patch(
        f"/Groups/{group['id']}{FLAG}",
        _ops({"op": "add", "path": "members", "value": [{"value": u["id"]} for u in users]}),
    )
    response = scim.patch(
        f"/Groups/{group['id']}{FLAG}",
        _ops({"op": "remove", "path": f'members[value eq "{users[0]["id"]}"]'}),
    )
    assert response.status_code == 204
    assert _members(scim, group["id"]) == {users[1]["id"]}


def test_group_rename_with_capitalised_replace(scim: ScimClient) -> None:
    group = _entra_group(scim, "Old Name")
    response = scim.patch(
        f"/Groups/{group['id']}",
        _ops({"op": "Replace", "path": "displayName", "value": "New Name"}),
    )
    assert response.status_code == 204
    assert scim.get(f"/Groups/{group['id']}").get_json()["displayName"] == "New Name"


# ---------------------------------------------------------------- filters and reads


def test_the_filters_entra_sends(scim: ScimClient) -> None:
    boss = _entra_user(scim, "fboss")
    user = _entra_user(scim, "fuser", **{ENTERPRISE: {"manager": {"value": boss["id"]}}})
    uid = user["id"]
    for expression in (
        f'userName eq "{user["userName"]}"',
        f'externalId eq "{user["externalId"]}"',
        f'emails[type eq "work"].value eq "{user["userName"]}@contoso.com"',
        f'id eq "{uid}" and manager eq "{boss["id"]}"',
    ):
        found = _filter(scim, "Users", expression)
        assert [r["id"] for r in found["Resources"]] == [uid], expression
    assert _filter(scim, "Users", f'id eq "{uid}" and manager eq "{uid}"')["totalResults"] == 0

    group = _entra_group(scim, "Filtered")
    scim.patch(
        f"/Groups/{group['id']}",
        _ops({"op": "Add", "path": "members", "value": [{"value": uid}]}),
    )
    found = _filter(scim, "Groups", f'id eq "{group["id"]}" and members eq "{uid}"')
    assert [r["id"] for r in found["Resources"]] == [group["id"]]
    assert (
        _filter(scim, "Groups", f'id eq "{group["id"]}" and members eq "{boss["id"]}"')[
            "totalResults"
        ]
        == 0
    )
    found = _filter(scim, "Groups", 'displayName eq "Filtered"', "&excludedAttributes=members")
    assert [r["id"] for r in found["Resources"]] == [group["id"]]
    assert "members" not in found["Resources"][0]


def test_test_connection_filter_on_a_random_guid(scim: ScimClient) -> None:
    guid = str(uuid.uuid4())
    for expression in (f'userName eq "{guid}"', f'id eq "{guid}"', f'externalId eq "{guid}"'):
        body = _filter(scim, "Users", expression)
        assert body["totalResults"] == 0
        assert body.get("Resources", []) == []


def test_a_disabled_user_is_still_returned(scim: ScimClient) -> None:
    user = _entra_user(scim, "disabled")
    _patch_user(scim, user["id"], {"op": "Replace", "path": "active", "value": "False"})
    assert scim.get(f"/Users/{user['id']}").status_code == 200
    found = _filter(scim, "Users", 'userName eq "disabled"')
    assert [(r["id"], r["active"]) for r in found["Resources"]] == [(user["id"], False)]


def test_the_flag_query_is_accepted_on_every_endpoint(scim: ScimClient) -> None:
    for path in ("/ServiceProviderConfig", "/Schemas", "/ResourceTypes", "/Users", "/Groups"):
        assert scim.get(f"{path}{FLAG}").status_code == 200, path
    user = _entra_user(scim, "everywhere", query=FLAG)
    uid = user["id"]
    assert scim.get(f"/Users/{uid}{FLAG}").status_code == 200
    everywhere = quote('userName eq "everywhere"')
    assert scim.get(f"/Users{FLAG}&filter={everywhere}").get_json()["totalResults"] == 1
    put = scim.put(
        f"/Users/{uid}{FLAG}", {"schemas": [USER], "userName": "everywhere", "title": "T"}
    )
    assert put.status_code == 200, put.get_json()
    search = scim.post(f"/Users/.search{FLAG}", {"filter": 'userName eq "everywhere"'})
    assert search.get_json()["totalResults"] == 1
    bulk = scim.post(
        f"/Bulk{FLAG}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": [
                {
                    "method": "PATCH",
                    "path": f"/Users/{uid}",
                    "data": _ops({"op": "Replace", "path": "active", "value": "False"}),
                }
            ],
        },
    )
    assert bulk.get_json()["Operations"][0]["status"] == "200", bulk.get_json()
    assert scim.get(f"/Users/{uid}").get_json()["active"] is False
    assert scim.delete(f"/Users/{uid}{FLAG}").status_code == 204
    assert scim.get(f"/Users/{uid}").status_code == 404
