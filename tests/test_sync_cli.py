"""`scim-server worker`, `sync status` and `sync retry` as an operator uses them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flask import Flask
from sqlalchemy import select, update

from models import OutboxEvent
from scim_server.db import db
from tests.conftest import ScimClient
from tests.graph_emulator import RunningEmulator, graph_env

CLI = str(Path(sys.executable).parent / "scim-server")


def test_sync_status_and_retry(app: Flask, scim: ScimClient) -> None:
    user = scim.user("status@example.com")
    with app.app_context():
        event_id = db.session.scalar(
            select(OutboxEvent.id).where(OutboxEvent.resource_id == user["id"])
        )
        db.session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id == event_id)
            .values(status="dead", last_error="Invalid: 400 Request_BadRequest: nope")
        )
        db.session.commit()
    runner = app.test_cli_runner()
    status = runner.invoke(args=["sync", "status"])
    assert status.exit_code == 0, status.output
    assert "SANDBOX" in status.output  # GRAPH_TENANT_ID is unset in the tests
    assert "0 pending" in status.output and "1 dead" in status.output
    assert f"{event_id}  User {user['id']}: Invalid: 400 Request_BadRequest: nope" in status.output
    # --json says the same, as one object.
    as_json = runner.invoke(args=["sync", "status", "--json"])
    assert as_json.exit_code == 0, as_json.output
    facts = json.loads(as_json.output)
    assert facts["target"] == {"kind": "sandbox", "tenant_id": None, "workers": []}
    assert (facts["backlog"]["pending"], facts["backlog"]["dead"]) == (0, 1)
    assert facts["backlog"]["oldest_pending_seconds"] is None
    assert facts["dead_letters"] == [
        {
            "id": event_id,
            "resource_type": "User",
            "resource_id": user["id"],
            "error": "Invalid: 400 Request_BadRequest: nope",
        }
    ]
    from scim_server.sync.status import render

    assert status.output.splitlines() == render(facts)

    assert runner.invoke(args=["sync", "retry"]).exit_code != 0  # an ID or --all-dead
    retried = runner.invoke(args=["sync", "retry", str(event_id)])
    assert retried.exit_code == 0 and "Queued 1" in retried.output
    again = runner.invoke(args=["sync", "retry", "--all-dead"])
    assert again.exit_code == 1 and "No dead letters" in again.output
    with app.app_context():
        row = db.session.get(OutboxEvent, event_id)
        assert row is not None and (row.status, row.attempts) == ("pending", 0)


def test_worker_refuses_a_sync_domain_the_tenant_cannot_take(
    graph_emulator: RunningEmulator, database_url: str
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        **graph_env(graph_emulator),
        "M365_SYNC_DOMAINS": "unverified.example",
    }
    done = subprocess.run([CLI, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unverified.example is not verified in the tenant" in done.stderr
    assert "Traceback" not in done.stderr
    assert graph_emulator.client_secret not in done.stderr + done.stdout


def test_a_bad_setting_is_said_plainly_at_start(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
        "SCIM_ENCRYPTION_KEY": "not-a-key",
    }
    done = subprocess.run([CLI, "sync", "status"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "SCIM_ENCRYPTION_KEY must hold Fernet keys" in done.stderr
    assert "Traceback" not in done.stderr
    key = subprocess.run([CLI, "keygen"], capture_output=True, text=True, check=True).stdout
    env["SCIM_ENCRYPTION_KEY"] = key.strip()
    assert subprocess.run([CLI, "db", "upgrade"], env=env, capture_output=True).returncode == 0
    assert subprocess.run([CLI, "sync", "status"], env=env, capture_output=True).returncode == 0
