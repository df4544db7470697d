"""OneLogin's and JumpCloud's requests, sent as they send them, each checked by a GET.

OneLogin: developers.onelogin.com/scim/implement-scim-api (call list, application/json);
OneLogin KB0013904 (bodies are the admin's "SCIM JSON Template" with values substituted);
published templates of OneLogin SCIM apps (Keepnet, Templafy, Living Security): `"active":
"{$user.active}"`, `"id": null`, `meta`, `manager.managerId`, "" where the user has no value.
JumpCloud: "Identity Management using a Custom SCIM Integration" (Test Connection creates and
deletes a test user and group; member removal by value list; one replace per attribute).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.conftest import ScimClient

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _onelogin_template(user_name: str, **values: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemas": [USER, ENTERPRISE],
        "id": None,
        "meta": {"resourceType": "User"},
        "userName": user_name,
        "active": "true",
        "name": {"givenName": "Olga", "familyName": "Login"},
        "title": "",
        "emails": {"value": f"{user_name}@example.com", "type": "work"},
        "phoneNumbers": [
            {"value": "+1 555 0100", "type": "work"},
            {"value": "", "type": "mobile"},
            {"value": "", "type": "fax"},
        ],
        "addresses": [{"streetAddress": "1 Main St", "city": "Springfield", "locality": ""}],
        "prefferedLanguage": "en",
        ENTERPRISE: {
            "department": "Sales",
            "organization": "",
            "manager": {"managerId": "", "displayName": " "},
        },
    }
    body.update(values)
    return body


def test_onelogin_template_create(scim: ScimClient) -> None:
    response = scim.post("/Users", _onelogin_template("olga"))
    assert response.status_code == 201, response.get_json()
    got = scim.get(f"/Users/{response.get_json()['id']}").get_json()
    assert got["active"] is True
    assert "title" not in got  # "" is unassigned
    assert got["emails"] == [{"value": "olga@example.com", "type": "work"}]
    assert got["phoneNumbers"] == [{"value": "+1 555 0100", "type": "work"}]
    assert got["addresses"] == [{"streetAddress": "1 Main St"}]
    assert got[ENTERPRISE] == {"department": "Sales"}  # no organization, no manager


def test_onelogin_manager_id_and_put_update_with_string_active(scim: ScimClient) -> None:
    boss = scim.user("boss")
    created = scim.post("/Users", _onelogin_template("oleg")).get_json()
    body = _onelogin_template(
        "oleg",
        active="false",
        title="Rep",
        **{ENTERPRISE: {"manager": {"managerId": boss["id"], "displayName": "Boss"}}},
    )
    response = scim.put(f"/Users/{created['id']}", body)
    assert response.status_code == 200, response.get_json()
    got = scim.get(f"/Users/{created['id']}").get_json()
    assert got["active"] is False
    assert got["title"] == "Rep"
    assert got[ENTERPRISE]["manager"]["value"] == boss["id"]


def test_a_required_attribute_sent_empty_is_still_refused(scim: ScimClient) -> None:
    response = scim.post("/Users", _onelogin_template(""))
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidValue"


def test_onelogin_gets_application_json_when_it_asks_for_it(scim: ScimClient) -> None:
    user = scim.user("json")
    response = scim.get(f"/Users/{user['id']}", headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert response.get_json()["id"] == user["id"]
    # Without that preference, RFC 7644 §3.1's media type.
    assert scim.get(f"/Users/{user['id']}").content_type == "application/scim+json"
    error = scim.get("/Users/nope", headers={"Accept": "application/json"})
    assert (error.status_code, error.content_type) == (404, "application/json")


def test_onelogin_connection_check_and_group_patch(scim: ScimClient) -> None:
    missing = quote('userName eq "onelogin-no-such-user"')
    assert scim.get(f"/Users?filter={missing}").get_json()["totalResults"] == 0
    user = scim.post("/Users", _onelogin_template("member")).get_json()
    group = scim.group("OneLogin Role")
    assert group["id"] in {g["id"] for g in scim.get("/Groups").get_json()["Resources"]}
    for op, expected in (("add", {user["id"]}), ("remove", set())):
        response = scim.patch(
            f"/Groups/{group['id']}",
            {
                "schemas": [PATCH_OP],
                "Operations": [{"op": op, "path": "members", "value": [{"value": user["id"]}]}],
            },
        )
        assert response.status_code == 204
        members = scim.get(f"/Groups/{group['id']}").get_json().get("members", [])
        assert {m["value"] for m in members} == expected


def test_entra_tutorial_filter_with_bare_values(scim: ScimClient) -> None:
    """Microsoft's tutorial prints `externalId eq jyoung`, without quotes."""
    user = scim.user("jyoung", externalId="jyoung")
    body = scim.get(f"/Users?filter={quote('externalId eq jyoung')}").get_json()
    assert [r["id"] for r in body["Resources"]] == [user["id"]]
    # A real JSON literal stays one: `active eq true` is a boolean comparison.
    assert scim.get(f"/Users?filter={quote('active eq true')}").status_code == 200


def test_jumpcloud_test_connection_then_updates_and_member_removal(scim: ScimClient) -> None:
    # Test Connection: a test user and a test group (never empty), then both deleted.
    probe = scim.user("jc-test@example.com", name={"givenName": "JC", "familyName": "Test"})
    group = scim.group("JumpCloud Test", members=[probe["id"]])
    assert scim.delete(f"/Groups/{group['id']}").status_code == 204
    assert scim.delete(f"/Users/{probe['id']}").status_code == 204
    assert scim.get(f"/Users/{probe['id']}").status_code == 404

    user = scim.user("jc@example.com", name={"givenName": "Jay", "familyName": "Cloud"})
    team = scim.group("Team", members=[user["id"]])
    # Updates: one replace per attribute, each with a path, active as a JSON boolean.
    response = scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "replace", "path": "name.givenName", "value": "Jae"},
                {"op": "replace", "path": "displayName", "value": "Jae Cloud"},
                {"op": "replace", "path": "active", "value": False},
            ],
        },
    )
    assert response.status_code == 200
    got = scim.get(f"/Users/{user['id']}").get_json()
    assert (got["name"]["givenName"], got["displayName"], got["active"]) == (
        "Jae",
        "Jae Cloud",
        False,
    )
    # Member removal by value list, without a filter.
    response = scim.patch(
        f"/Groups/{team['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "remove", "path": "members", "value": [{"value": user["id"]}]}],
        },
    )
    assert response.status_code == 204
    assert scim.get(f"/Groups/{team['id']}").get_json().get("members", []) == []
