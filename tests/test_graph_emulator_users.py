"""The emulator's users, domains and errors against Graph v1.0's documented behaviour.

- Create user: https://learn.microsoft.com/en-us/graph/api/user-post-users?view=graph-rest-1.0
- user resource (UPN characters, lengths, default properties):
  https://learn.microsoft.com/en-us/graph/api/resources/user?view=graph-rest-1.0
- Password rules: https://learn.microsoft.com/en-us/entra/identity/authentication/concept-password-ban-bad-combined-policy
- Update user (204): https://learn.microsoft.com/en-us/graph/api/user-update?view=graph-rest-1.0
- Delete user (soft delete): https://learn.microsoft.com/en-us/graph/api/user-delete?view=graph-rest-1.0
- Restore deleted item: https://learn.microsoft.com/en-us/graph/api/directory-deleteditems-restore?view=graph-rest-1.0
- List users ($filter, $select, $top): https://learn.microsoft.com/en-us/graph/api/user-list?view=graph-rest-1.0
- Paging: https://learn.microsoft.com/en-us/graph/paging
- delta: https://learn.microsoft.com/en-us/graph/api/user-delta?view=graph-rest-1.0
- revokeSignInSessions: https://learn.microsoft.com/en-us/graph/api/user-revokesigninsessions?view=graph-rest-1.0
- Manager: https://learn.microsoft.com/en-us/graph/api/user-post-manager?view=graph-rest-1.0
- Domains: https://learn.microsoft.com/en-us/graph/api/domain-list?view=graph-rest-1.0
- Error body: https://learn.microsoft.com/en-us/graph/errors
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.graph_emulator import (
    STRONG_PASSWORD,
    RunningEmulator,
)

COMPLEXITY = (
    "The specified password does not comply with password complexity requirements. "
    "Please provide a different password."
)


def _user_body(nickname: str = "adele", **props: Any) -> dict[str, Any]:
    return {
        "accountEnabled": True,
        "displayName": nickname.title(),
        "mailNickname": nickname,
        "userPrincipalName": f"{nickname}@example.com",
        "passwordProfile": {"password": STRONG_PASSWORD},
        **props,
    }


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"code", "message", "innerError", "details"}
    assert {"request-id", "date"} <= set(error["innerError"])
    return dict(error)


def test_create_user_returns_201_with_default_properties(graph_emulator: RunningEmulator) -> None:
    response = graph_emulator.graph("POST", "/users", json=_user_body())
    assert response.status_code == 201
    body = response.json()
    assert body["userPrincipalName"] == "adele@example.com" and body["id"]
    assert "passwordProfile" not in body and "accountEnabled" not in body
    assert body["@odata.context"].startswith(graph_emulator.graph_url)


@pytest.mark.parametrize(
    "missing", ["accountEnabled", "displayName", "mailNickname", "passwordProfile"]
)
def test_create_user_needs_the_required_properties(
    graph_emulator: RunningEmulator, missing: str
) -> None:
    body = _user_body()
    del body[missing]
    error = _error(graph_emulator.graph("POST", "/users", json=body), 400)
    assert error["code"] == "Request_BadRequest" and missing in error["message"]


@pytest.mark.parametrize(
    "upn", ["ad\u00e9le@example.com", "ad ele@example.com", "adele", "a(b)@example.com"]
)
def test_upn_characters_are_checked(graph_emulator: RunningEmulator, upn: str) -> None:
    error = _error(
        graph_emulator.graph("POST", "/users", json=_user_body(userPrincipalName=upn)), 400
    )
    assert error["message"] == "Property userPrincipalName is invalid."


@pytest.mark.parametrize("domain", ["unverified.example", "elsewhere.example"])
def test_upn_must_be_on_a_verified_domain(graph_emulator: RunningEmulator, domain: str) -> None:
    body = _user_body(userPrincipalName=f"adele@{domain}")
    error = _error(graph_emulator.graph("POST", "/users", json=body), 400)
    assert "verified domain" in error["message"]


@pytest.mark.parametrize("nickname", ["has space", "a@b", "x" * 65, "caf\u00e9", "semi;colon"])
def test_mail_nickname_rules(graph_emulator: RunningEmulator, nickname: str) -> None:
    body = _user_body(mailNickname=nickname)
    error = _error(graph_emulator.graph("POST", "/users", json=body), 400)
    assert "mailNickname" in error["message"]


@pytest.mark.parametrize("password", ["Sh0rt!", "alllowercase", "lower1234", "UPPER-lower"])
def test_password_complexity_is_enforced_with_graphs_text(
    graph_emulator: RunningEmulator, password: str
) -> None:
    if password == "UPPER-lower":
        # Upper, lower and a symbol are 3 of 4 classes: accepted.
        body = _user_body(passwordProfile={"password": password})
        assert graph_emulator.graph("POST", "/users", json=body).status_code == 201
        return
    body = _user_body(passwordProfile={"password": password})
    error = _error(graph_emulator.graph("POST", "/users", json=body), 400)
    assert error["message"] == COMPLEXITY


def test_duplicate_upn_is_object_conflict(graph_emulator: RunningEmulator) -> None:
    graph_emulator.create_user("adele")
    again = _user_body(userPrincipalName="ADELE@example.com", mailNickname="adele2")
    error = _error(graph_emulator.graph("POST", "/users", json=again), 400)
    assert error["code"] == "Request_BadRequest"
    assert error["message"] == (
        "Another object with the same value for property userPrincipalName already exists."
    )
    assert error["details"] == [{"target": "userPrincipalName", "code": "ObjectConflict"}]


def test_error_body_echoes_client_request_id(graph_emulator: RunningEmulator) -> None:
    response = graph_emulator.graph(
        "GET", "/users/00000000-0000-0000-0000-000000000000", headers={"client-request-id": "c-1"}
    )
    error = _error(response, 404)
    assert error["code"] == "Request_ResourceNotFound"
    assert error["innerError"]["client-request-id"] == "c-1"
    assert response.headers["request-id"] == error["innerError"]["request-id"]


def test_patch_returns_204_and_changes_the_user(graph_emulator: RunningEmulator) -> None:
    user = graph_emulator.create_user("adele")
    response = graph_emulator.graph(
        "PATCH", f"/users/{user['id']}", json={"jobTitle": "Pilot", "accountEnabled": False}
    )
    assert response.status_code == 204 and response.content == b""
    got = graph_emulator.graph("GET", f"/users/{user['id']}?$select=jobTitle,accountEnabled")
    assert got.json()["jobTitle"] == "Pilot" and got.json()["accountEnabled"] is False
    weak = {"passwordProfile": {"password": "weak"}}
    assert _error(graph_emulator.graph("PATCH", f"/users/{user['id']}", json=weak), 400)[
        "message"
    ] == (COMPLEXITY)


def test_federated_domain_users_need_immutable_id_and_take_no_password(
    graph_emulator: RunningEmulator,
) -> None:
    body = _user_body(userPrincipalName="fed@federated.example")
    del body["passwordProfile"]
    error = _error(graph_emulator.graph("POST", "/users", json=body), 400)
    assert "onPremisesImmutableId" in error["message"]
    body["onPremisesImmutableId"] = "ZmVk"
    created = graph_emulator.graph("POST", "/users", json=body)
    assert created.status_code == 201
    reset = {"passwordProfile": {"password": STRONG_PASSWORD}}
    refused = graph_emulator.graph("PATCH", f"/users/{created.json()['id']}", json=reset)
    assert "federated" in _error(refused, 400)["message"]


def test_delete_is_soft_and_restorable(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    user = em.create_user("adele")
    assert em.graph("DELETE", f"/users/{user['id']}").status_code == 204
    assert em.graph("GET", f"/users/{user['id']}").status_code == 404
    deleted = em.graph("GET", "/directory/deletedItems/microsoft.graph.user").json()["value"]
    assert [d["id"] for d in deleted] == [user["id"]] and deleted[0]["deletedDateTime"]
    restored = em.graph("POST", f"/directory/deletedItems/{user['id']}/restore")
    assert restored.status_code == 200 and restored.json()["id"] == user["id"]
    assert em.graph("GET", f"/users/{user['id']}").status_code == 200
    # Permanently deleted: gone from deletedItems too.
    em.graph("DELETE", f"/users/{user['id']}")
    assert em.graph("DELETE", f"/directory/deletedItems/{user['id']}").status_code == 204
    assert em.graph("POST", f"/directory/deletedItems/{user['id']}/restore").status_code == 404


def test_list_users_filter_select_and_top(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    for name in ("adele", "bob", "carol"):
        em.create_user(name, mail=f"{name}@contoso.com")
    by_upn = em.graph("GET", "/users", params={"$filter": "userPrincipalName eq 'BOB@example.com'"})
    assert [u["displayName"] for u in by_upn.json()["value"]] == ["Bob"]
    by_mail = em.graph("GET", "/users", params={"$filter": "mail eq 'carol@contoso.com'"})
    assert [u["displayName"] for u in by_mail.json()["value"]] == ["Carol"]
    selected = em.graph("GET", "/users", params={"$select": "id,accountEnabled", "$top": "1"})
    assert set(selected.json()["value"][0]) == {"id", "accountEnabled"}
    unsupported = em.graph("GET", "/users", params={"$filter": "passwordProfile eq 'x'"})
    assert _error(unsupported, 400)["code"] == "Request_UnsupportedQuery"


@pytest.mark.parametrize("top", ["0", "1000"])
def test_top_runs_1_to_999(graph_emulator: RunningEmulator, top: str) -> None:
    _error(graph_emulator.graph("GET", "/users", params={"$top": top}), 400)


def test_next_link_is_an_absolute_emulator_url(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    for i in range(5):
        em.create_user(f"user{i}")
    seen: list[str] = []
    url = f"{em.graph_url}/users?$top=2&$select=userPrincipalName"
    pages = 0
    while url:
        assert url.startswith(em.graph_url)
        body = em.graph("GET", url).json()
        seen += [u["userPrincipalName"] for u in body["value"]]
        url = body.get("@odata.nextLink", "")
        pages += 1
    assert pages == 3 and sorted(seen) == [f"user{i}@example.com" for i in range(5)]


def test_delta_link_returns_only_changes_and_removals(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    a = em.create_user("adele")
    b = em.create_user("bob")
    first = em.graph("GET", "/users/delta", headers={"Prefer": "odata.maxpagesize=1"}).json()
    items = first["value"]
    while "@odata.nextLink" in first:
        first = em.graph("GET", first["@odata.nextLink"]).json()
        items += first["value"]
    assert {i["id"] for i in items} == {a["id"], b["id"]}
    delta_link = first["@odata.deltaLink"]
    assert delta_link.startswith(f"{em.graph_url}/users/delta?")
    quiet = em.graph("GET", delta_link).json()
    assert quiet["value"] == []
    em.graph("PATCH", f"/users/{a['id']}", json={"jobTitle": "Pilot"})
    em.graph("DELETE", f"/users/{b['id']}")
    changes = em.graph("GET", quiet["@odata.deltaLink"]).json()["value"]
    assert {c["id"] for c in changes} == {a["id"], b["id"]}
    removed = next(c for c in changes if c["id"] == b["id"])
    assert removed["@removed"] == {"reason": "changed"}


def test_revoke_sign_in_sessions_answers_true(graph_emulator: RunningEmulator) -> None:
    user = graph_emulator.create_user("adele")
    response = graph_emulator.graph("POST", f"/users/{user['id']}/revokeSignInSessions")
    assert response.status_code == 200 and response.json()["value"] is True


def test_manager_put_get_delete(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    boss, report = em.create_user("boss"), em.create_user("report")
    none = em.graph("GET", f"/users/{report['id']}/manager")
    assert _error(none, 404)["code"] == "Request_ResourceNotFound"
    ref = {"@odata.id": f"{em.graph_url}/users/{boss['id']}"}
    assert em.graph("PUT", f"/users/{report['id']}/manager/$ref", json=ref).status_code == 204
    manager = em.graph("GET", f"/users/{report['id']}/manager").json()
    assert manager["id"] == boss["id"] and manager["@odata.type"] == "#microsoft.graph.user"
    ref_body = em.graph("GET", f"/users/{report['id']}/manager/$ref").json()
    assert ref_body["@odata.id"].endswith(boss["id"])
    assert em.graph("DELETE", f"/users/{report['id']}/manager/$ref").status_code == 204
    assert em.graph("GET", f"/users/{report['id']}/manager").status_code == 404
    unknown = {"@odata.id": f"{em.graph_url}/users/00000000-0000-0000-0000-000000000001"}
    missing = em.graph("PUT", f"/users/{report['id']}/manager/$ref", json=unknown)
    assert missing.status_code == 404


def test_domains_list_default_verified_and_authentication_type(
    graph_emulator: RunningEmulator,
) -> None:
    domains = {d["id"]: d for d in graph_emulator.graph("GET", "/domains").json()["value"]}
    assert [d for d in domains.values() if d["isDefault"]] == [domains["example.com"]]
    assert domains["federated.example"]["authenticationType"] == "Federated"
    assert domains["example.com"]["authenticationType"] == "Managed"
    assert domains["unverified.example"]["isVerified"] is False
    initial = [d for d in domains.values() if d["isInitial"]]
    assert len(initial) == 1 and initial[0]["id"].endswith(".onmicrosoft.com")


def _by_upn(em: RunningEmulator, upn: str, **filters: str) -> list[str]:
    upn_literal = upn.replace("'", "''")
    response = em.graph(
        "GET", "/users", params={"$filter": f"userPrincipalName eq '{upn_literal}'", **filters}
    )
    assert response.status_code == 200, response.text
    return [u["id"] for u in response.json()["value"]]


def test_a_lookup_by_upn_answers_as_the_scan_does(graph_emulator: RunningEmulator) -> None:
    """`userPrincipalName eq '…'` (the sync's lookup before each create) goes through the
    tenant's UPN index: the same answers as any other filter, in any case, never a user
    deleted, renamed away or still replicating."""
    em = graph_emulator
    adele = em.create_user("adele")
    em.create_user("o'brien")
    assert _by_upn(em, "ADELE@Example.com") == [adele["id"]]
    assert _by_upn(em, "o'brien@example.com") != []
    assert _by_upn(em, "nobody@example.com") == []
    # The same user, through a filter the index does not answer: one answer, the same.
    both = em.graph(
        "GET",
        "/users",
        params={"$filter": "userPrincipalName eq 'adele@example.com' or displayName eq 'x'"},
    )
    assert [u["id"] for u in both.json()["value"]] == [adele["id"]]

    renamed = em.graph(
        "PATCH", f"/users/{adele['id']}", json={"userPrincipalName": "adele.v@example.com"}
    )
    assert renamed.status_code == 204
    assert _by_upn(em, "adele@example.com") == []
    assert _by_upn(em, "adele.v@example.com") == [adele["id"]]
    assert em.graph("DELETE", f"/users/{adele['id']}").status_code == 204
    assert _by_upn(em, "adele.v@example.com") == []

    em.configure(replication_lag=600)
    lagging = em.create_user("brian")
    assert _by_upn(em, "brian@example.com") == []
    em.configure(replication_lag=0)
    assert _by_upn(em, "brian@example.com") == [lagging["id"]]
