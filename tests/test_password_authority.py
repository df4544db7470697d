"""The directory as password authority (issue 6, first part): a password set through SCIM is
checked against Microsoft 365's policy at the request, travels through the outbox sealed
(Fernet), is pushed to the bound M365 account with forceChangePasswordNextSignIn false, and
leaves the outbox once delivered. The emulator's password grant (ROPC) proves the M365
password is the directory's."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from models import OutboxEvent
from scim_server import sealing
from scim_server.config import ConfigError
from scim_server.db import db
from scim_server.sync.worker import Worker
from tests.conftest import ScimClient
from tests.graph_emulator import RunningEmulator, sign_in
from tests.helpers import database_text

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PASSWORD = "Dir3ctory-Owns!"


def _outbox_text(app: Flask) -> str:
    with app.app_context():
        rows = db.session.execute(select(OutboxEvent.event, OutboxEvent.payload)).all()
        db.session.remove()
    return json.dumps([list(r) for r in rows])


@pytest.mark.parametrize(
    "weak", ["short1A", "alllowercase", "lower-and-symbols", "NoDigitsOrSymbols", "Ünïcödé-123"]
)
def test_a_password_m365_would_refuse_is_refused_at_the_request(
    scim: ScimClient, weak: str
) -> None:
    response = scim.post("/Users", {"userName": "weak@example.com", "password": weak})
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidValue"
    assert "password" in response.get_json()["detail"] and weak not in response.get_json()["detail"]
    assert scim.get('/Users?filter=userName eq "weak@example.com"').get_json()["totalResults"] == 0


def test_the_directory_password_becomes_the_m365_password(
    scim: ScimClient, app: Flask, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    user = scim.post("/Users", {"userName": "owner@example.com", "password": PASSWORD}).get_json()
    # Sealed in the outbox: the plaintext is nowhere in the database.
    assert PASSWORD not in _outbox_text(app)
    assert '"sealed"' in _outbox_text(app)
    assert worker.drain()
    signed_in = sign_in(graph_emulator, "owner@example.com", PASSWORD)
    assert signed_in.status_code == 200, signed_in.text  # no forced change at next sign-in
    assert '"sealed"' not in _outbox_text(app)  # delivered: gone from the outbox

    # Okta's password sync: a pathless replace; the bound account follows.
    new = "An0ther-Secret!"
    scim.patch(
        f"/Users/{user['id']}",
        {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"password": new}}]},
    )
    assert worker.drain()
    assert sign_in(graph_emulator, "owner@example.com", new).status_code == 200
    assert sign_in(graph_emulator, "owner@example.com", PASSWORD).status_code == 400
    assert new not in _outbox_text(app) and '"sealed"' not in _outbox_text(app)


def test_without_a_directory_password_the_account_must_change_its_own(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    scim.user("nopass@example.com")
    assert worker.drain()
    m365 = next(
        o
        for o in graph_emulator.state()["objects"]
        if o["kind"] == "user" and o["props"]["userPrincipalName"] == "nopass@example.com"
    )
    assert m365["force_change"] is True


def test_a_password_sealed_under_another_key_is_a_dead_letter_not_a_crash(
    scim: ScimClient,
    app: Flask,
    worker: Worker,
    graph_emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCIM_ENCRYPTION_KEY", sealing.new_key())
    scim.post("/Users", {"userName": "rekeyed@example.com", "password": PASSWORD})
    monkeypatch.setenv("SCIM_ENCRYPTION_KEY", sealing.new_key())  # the key changed
    assert worker.drain()
    with app.app_context():
        dead = db.session.execute(
            select(OutboxEvent.event, OutboxEvent.payload, OutboxEvent.last_error).where(
                OutboxEvent.status == "dead"
            )
        ).all()
    assert [(e, p) for e, p, _ in dead] == [("password", {})]
    assert "SCIM_ENCRYPTION_KEY" in (dead[0][2] or "")
    # The rest of the user was delivered all the same.
    assert any(
        o["props"]["userPrincipalName"] == "rekeyed@example.com"
        for o in graph_emulator.state()["objects"]
    )


@pytest.mark.parametrize("reseal", [False, True], ids=["both-keys", "resealed-then-new-only"])
def test_passwords_waiting_in_the_outbox_survive_a_key_rotation(
    scim: ScimClient,
    app: Flask,
    worker: Worker,
    graph_emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
    reseal: bool,
) -> None:
    old, new = sealing.new_key(), sealing.new_key()
    monkeypatch.setenv("SCIM_ENCRYPTION_KEYS", old)
    scim.post("/Users", {"userName": "rotated@example.com", "password": PASSWORD})
    sealed_before = _outbox_text(app)
    # Step 1 of the rotation: the new key first, the old one still there to open.
    monkeypatch.setenv("SCIM_ENCRYPTION_KEYS", f"{new},{old}")
    if reseal:
        # Step 2: what waits is sealed again under the new key; then the old key can go.
        done = app.test_cli_runner().invoke(args=["sync", "reseal"])
        assert done.exit_code == 0, done.output
        assert "Re-sealed 1 waiting password" in done.output
        assert _outbox_text(app) != sealed_before and PASSWORD not in _outbox_text(app)
        monkeypatch.setenv("SCIM_ENCRYPTION_KEYS", new)
    assert worker.drain()
    signed_in = sign_in(graph_emulator, "rotated@example.com", PASSWORD)
    assert signed_in.status_code == 200, signed_in.text
    with app.app_context():
        assert db.session.scalar(select(OutboxEvent.id).where(OutboxEvent.status == "dead")) is None


def test_a_reseal_reports_passwords_no_key_opens(
    scim: ScimClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIM_ENCRYPTION_KEYS", sealing.new_key())
    scim.post("/Users", {"userName": "lost@example.com", "password": PASSWORD})
    monkeypatch.setenv("SCIM_ENCRYPTION_KEYS", sealing.new_key())  # the old key was dropped
    done = app.test_cli_runner().invoke(args=["sync", "reseal"])
    assert done.exit_code == 1
    assert "1 waiting password(s) open with none of the keys" in done.output


@pytest.mark.parametrize(
    ("variables", "said"),
    [
        ({"SCIM_ENCRYPTION_KEYS": "not-a-fernet-key"}, "SCIM_ENCRYPTION_KEYS"),
        ({"SCIM_ENCRYPTION_KEYS": f"{sealing.new_key()},short"}, "key 2 of 2"),
        (
            {"SCIM_ENCRYPTION_KEYS": sealing.new_key(), "SCIM_ENCRYPTION_KEY": sealing.new_key()},
            "not both",
        ),
    ],
)
def test_a_bad_key_list_is_said_at_start(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], said: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=said) as raised:
        sealing.check_key()
    assert "short" not in str(raised.value)


def test_a_malformed_encryption_key_is_said_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCIM_ENCRYPTION_KEY", "not-a-fernet-key")
    with pytest.raises(ConfigError, match="SCIM_ENCRYPTION_KEY"):
        sealing.check_key()


def test_a_temporary_password_is_printed_once_and_must_be_changed_in_m365(
    scim: ScimClient, app: Flask, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    user = scim.user("temp@example.com")
    assert worker.drain()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "set-temp-password", "TEMP@example.com"])
    assert result.exit_code == 0, result.stderr
    temp = result.stdout.strip().splitlines()[-1]
    assert len(temp) >= 16
    assert temp not in _outbox_text(app)
    with app.app_context():
        from models import User
        from scim_server.directory import _hasher

        stored = db.session.get(User, user["id"])
        assert stored is not None and _hasher.verify(stored.password_hash or "", temp)
    assert worker.drain()
    signed_in = sign_in(graph_emulator, "temp@example.com", temp)
    # The password is right, and M365 asks for a new one: AADSTS50055, "password expired".
    assert signed_in.status_code == 400
    assert 50055 in signed_in.json()["error_codes"]
    unknown = runner.invoke(args=["users", "set-temp-password", "nobody@example.com"])
    assert unknown.exit_code == 1


def test_no_password_in_the_clear_in_responses_logs_or_the_database(
    scim: ScimClient,
    app: Flask,
    worker: Worker,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Cl3ar-Text-Never!"
    created = scim.post("/Users", {"userName": "scan@example.com", "password": secret})
    patched = scim.patch(
        f"/Users/{created.get_json()['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "path": "password", "value": secret + "2"}],
        },
    )
    assert worker.drain()
    for response in (created, patched):
        assert secret.encode() not in response.data
    assert secret not in caplog.text
    assert secret.encode() not in database_text(app, database_url, tmp_path)
