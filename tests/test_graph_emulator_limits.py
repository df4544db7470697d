"""The emulator's batches, throttling, replication lag, faults, control endpoints and state
file against Graph's documented behaviour.

- JSON batching (20 requests, dependsOn, 424): https://learn.microsoft.com/en-us/graph/json-batching
- Throttling (429, Retry-After): https://learn.microsoft.com/en-us/graph/throttling
- Identity write budget (3,000 per 150 s per app and tenant):
  https://learn.microsoft.com/en-us/graph/throttling-limits
- Replication lag (404 right after create; add a new user to a new group):
  https://learn.microsoft.com/en-us/graph/api/group-post-members?view=graph-rest-1.0 and
  https://learn.microsoft.com/en-us/graph/best-practices-concept
- Error responses (5xx, 429, 503 with Retry-After): https://learn.microsoft.com/en-us/graph/errors
"""

from __future__ import annotations

import concurrent.futures
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.graph_emulator import (
    STRONG_PASSWORD,
    RunningEmulator,
    run_emulator,
)


def _create_part(part_id: str, nickname: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": part_id,
        "method": "POST",
        "url": "/users",
        "headers": {"Content-Type": "application/json"},
        "body": {
            "accountEnabled": True,
            "displayName": nickname,
            "mailNickname": nickname,
            "userPrincipalName": f"{nickname}@example.com",
            "passwordProfile": {"password": STRONG_PASSWORD},
        },
        **extra,
    }


def _batch(em: RunningEmulator, parts: list[dict[str, Any]]) -> requests.Response:
    return em.graph("POST", "/$batch", json={"requests": parts})


def _by_id(response: requests.Response) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {r["id"]: r for r in response.json()["responses"]}


def test_batch_runs_parts_and_answers_each(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    parts = [
        _create_part("1", "adele"),
        {
            "id": "2",
            "method": "GET",
            "url": "/users?$filter=userPrincipalName eq 'adele@example.com'",
            "dependsOn": ["1"],
        },
        {"id": "3", "method": "GET", "url": "users/00000000-0000-0000-0000-000000000000"},
    ]
    results = _by_id(_batch(em, parts))
    assert results["1"]["status"] == 201 and results["1"]["body"]["userPrincipalName"]
    assert [u["displayName"] for u in results["2"]["body"]["value"]] == ["adele"]
    assert results["3"]["status"] == 404
    assert results["3"]["body"]["error"]["code"] == "Request_ResourceNotFound"


def test_batch_is_limited_to_20_requests(graph_emulator: RunningEmulator) -> None:
    parts = [{"id": str(i), "method": "GET", "url": "/domains"} for i in range(21)]
    response = _batch(graph_emulator, parts)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert _batch(graph_emulator, parts[:20]).status_code == 200


def test_batch_needs_unique_ids_and_content_type(graph_emulator: RunningEmulator) -> None:
    same = [{"id": "1", "method": "GET", "url": "/domains"}] * 2
    assert _batch(graph_emulator, same).status_code == 400
    no_type = _create_part("1", "adele")
    del no_type["headers"]
    assert _batch(graph_emulator, [no_type]).status_code == 400


def test_failed_dependency_answers_424(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.create_user("adele")
    parts = [
        _create_part("1", "adele"),  # duplicate UPN: 400
        _create_part("2", "bob", dependsOn=["1"]),
    ]
    results = _by_id(_batch(em, parts))
    assert results["1"]["status"] == 400
    assert results["2"]["status"] == 424
    assert em.graph("GET", "/users/bob@example.com").status_code == 404


def test_write_budget_gives_429_with_retry_after(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.configure(write_budget=2, write_window=3600)
    em.create_user("adele")
    em.create_user("bob")
    refused = em.graph("POST", "/users", json=_create_part("x", "carol")["body"])
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "TooManyRequests"
    # Reads are not writes.
    assert em.graph("GET", "/users").status_code == 200


def test_each_batch_part_counts_and_can_get_429(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.configure(write_budget=2, write_window=3600)
    parts = [_create_part(str(i), f"user{i}") for i in range(3)]
    results = _by_id(_batch(em, parts))
    assert [results[str(i)]["status"] for i in range(3)] == [201, 201, 429]
    assert int(results["2"]["headers"]["Retry-After"]) >= 1


def test_budget_is_per_app_default_is_graphs(graph_emulator: RunningEmulator) -> None:
    assert graph_emulator.control("GET", "config").json() == {
        "replication_lag": 0.0,
        "write_budget": 3000,
        "write_window": 150.0,
    }


def test_replication_lag_hides_new_objects_then_shows_them(
    graph_emulator: RunningEmulator,
) -> None:
    em = graph_emulator
    em.configure(replication_lag=600)
    user = em.create_user("adele")
    group = em.create_group("sales")
    lagging = em.graph("GET", f"/users/{user['id']}")
    assert lagging.status_code == 404
    assert lagging.json()["error"]["code"] == "Request_ResourceNotFound"
    add = em.graph("POST", f"/groups/{group['id']}/members/$ref", json=em.ref(user["id"]))
    assert add.status_code == 404
    em.configure(replication_lag=0)
    assert em.graph("GET", f"/users/{user['id']}").status_code == 200
    add = em.graph("POST", f"/groups/{group['id']}/members/$ref", json=em.ref(user["id"]))
    assert add.status_code == 204


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "serviceNotAvailable"), (429, "TooManyRequests"), (500, "generalException")],
)
def test_injected_status_faults(graph_emulator: RunningEmulator, status: int, code: str) -> None:
    em = graph_emulator
    em.fault(kind="status", status=status, retry_after=7, method="GET", path="/v1.0/users")
    response = em.graph("GET", "/users")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.headers["Retry-After"] == "7"
    assert em.graph("GET", "/users").status_code == 200  # taken once


def test_injected_fault_reaches_a_batch_part(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.fault(kind="status", status=503, method="POST", path="/v1.0/users")
    results = _by_id(_batch(em, [_create_part("1", "adele"), _create_part("2", "bob")]))
    assert results["1"]["status"] == 503 and results["2"]["status"] == 201


def test_injected_timeout_outlasts_the_client(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.fault(kind="timeout", seconds=3, path="/v1.0/domains")
    with pytest.raises(requests.exceptions.ReadTimeout):
        em.session.get(
            f"{em.graph_url}/domains",
            headers={"Authorization": f"Bearer {em.token()}"},
            timeout=0.3,
        )


def test_injected_drop_closes_the_connection(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.fault(kind="drop", path="/v1.0/domains")
    with pytest.raises(requests.exceptions.ConnectionError):
        em.graph("GET", "/domains")
    assert em.graph("GET", "/domains").status_code == 200


def test_request_log_and_state_never_show_secrets(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.create_user("adele")
    em.session.post(
        em.token_endpoint,
        data={
            "grant_type": "password",
            "client_id": em.client_id,
            "client_secret": em.client_secret,
            "username": "adele@example.com",
            "password": STRONG_PASSWORD,
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    log = em.request_log()
    assert [(e["method"], e["path"], e["status"]) for e in log][-2:] == [
        ("POST", "/v1.0/users", 201),
        ("POST", f"/{em.tenant_id}/oauth2/v2.0/token", 200),
    ]
    state = em.state()
    assert state["objects"][0]["props"]["userPrincipalName"] == "adele@example.com"
    assert state["objects"][0]["has_password"] is True
    dumped = repr(log) + repr(state)
    for secret in (STRONG_PASSWORD, em.client_secret, em.token()):
        assert secret not in dumped


def test_control_endpoints_are_off_by_default() -> None:
    with run_emulator() as em:
        assert em.control("GET", "state").status_code == 404
        assert em.control("POST", "reset").status_code == 404


def test_state_file_keeps_the_tenant_across_restarts(tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "state_file": tmp_path / "tenant.sqlite3",
        "tenant_id": str(uuid.uuid4()),
        "client_id": "app",
        "client_secret": "s3cret-value",
    }
    with run_emulator(**options) as first:
        user = first.create_user("adele")
        group = first.create_group("sales")
        first.graph("POST", f"/groups/{group['id']}/members/$ref", json=first.ref(user["id"]))
    with run_emulator(**options) as second:
        assert second.graph("GET", f"/users/{user['id']}").status_code == 200
        members = second.graph("GET", f"/groups/{group['id']}/members").json()["value"]
        assert [m["id"] for m in members] == [user["id"]]


def test_concurrent_requests_are_served(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.token()

    def create(i: int) -> int:
        return em.graph("POST", "/users", json=_create_part("x", f"c{i}")["body"]).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(create, range(24)))
    assert statuses == [201] * 24
    users = em.graph("GET", "/users", params={"$top": "999"}).json()["value"]
    assert len(users) == 24
