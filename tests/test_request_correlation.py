"""One SCIM request followed to its Graph calls: the request's id (X-Request-Id) is kept on
the outbox events it causes and sent to Graph as the `client-request-id` of their delivery;
the worker logs it beside Graph's own `request-id`, which the emulator's request log names."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from models import OutboxEvent
from scim_server.db import db
from scim_server.sync.worker import Worker
from tests.conftest import ScimClient
from tests.graph_emulator import RunningEmulator
from tests.helpers import patch_ops

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
def worker(make_worker: Any) -> Worker:
    return make_worker()  # type: ignore[no-any-return]


def _delivered(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("sync delivered")]


def _post_user(scim: ScimClient, name: str, request_id: str) -> dict[str, Any]:
    body = {"schemas": [USER], "userName": f"{name}@example.com"}
    response = scim.post("/Users", body, headers={"X-Request-Id": request_id})
    assert response.status_code == 201, response.get_json()
    assert response.headers["X-Request-Id"] == request_id
    return dict(response.get_json())


def test_a_scim_post_reaches_graph_as_client_request_id(
    app: Flask,
    scim: ScimClient,
    worker: Worker,
    graph_emulator: RunningEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scim_server.sync")
    rid = str(uuid.uuid4())
    user = _post_user(scim, "adele", rid)
    with app.app_context():
        stored = db.session.scalars(
            select(OutboxEvent.request_id).where(OutboxEvent.resource_id == user["id"])
        ).all()
        db.session.remove()
    assert stored == [rid]
    assert worker.drain(timeout=20)

    [line] = _delivered(caplog)
    assert line.__dict__["request_ids"] == [rid]
    # What Graph echoed: the emulator received the header on the call.
    assert line.__dict__["client_request_id"] == rid
    graph_id = line.__dict__["graph_request_id"]
    assert graph_id and graph_id != rid
    assert f"client_request_id={rid}" in line.getMessage()
    logged = [e for e in graph_emulator.request_log() if e.get("request_id") == graph_id]
    assert len(logged) == 1 and logged[0]["path"].startswith("/v1.0/")


def test_coalesced_changes_send_the_newest_id_and_log_them_all(
    scim: ScimClient, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scim_server.sync")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    user = _post_user(scim, "bjensen", ids[0])
    for n, rid in enumerate(ids[1:]):
        patch = patch_ops({"op": "replace", "path": "title", "value": f"Title {n}"})
        answer = scim.patch(f"/Users/{user['id']}", patch, headers={"X-Request-Id": rid})
        assert answer.status_code == 200
    assert worker.drain(timeout=20)
    [line] = _delivered(caplog)  # three changes, one delivery
    assert line.__dict__["request_ids"] == ids
    assert line.__dict__["client_request_id"] == ids[-1]
    assert ",".join(ids) in line.getMessage()


def test_batched_creates_carry_each_users_own_request_id(
    scim: ScimClient,
    worker: Worker,
    graph_emulator: RunningEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scim_server.sync")
    ids = {f"user{n}": str(uuid.uuid4()) for n in range(4)}
    for name, rid in ids.items():
        _post_user(scim, name, rid)
    assert worker.drain(timeout=30)
    assert any(e["path"] == "/v1.0/$batch" for e in graph_emulator.request_log())
    lines = _delivered(caplog)
    assert sorted(line.__dict__["client_request_id"] for line in lines) == sorted(ids.values())
    for line in lines:
        assert line.__dict__["request_ids"] == [line.__dict__["client_request_id"]]


def test_an_id_that_is_not_a_guid_is_logged_but_not_sent(
    scim: ScimClient, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    """Graph's client-request-id is a GUID: another client id stays in our log only."""
    caplog.set_level(logging.INFO, logger="scim_server.sync")
    _post_user(scim, "carol", "okta-req.42")
    assert worker.drain(timeout=20)
    [line] = _delivered(caplog)
    assert line.__dict__["request_ids"] == ["okta-req.42"]
    assert line.__dict__["client_request_id"] != "okta-req.42"


@pytest.mark.parametrize(
    "sent",
    ["x" * 65, "a b", "id\tforged", "a;b=c", "<script>", "ünïcode", "-leading-dash"],
)
def test_an_unsafe_client_request_id_is_replaced(scim: ScimClient, sent: str) -> None:
    response = scim.get("/Users", headers={"X-Request-Id": sent})
    assert response.status_code == 200
    given = response.headers["X-Request-Id"]
    assert given != sent
    assert uuid.UUID(given).version == 4


def test_without_a_client_id_the_server_makes_a_guid(scim: ScimClient) -> None:
    first = scim.get("/Users").headers["X-Request-Id"]
    second = scim.get("/Users").headers["X-Request-Id"]
    assert first != second
    assert str(uuid.UUID(first)) == first


def test_graph_calls_and_429s_are_counted_batch_parts_included(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    graph_emulator.configure(write_budget=2, write_window=30)
    for n in range(5):
        _post_user(scim, f"counted{n}", str(uuid.uuid4()))
    worker.run_once()  # lookups, then creates in one $batch: past the budget, parts get 429
    seen = worker.client.stats.snapshot()
    batch_calls = [e for e in graph_emulator.request_log() if e["path"] == "/v1.0/$batch"]
    assert batch_calls and seen["graph_requests"].get("200", 0) >= len(batch_calls)
    throttled_parts = [e for e in graph_emulator.request_log() if e.get("status") == 429]
    assert seen["graph_throttled"] == len(throttled_parts) > 0
