"""Every client replay in conformance/ against the app in-process (SQLite, or PostgreSQL when
SCIM_TEST_DATABASE_URL is set): each client is its own test and must have no failed step."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conformance.runner import Transport, replays, run_replay
from tests.conftest import _token

BASE = "/scim/v2"


def flask_transport(client: FlaskClient) -> Transport:
    def send(
        method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        response = client.open(BASE + path, method=method, headers=headers, data=body)
        return response.status_code, dict(response.headers), response.get_data()

    return send


@pytest.mark.parametrize("client_name", list(replays()))
def test_replay(app: Flask, client_name: str) -> None:
    replay = replays()[client_name]
    outcome = run_replay(
        replay,
        flask_transport(app.test_client()),
        _token(app, client_name),
        "http://localhost" + BASE,
    )
    report = "\n".join(outcome.lines)
    assert outcome.failed == 0, f"{outcome.passed} passed, {outcome.failed} failed\n{report}"
