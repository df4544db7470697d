"""The emulator's security groups and members against Graph v1.0's documented behaviour.

- Create group: https://learn.microsoft.com/en-us/graph/api/group-post-groups?view=graph-rest-1.0
- group resource (mailNickname characters):
  https://learn.microsoft.com/en-us/graph/api/resources/group?view=graph-rest-1.0
- Add members ($ref, and members@odata.bind up to 20):
  https://learn.microsoft.com/en-us/graph/api/group-post-members?view=graph-rest-1.0
- Remove member ($ref): https://learn.microsoft.com/en-us/graph/api/group-delete-members?view=graph-rest-1.0
- Update group: https://learn.microsoft.com/en-us/graph/api/group-update?view=graph-rest-1.0
- Delete group: https://learn.microsoft.com/en-us/graph/api/group-delete?view=graph-rest-1.0
- A user referenced by userPrincipalName in `@odata.id`: a Microsoft Graph team member's
  answer, https://stackoverflow.com/questions/47653515
"""

from __future__ import annotations

import pytest

from scim_server.graph.client import GraphClient
from tests.graph_emulator import (
    RunningEmulator,
    settings_for,
)

ALREADY = (
    "One or more added object references already exist for the following modified "
    "properties: 'members'."
)


def _members(em: RunningEmulator, group_id: str) -> list[str]:
    response = em.graph("GET", f"/groups/{group_id}/members")
    assert response.status_code == 200
    return [m["id"] for m in response.json()["value"]]


def test_create_security_group(graph_emulator: RunningEmulator) -> None:
    group = graph_emulator.create_group("sales")
    assert group["securityEnabled"] is True and group["mailEnabled"] is False
    assert group["groupTypes"] == [] and group["id"]


@pytest.mark.parametrize("nickname", ["with space", "dot.ted", "a@b", "x" * 65, "br[a]ckets"])
def test_group_mail_nickname_rules(graph_emulator: RunningEmulator, nickname: str) -> None:
    body = {
        "displayName": "G",
        "mailEnabled": False,
        "mailNickname": nickname,
        "securityEnabled": True,
        "groupTypes": [],
    }
    response = graph_emulator.graph("POST", "/groups", json=body)
    assert response.status_code == 400
    assert "mailNickname" in response.json()["error"]["message"]


def test_add_member_by_ref_and_the_documented_errors(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    group, user = em.create_group(), em.create_user()
    added = em.graph("POST", f"/groups/{group['id']}/members/$ref", json=em.ref(user["id"]))
    assert added.status_code == 204
    assert _members(em, group["id"]) == [user["id"]]
    again = em.graph("POST", f"/groups/{group['id']}/members/$ref", json=em.ref(user["id"]))
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "Request_BadRequest"
    assert again.json()["error"]["message"] == ALREADY
    unknown = em.ref("00000000-0000-0000-0000-00000000beef")
    missing = em.graph("POST", f"/groups/{group['id']}/members/$ref", json=unknown)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "Request_ResourceNotFound"


def test_members_odata_bind_adds_up_to_20_all_or_none(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    group = em.create_group()
    users = [em.create_user(f"u{i}") for i in range(21)]
    refs = [em.ref(u["id"])["@odata.id"] for u in users]
    too_many = em.graph("PATCH", f"/groups/{group['id']}", json={"members@odata.bind": refs})
    assert too_many.status_code == 400
    one_bad = [*refs[:3], em.ref("00000000-0000-0000-0000-00000000beef")["@odata.id"]]
    bad = em.graph("PATCH", f"/groups/{group['id']}", json={"members@odata.bind": one_bad})
    assert bad.status_code == 404 and _members(em, group["id"]) == []
    ok = em.graph("PATCH", f"/groups/{group['id']}", json={"members@odata.bind": refs[:20]})
    assert ok.status_code == 204 and len(_members(em, group["id"])) == 20


def test_delete_member_ref_removes_only_the_membership(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    group, user = em.create_group(), em.create_user()
    em.graph("POST", f"/groups/{group['id']}/members/$ref", json=em.ref(user["id"]))
    removed = em.graph("DELETE", f"/groups/{group['id']}/members/{user['id']}/$ref")
    assert removed.status_code == 204
    assert _members(em, group["id"]) == []
    assert em.graph("GET", f"/users/{user['id']}").status_code == 200
    again = em.graph("DELETE", f"/groups/{group['id']}/members/{user['id']}/$ref")
    assert again.status_code == 404


def test_delete_member_without_ref_deletes_the_user_itself(graph_emulator: RunningEmulator) -> None:
    # The trap graph.md warns of: no /$ref means DELETE the member object.
    em = graph_emulator
    group, user = em.create_group(), em.create_user()
    em.graph("POST", f"/groups/{group['id']}/members/$ref", json=em.ref(user["id"]))
    assert em.graph("DELETE", f"/groups/{group['id']}/members/{user['id']}").status_code == 204
    assert em.graph("GET", f"/users/{user['id']}").status_code == 404
    deleted = em.graph("GET", f"/directory/deletedItems/{user['id']}")
    assert deleted.status_code == 200


def test_group_update_is_204_and_delete_is_not_restorable(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    group = em.create_group()
    patched = em.graph("PATCH", f"/groups/{group['id']}", json={"description": "Sales team"})
    assert patched.status_code == 204
    assert em.graph("GET", f"/groups/{group['id']}").json()["description"] == "Sales team"
    assert em.graph("DELETE", f"/groups/{group['id']}").status_code == 204
    assert em.graph("GET", f"/groups/{group['id']}").status_code == 404
    restore = em.graph("POST", f"/directory/deletedItems/{group['id']}/restore")
    assert restore.status_code == 404


def test_member_of_and_filter_groups(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    sales, ops = em.create_group("sales"), em.create_group("ops")
    user = em.create_user()
    em.graph("POST", f"/groups/{ops['id']}/members/$ref", json=em.ref(user["id"]))
    member_of = em.graph("GET", f"/users/{user['id']}/memberOf").json()["value"]
    assert [g["id"] for g in member_of] == [ops["id"]]
    found = em.graph("GET", "/groups", params={"$filter": "displayName eq 'Sales'"}).json()
    assert [g["id"] for g in found["value"]] == [sales["id"]]


def test_a_member_referenced_by_upn(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    client = GraphClient(settings_for(em))
    group = em.create_group()
    # Every character a UPN may hold before the @; '#' and '^' only get through encoded.
    user = em.create_user("o'neil!#^~x", userPrincipalName="O'Neil!#^~x@Example.com")
    add = f"/groups/{group['id']}/members/$ref"
    ref = {"@odata.id": client.user_ref("o'neil!#^~X@example.COM")}  # in another case
    assert em.graph("POST", add, json=ref).status_code == 204
    assert _members(em, group["id"]) == [user["id"]]
    unknown = em.graph("POST", add, json={"@odata.id": client.user_ref("nobody@example.com")})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "Request_ResourceNotFound"
    raw = em.graph("POST", add, json={"@odata.id": f"{em.graph_url}/users/o'neil!#^~x@example.com"})
    assert raw.status_code == 404  # unencoded, the '#' starts a fragment: another name
    # The collection counts: a group is not found under users/, nor a user under groups/.
    other = em.create_group("other")
    as_user = em.graph("POST", add, json={"@odata.id": f"{em.graph_url}/users/{other['id']}"})
    assert as_user.status_code == 404
    as_group = em.graph("POST", add, json={"@odata.id": f"{em.graph_url}/groups/{user['id']}"})
    assert as_group.status_code == 404


def test_a_new_user_referenced_by_upn_is_lagging_at_first(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.configure(replication_lag=0.5)
    group = em.create_group()
    em.create_user("lagging")
    ref = {"@odata.id": f"{em.graph_url}/users/lagging@example.com"}
    early = em.graph("POST", f"/groups/{group['id']}/members/$ref", json=ref)
    assert early.status_code == 404
    assert early.json()["error"]["code"] == "Request_ResourceNotFound"
    em.advance(0.6)
    assert em.graph("POST", f"/groups/{group['id']}/members/$ref", json=ref).status_code == 204


def test_the_request_log_shows_batch_parts_and_their_dependencies(
    graph_emulator: RunningEmulator,
) -> None:
    em = graph_emulator
    group = em.create_group()
    create = {
        "accountEnabled": True,
        "displayName": "Dep",
        "mailNickname": "dep",
        "userPrincipalName": "dep@example.com",
        "passwordProfile": {"password": "Corr3ct-Horse!"},
    }
    json_headers = {"Content-Type": "application/json"}
    parts = [
        {"id": "c", "method": "POST", "url": "/users", "body": create, "headers": json_headers},
        {
            "id": "m",
            "method": "POST",
            "url": f"/groups/{group['id']}/members/$ref",
            "body": {"@odata.id": f"{em.graph_url}/users/DEP@example.com"},
            "headers": json_headers,
            "dependsOn": ["c"],
        },
    ]
    answer = em.graph("POST", "/$batch", json={"requests": parts})
    assert {r["id"]: r["status"] for r in answer.json()["responses"]} == {"c": 201, "m": 204}
    logged = [r for r in em.request_log() if r.get("batch_request_id")]
    assert [(r["part_id"], r["depends_on"], r["status"]) for r in logged] == [
        ("c", [], 201),
        ("m", ["c"], 204),
    ]
