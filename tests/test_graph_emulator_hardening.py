"""The emulator after review: batches Graph refuses, a TLS server that one idle client cannot
freeze, Graph's error body for malformed input, strict control endpoints, a request log
without secrets, Entra's UPN and password rules, and delta's `id`.

- JSON batching: https://learn.microsoft.com/en-us/graph/json-batching ("id ... Not
  case-sensitive. Must be unique in the batch"; tip "Batch should be either fully sequential
  or fully parallel"), microsoftgraph/microsoft-graph-docs-contrib#2339 (a mixed batch is a
  400), and the known issue "Request dependencies are limited"
  (https://learn.microsoft.com/en-us/graph/known-issues, JSON batching: parallel, serial, or
  every dependent request naming the same dependency; one dependency per request).
- Error body: https://learn.microsoft.com/en-us/graph/errors
- UPN and password characters and lengths ("Username policies", "Microsoft Entra password
  policies"): https://learn.microsoft.com/en-us/entra/identity/authentication/concept-sspr-policy
  (MicrosoftDocs/entra-docs docs/identity/authentication/concept-sspr-policy.md)
- Advanced queries (`ne`, $count, $search need ConsistencyLevel: eventual, and but for
  $search $count=true; $count=true alone is silently ignored):
  https://learn.microsoft.com/en-us/graph/aad-advanced-queries
- businessPhones ("Only one number can be set"), group booleans:
  https://learn.microsoft.com/en-us/graph/api/resources/user and
  https://learn.microsoft.com/en-us/graph/api/group-post-groups
- delta with $select ("The id property is always returned"):
  https://learn.microsoft.com/en-us/graph/api/user-delta?view=graph-rest-1.0
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from typing import Any

import pytest
import requests

from scim_server.graph.emulator import graph_api
from tests.graph_emulator import STRONG_PASSWORD, RunningEmulator, run_emulator

COMPLEXITY = (
    "The specified password does not comply with password complexity requirements. "
    "Please provide a different password."
)


def _get(part_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": part_id, "method": "GET", "url": "/domains", **extra}


def _batch(em: RunningEmulator, parts: list[dict[str, Any]]) -> requests.Response:
    return em.graph("POST", "/$batch", json={"requests": parts})


def _graph_error(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert {"code", "message", "innerError"} <= set(error)
    assert {"request-id", "date"} <= set(error["innerError"])
    return dict(error)


# ---------------------------------------------------------------------- 1. batch sequencing


@pytest.mark.parametrize(
    "parts",
    [
        # The example of #2339: 1 and 3 first, then 2, then 4.
        [_get("1"), _get("2", dependsOn=["1"]), _get("3"), _get("4", dependsOn=["2"])],
        # Two dependencies in one request.
        [_get("1"), _get("2"), _get("3", dependsOn=["1", "2"])],
        # A chain that skips a request.
        [_get("1"), _get("2", dependsOn=["1"]), _get("3", dependsOn=["1"]),
         _get("4", dependsOn=["3"])],
        # The dependency comes after its dependant.
        [_get("1", dependsOn=["2"]), _get("2")],
        # A cycle.
        [_get("1", dependsOn=["2"]), _get("2", dependsOn=["1"])],
    ],
)  # fmt: skip
def test_mixed_batch_is_a_400(graph_emulator: RunningEmulator, parts: list[Any]) -> None:
    error = _graph_error(_batch(graph_emulator, parts), 400)
    assert error["message"] == "Batch should be either fully sequential or fully parallel"


@pytest.mark.parametrize(
    "parts",
    [
        [_get("1"), _get("2"), _get("3")],
        # Serial, as in json-batching's example: 1, 2, 4, 3; ids in any case.
        [_get("a"), _get("b", dependsOn=["A"]), _get("d", dependsOn=["b"]),
         _get("c", dependsOn=["D"])],
        # Same: every request that states a dependency states the same one.
        [_get("1"), _get("2", dependsOn=["1"]), _get("3", dependsOn=["1"])],
    ],
)  # fmt: skip
def test_parallel_serial_and_same_batches_run(
    graph_emulator: RunningEmulator, parts: list[Any]
) -> None:
    response = _batch(graph_emulator, parts)
    assert response.status_code == 200, response.text
    assert sorted(r["status"] for r in response.json()["responses"]) == [200] * len(parts)
    assert {r["id"] for r in response.json()["responses"]} == {p["id"] for p in parts}


def test_batch_ids_are_unique_ignoring_case(graph_emulator: RunningEmulator) -> None:
    error = _graph_error(_batch(graph_emulator, [_get("a"), _get("A")]), 400)
    assert error["code"] == "BadRequest"


# ---------------------------------------------------------------------- 2. TLS handshakes


def test_an_idle_tcp_connection_does_not_hold_other_requests(
    graph_emulator: RunningEmulator,
) -> None:
    em = graph_emulator
    port = em.server.server.server_port
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        started = time.monotonic()
        response = em.session.get(
            f"{em.authority}/v2.0/.well-known/openid-configuration", timeout=3
        )
        assert response.status_code == 200
        assert em.graph("GET", "/domains").status_code == 200
        assert time.monotonic() - started < 3
    finally:
        for sock in idle:
            sock.close()


# ---------------------------------------------------------------------- 3. malformed input


def _token(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_deeply_nested_filter_is_a_400(graph_emulator: RunningEmulator) -> None:
    deep = "(" * 5000 + "displayName eq 'a'" + ")" * 5000
    _graph_error(graph_emulator.graph("GET", "/users", params={"$filter": deep}), 400)
    # A long flat chain is no recursion either, and still filters (sent in a batch: the
    # URL would be too long).
    graph_emulator.create_user("adele")
    chain = " or ".join(["displayName eq 'x'"] * 3000 + ["displayName eq 'Adele'"])
    part = {"id": "1", "method": "GET", "url": f"/users?$filter={chain}"}
    [result] = _batch(graph_emulator, [part]).json()["responses"]
    assert result["status"] == 200, result
    assert [u["displayName"] for u in result["body"]["value"]] == ["Adele"]


@pytest.mark.parametrize("token", [{"o": "abc"}, {"o": -1}, {"o": True}, [1], "1e400"])
def test_a_forged_skiptoken_is_a_400(graph_emulator: RunningEmulator, token: Any) -> None:
    raw = "eyJvIjoxZTQwMH0" if token == "1e400" else _token(token)  # {"o":1e400}
    response = graph_emulator.graph("GET", "/users", params={"$skiptoken": raw})
    assert _graph_error(response, 400)["code"] == "Request_BadRequest"


@pytest.mark.parametrize(
    "arg, token",
    [
        ("$skiptoken", {"s": None, "o": 0}),
        ("$skiptoken", {"s": "x", "o": 0, "u": 1}),
        ("$skiptoken", {"s": None, "o": 0, "u": 1.5}),
        ("$deltatoken", {"s": "x"}),
        ("$deltatoken", {}),
    ],
)
def test_a_forged_delta_token_is_a_400(
    graph_emulator: RunningEmulator, arg: str, token: dict[str, Any]
) -> None:
    response = graph_emulator.graph("GET", "/users/delta", params={arg: _token(token)})
    _graph_error(response, 400)


@pytest.mark.parametrize("headers", [["Content-Type"], "x", {"Content-Type": 5}])
def test_batch_part_headers_must_be_an_object(
    graph_emulator: RunningEmulator, headers: Any
) -> None:
    part = {"id": "1", "method": "GET", "url": "/domains", "headers": headers}
    _graph_error(_batch(graph_emulator, [part]), 400)


def test_a_bearer_token_with_a_non_ascii_character_is_a_401(
    graph_emulator: RunningEmulator,
) -> None:
    token = graph_emulator.token()[:-1] + "é"
    response = graph_emulator.session.get(
        f"{graph_emulator.graph_url}/users",
        headers={"Authorization": f"Bearer {token}".encode("latin-1")},  # type: ignore[dict-item]
        timeout=10,
    )
    assert _graph_error(response, 401)["code"] == "InvalidAuthenticationToken"


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/v1.0", 404),
        ("GET", "/beta/users", 404),
        ("GET", "/nowhere", 404),
        ("OPTIONS", "/v1.0/users", 405),
        ("GET", "/_emulator/nowhere", 404),
    ],
)
def test_unknown_paths_and_methods_get_graphs_error_body(
    graph_emulator: RunningEmulator, method: str, path: str, status: int
) -> None:
    response = graph_emulator.session.request(
        method,
        graph_emulator.authority_host + path,
        headers={"Authorization": f"Bearer {graph_emulator.token()}"},
        timeout=10,
    )
    _graph_error(response, status)


def test_an_unexpected_error_is_graphs_500_and_is_logged(
    graph_emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setitem(graph_api._HANDLERS, "list_domains", broken)
    monkeypatch.setattr(graph_emulator.server.emulator, "snapshot", broken)
    with caplog.at_level(logging.ERROR):
        error = _graph_error(graph_emulator.graph("GET", "/domains"), 500)
        assert error["code"] == "generalException"
        part = _batch(graph_emulator, [_get("1"), _get("2", dependsOn=["1"])])
        assert {r["id"]: r["status"] for r in part.json()["responses"]} == {"1": 500, "2": 424}
        _graph_error(graph_emulator.control("GET", "state"), 500)
    assert "RuntimeError: boom" in caplog.text


# ---------------------------------------------------------------------- 4. control endpoints


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "path": 5},
        {"kind": "status", "path": "v1.0/users"},
        {"kind": "status", "method": 5},
        {"kind": "status", "method": "FETCH"},
        {"kind": "status", "status": 503.5},
        {"kind": "status", "status": "503"},
        {"kind": "status", "status": True},
        {"kind": "status", "status": 200},
        {"kind": "status", "retry_after": "7"},
        {"kind": "status", "count": 0},
        {"kind": "status", "count": 1.5},
        {"kind": "timeout", "seconds": "x"},
        {"kind": "timeout", "seconds": -1},
        {"kind": "timeout", "seconds": 1e9},
        {"kind": "drop", "pathh": "/v1.0"},
    ],
)
def test_a_bad_fault_is_a_400_and_breaks_nothing(
    graph_emulator: RunningEmulator, fault: dict[str, Any]
) -> None:
    response = graph_emulator.control("POST", "faults", json=fault)
    assert response.status_code == 400, response.text
    assert graph_emulator.control("GET", "faults").json() == {"value": []}
    assert graph_emulator.graph("GET", "/domains").status_code == 200


@pytest.mark.parametrize(
    "settings",
    [
        {"replication_lag": "nan"},
        {"replication_lag": "1"},
        {"replication_lag": -1},
        {"write_window": "inf"},
        {"write_window": 0},
        {"write_budget": 2.5},
        {"write_budget": "10"},
        {"write_budget": True},
        {"replication_lag": 5, "write_budget": 0},  # nothing is applied
        {"replicationLag": 5},
    ],
)
def test_a_bad_setting_is_a_400_and_changes_nothing(
    graph_emulator: RunningEmulator, settings: dict[str, Any]
) -> None:
    before = graph_emulator.control("GET", "config").json()
    response = graph_emulator.control("POST", "config", json=settings)
    assert response.status_code == 400, response.text
    assert graph_emulator.control("GET", "config").json() == before


@pytest.mark.parametrize(
    "body", [{"advance": -1}, {"advance": "nan"}, {"advance": "1"}, {"advance": 1, "x": 1}, []]
)
def test_a_bad_clock_advance_is_a_400_and_moves_nothing(
    graph_emulator: RunningEmulator, body: Any
) -> None:
    graph_emulator.configure(replication_lag=60)
    user = graph_emulator.create_user("clocked")
    response = graph_emulator.control("POST", "clock", json=body)
    assert response.status_code == 400, response.text
    assert graph_emulator.graph("GET", f"/users/{user['id']}").status_code == 404  # still lagging
    graph_emulator.advance(61)
    assert graph_emulator.graph("GET", f"/users/{user['id']}").status_code == 200


# ---------------------------------------------------------------------- 5. the request log


def test_the_request_log_keeps_no_secret_from_a_query_string(
    graph_emulator: RunningEmulator,
) -> None:
    em = graph_emulator
    em.session.post(
        em.token_endpoint + "?password=Hunter2-secret&client_secret=s3cr3t-value",
        data={"grant_type": "client_credentials", "client_id": em.client_id},
        timeout=10,
    )
    em.graph(
        "GET",
        "/users?$top=1&access_token=tok-value&Code=code-value&refresh_token=rt-value"
        "&user_password=pw-value&client_assertion=ca-value",
    )
    log = em.request_log()
    text = json.dumps(log)
    for value in ("Hunter2", "s3cr3t", "tok-value", "code-value", "rt-value", "pw-value"):
        assert value not in text
    assert "ca-value" not in text
    token_entries = [e for e in log if e["path"].endswith("/oauth2/v2.0/token")]
    assert token_entries and all(e["query"] == "" for e in token_entries)
    [users] = [e for e in log if e["path"] == "/v1.0/users"]
    assert users["query"].startswith("$top=1&access_token=REDACTED&Code=REDACTED")


# ---------------------------------------------------------------------- 6. UPN and password


def _user(upn: str, password: str = STRONG_PASSWORD) -> dict[str, Any]:
    return {
        "accountEnabled": True,
        "displayName": "Adele",
        "mailNickname": "adele",
        "userPrincipalName": upn,
        "passwordProfile": {"password": password},
    }


def _domain(length: int) -> str:
    """A verified domain name of exactly `length` characters, for run_emulator."""
    return "d" * (length - len(".example")) + ".example"


@pytest.mark.parametrize("upn", ["adele.@example.com", "a" * 65 + "@example.com"])
def test_upn_rules_from_the_username_policy(graph_emulator: RunningEmulator, upn: str) -> None:
    error = _graph_error(graph_emulator.graph("POST", "/users", json=_user(upn)), 400)
    assert error["message"] == "Property userPrincipalName is invalid."
    adele = graph_emulator.create_user("adele")
    patch = {"userPrincipalName": upn}
    response = graph_emulator.graph("PATCH", f"/users/{adele['id']}", json=patch)
    assert _graph_error(response, 400)["message"] == "Property userPrincipalName is invalid."


def test_upn_lengths_64_before_and_48_after_the_at() -> None:
    with run_emulator(domains=[_domain(48), _domain(49)]) as em:
        longest = "a" * 64 + "@" + _domain(48)
        assert len(longest) == 113
        assert em.graph("POST", "/users", json=_user(longest)).status_code == 201
        response = em.graph("POST", "/users", json=_user("b@" + _domain(49)))
        assert _graph_error(response, 400)["message"] == "Property userPrincipalName is invalid."


@pytest.mark.parametrize("password", ["Corr3ct-Horsé!", "Corr3ct-Horse!\x00", "Pässwörd-123"])
def test_a_password_with_unicode_is_refused(graph_emulator: RunningEmulator, password: str) -> None:
    response = graph_emulator.graph("POST", "/users", json=_user("adele@example.com", password))
    assert _graph_error(response, 400)["message"] == COMPLEXITY
    adele = graph_emulator.create_user("bob")
    patch = {"passwordProfile": {"password": password}}
    response = graph_emulator.graph("PATCH", f"/users/{adele['id']}", json=patch)
    assert _graph_error(response, 400)["message"] == COMPLEXITY


# ---------------------------------------------------------------------- 7. delta and $select


def test_delta_with_select_always_returns_id(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    adele = em.create_user("adele")
    first = em.graph("GET", "/users/delta", params={"$select": "displayName"}).json()
    assert first["value"] == [{"displayName": "Adele", "id": adele["id"]}]
    em.graph("PATCH", f"/users/{adele['id']}", json={"displayName": "Adele V"})
    later = em.graph("GET", first["@odata.deltaLink"]).json()
    assert later["value"] == [{"displayName": "Adele V", "id": adele["id"]}]


# ---------------------------------------------------------------------- 8. queries and types

EVENTUAL = {"ConsistencyLevel": "eventual"}


def test_ne_is_an_advanced_query(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.create_user("adele")
    em.create_user("bob")
    params = {"$filter": "displayName ne 'Adele'"}
    error = _graph_error(em.graph("GET", "/users", params=params), 400)
    assert error["code"] == "Request_UnsupportedQuery" and "'ne'" in error["message"]
    no_count = em.graph("GET", "/users", params=params, headers=EVENTUAL)
    _graph_error(no_count, 400)
    response = em.graph("GET", "/users", params={**params, "$count": "true"}, headers=EVENTUAL)
    assert response.status_code == 200, response.text
    assert [u["displayName"] for u in response.json()["value"]] == ["Bob"]
    assert response.json()["@odata.count"] == 1


def test_count_search_and_orderby_are_not_silently_ignored(
    graph_emulator: RunningEmulator,
) -> None:
    em = graph_emulator
    for name in ("carol", "adele", "bob"):
        em.create_user(name)
    # $count=true without ConsistencyLevel: 200 without @odata.count, as the page documents.
    assert "@odata.count" not in em.graph("GET", "/users?$count=true").json()
    counted = em.graph("GET", "/users?$count=true&$top=1", headers=EVENTUAL).json()
    assert counted["@odata.count"] == 3 and len(counted["value"]) == 1
    error = _graph_error(em.graph("GET", '/users?$search="displayName:adele"'), 400)
    assert error["code"] == "Request_UnsupportedQuery"
    assert "ConsistencyLevel: eventual" in error["message"]
    _graph_error(em.graph("GET", '/users?$search="displayName:a"', headers=EVENTUAL), 400)
    ordered = em.graph("GET", "/users?$orderby=displayName desc").json()["value"]
    assert [u["displayName"] for u in ordered] == ["Carol", "Bob", "Adele"]
    error = _graph_error(em.graph("GET", "/users?$orderby=jobTitle"), 400)
    assert error["message"] == "Sorting not supported for current query."


@pytest.mark.parametrize("phones", ["+1 555 0100", [5], ["+1 555 0100", "+1 555 0101"], None])
def test_business_phones_is_one_string_in_a_list(
    graph_emulator: RunningEmulator, phones: Any
) -> None:
    body = {**_user("adele@example.com"), "businessPhones": phones}
    error = _graph_error(graph_emulator.graph("POST", "/users", json=body), 400)
    assert error["details"] == [{"target": "businessPhones", "code": "InvalidValue"}]


@pytest.mark.parametrize("prop", ["securityEnabled", "mailEnabled"])
def test_group_flags_are_booleans(graph_emulator: RunningEmulator, prop: str) -> None:
    group = graph_emulator.create_group("sales")
    response = graph_emulator.graph("PATCH", f"/groups/{group['id']}", json={prop: "true"})
    error = _graph_error(response, 400)
    assert error["details"] == [{"target": prop, "code": "InvalidValue"}]
