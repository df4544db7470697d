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
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
import requests

from tests.graph_emulator import RunningEmulator


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
