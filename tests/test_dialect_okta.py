"""Okta's requests, sent exactly as Okta sends them, each checked by a GET.

Shapes from Okta's "SCIM 2.0 protocol reference" and its SCIM integration guide
(provisioning, profile updates, deactivation, password sync and Group Push).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Flask
from sqlalchemy import select

from tests.conftest import ScimClient

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def _ops(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def _okta_user(scim: ScimClient, login: str, password: str = "1mz050nQ!") -> dict[str, Any]:
    """POST /Users as Okta provisions a user: password and an empty `groups` included."""
    response = scim.post(
        "/Users",
        {
            "schemas": [USER],
            "userName": login,
            "name": {"givenName": "Test", "familyName": "User"},
            "emails": [{"primary": True, "value": login, "type": "work"}],
            "displayName": "Test User",
            "locale": "en-US",
            "externalId": "00ujl29u0le5T6Aj10h7",
            "groups": [],
            "password": password,
            "active": True,
        },
    )
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def _password_hash(app: Flask, uid: str) -> str | None:
    from models import User
    from scim_server.db import db

    with app.app_context():
        return db.session.scalar(select(User.password_hash).where(User.id == uid))


def test_create_with_password_and_empty_groups_never_returns_the_password(
    scim: ScimClient, app: Flask
) -> None:
    user = _okta_user(scim, "test.user@okta.local")
    assert "password" not in user
    got = scim.get(f"/Users/{user['id']}").get_json()
    assert "password" not in got
    assert got.get("groups", []) == []
    stored = _password_hash(app, user["id"])
    assert stored and "1mz050nQ!" not in stored


def test_lookup_by_username_in_another_case_with_okta_paging(scim: ScimClient) -> None:
    user = _okta_user(scim, "Test.User@Okta.Local")
    expression = quote('userName eq "test.user@okta.local"')
    body = scim.get(f"/Users?filter={expression}&startIndex=1&count=100").get_json()
    assert [r["id"] for r in body["Resources"]] == [user["id"]]


def test_duplicate_username_is_409(scim: ScimClient) -> None:
    _okta_user(scim, "dup@okta.local")
    response = scim.post("/Users", {"schemas": [USER], "userName": "DUP@okta.local"})
    assert response.status_code == 409
    assert response.get_json()["scimType"] == "uniqueness"


def test_profile_update_as_read_modify_write_put(scim: ScimClient) -> None:
    user = _okta_user(scim, "put@okta.local")
    current = scim.get(f"/Users/{user['id']}").get_json()
    current["name"]["givenName"] = "Changed"
    current["emails"][0]["value"] = "changed@okta.local"
    response = scim.put(f"/Users/{user['id']}", current)  # meta, id and schemas included
    assert response.status_code == 200, response.get_json()
    got = scim.get(f"/Users/{user['id']}").get_json()
    assert got["name"]["givenName"] == "Changed"
    assert got["emails"][0]["value"] == "changed@okta.local"
    assert got["id"] == user["id"]


def test_deactivate_and_reactivate_with_pathless_replace(scim: ScimClient) -> None:
    user = _okta_user(scim, "deact@okta.local")
    response = scim.patch(
        f"/Users/{user['id']}", _ops({"op": "replace", "value": {"active": False}})
    )
    assert response.status_code == 200, response.get_json()
    assert scim.get(f"/Users/{user['id']}").get_json()["active"] is False
    scim.patch(f"/Users/{user['id']}", _ops({"op": "replace", "value": {"active": True}}))
    assert scim.get(f"/Users/{user['id']}").get_json()["active"] is True


def test_password_sync_with_pathless_replace(scim: ScimClient, app: Flask) -> None:
    user = _okta_user(scim, "pw@okta.local")
    before = _password_hash(app, user["id"])
    response = scim.patch(
        f"/Users/{user['id']}", _ops({"op": "replace", "value": {"password": "t1meMa$heen"}})
    )
    assert response.status_code == 200, response.get_json()
    assert "password" not in response.get_json()
    after = _password_hash(app, user["id"])
    assert after and after != before and "t1meMa$heen" not in after
    assert "password" not in scim.get(f"/Users/{user['id']}").get_json()


def test_paging_in_steps_of_100_is_stable(scim: ScimClient) -> None:
    # Without a password: hashing one (argon2) is slow by design.
    created = {scim.user(f"page{i:03}@okta.local")["id"] for i in range(230)}
    seen: list[str] = []
    for start in (1, 101, 201):
        body = scim.get(f"/Users?startIndex={start}&count=100").get_json()
        assert body["totalResults"] == 230
        assert body["startIndex"] == start
        seen += [r["id"] for r in body["Resources"]]
    assert len(seen) == 230
    assert set(seen) == created


# ---------------------------------------------------------------- Group Push


def _members(scim: ScimClient, gid: str) -> set[str]:
    return {m["value"] for m in scim.get(f"/Groups/{gid}").get_json().get("members", [])}


def test_group_push(scim: ScimClient) -> None:
    a, b, c = (_okta_user(scim, f"{n}@okta.local") for n in ("a", "b", "c"))
    # Create with an empty member list.
    response = scim.post(
        "/Groups", {"schemas": [GROUP], "displayName": "Test SCIMv2", "members": []}
    )
    assert response.status_code == 201, response.get_json()
    gid = response.get_json()["id"]
    assert _members(scim, gid) == set()

    # Rename: a pathless replace that carries the id.
    response = scim.patch(
        f"/Groups/{gid}",
        _ops({"op": "replace", "value": {"id": gid, "displayName": "Renamed SCIMv2"}}),
    )
    assert response.status_code == 204, response.get_json()
    assert scim.get(f"/Groups/{gid}").get_json()["displayName"] == "Renamed SCIMv2"

    # Add members with their display, as Okta does.
    scim.patch(
        f"/Groups/{gid}",
        _ops(
            {
                "op": "add",
                "path": "members",
                "value": [{"value": u["id"], "display": u["userName"]} for u in (a, b)],
            }
        ),
    )
    assert _members(scim, gid) == {a["id"], b["id"]}

    # Remove one member by a value filter.
    response = scim.patch(
        f"/Groups/{gid}", _ops({"op": "remove", "path": f'members[value eq "{a["id"]}"]'})
    )
    assert response.status_code == 204
    assert _members(scim, gid) == {b["id"]}

    # Replace the whole member list.
    scim.patch(
        f"/Groups/{gid}",
        _ops(
            {
                "op": "replace",
                "path": "members",
                "value": [{"value": u["id"], "display": u["userName"]} for u in (a, c)],
            }
        ),
    )
    assert _members(scim, gid) == {a["id"], c["id"]}

    # PUT the group.
    response = scim.put(
        f"/Groups/{gid}",
        {
            "schemas": [GROUP],
            "id": gid,
            "displayName": "Put SCIMv2",
            "members": [{"value": b["id"], "display": b["userName"]}],
        },
    )
    assert response.status_code == 200, response.get_json()
    got = scim.get(f"/Groups/{gid}").get_json()
    assert got["displayName"] == "Put SCIMv2"
    assert {m["value"] for m in got["members"]} == {b["id"]}

    assert scim.delete(f"/Groups/{gid}").status_code == 204
    assert scim.get(f"/Groups/{gid}").status_code == 404
