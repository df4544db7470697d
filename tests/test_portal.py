"""The user portal (issue 6): sign-in with the directory's password, which M365 then takes if
it does not have it yet (after a takeover, or after a change made in M365 directly); a
temporary password replaced at the portal; rate limits with Retry-After; federated domains
that never receive a password. The emulator's password grant (ROPC) is the oracle."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text

from models import M365Link, OutboxEvent
from scim_server.db import db
from scim_server.graph.client import GraphClient
from scim_server.sync.pacer import Pacer
from scim_server.sync.policy import Policy
from scim_server.sync.settings import SyncSettings
from scim_server.sync.worker import Worker
from tests.conftest import ScimClient
from tests.graph_emulator import STRONG_PASSWORD, RunningEmulator, settings_for, sign_in
from tests.helpers import database_text
from tests.smtp_server import smtp_server

M365 = "urn:ietf:params:scim:schemas:extension:m365:2.0:User"
PASSWORD = "Portal-Pass-42!"


def _login(client: FlaskClient, user: str, password: str, address: str = "10.0.0.1") -> Any:
    return client.post(
        "/portal/login",
        data={"username": user, "password": password},
        environ_base={"REMOTE_ADDR": address},
    )


def _link(app: Flask, user_id: str) -> M365Link:
    with app.app_context():
        row = db.session.scalar(select(M365Link).where(M365Link.resource_id == user_id))
        assert row is not None
        db.session.expunge(row)
        db.session.remove()
    return row


def _password_writes(emulator: RunningEmulator, object_id: str) -> int:
    """PATCHes of the account (a password set is one; nothing else changes in these tests)."""
    return sum(
        1
        for r in emulator.request_log()
        if r["method"] == "PATCH" and r["path"].endswith(f"/users/{object_id}")
    )


def _set_in_m365(emulator: RunningEmulator, object_id: str, password: str) -> None:
    # lastPasswordChangeDateTime has whole seconds: the tenant's clock moves on first.
    emulator.advance(1.1)
    response = emulator.graph(
        "PATCH",
        f"/users/{object_id}",
        json={"passwordProfile": {"password": password, "forceChangePasswordNextSignIn": False}},
    )
    assert response.status_code == 204, response.text


def test_the_login_page_is_a_plain_form(client: FlaskClient) -> None:
    page = client.get("/portal/login")
    assert page.status_code == 200
    assert page.content_type.startswith("text/html")
    assert b'name="username"' in page.data and b'name="password"' in page.data
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert client.get("/portal/").status_code == 302


def test_a_login_restores_the_directory_password_after_a_change_in_m365(
    scim: ScimClient,
    app: Flask,
    client: FlaskClient,
    worker: Worker,
    graph_emulator: RunningEmulator,
) -> None:
    user = scim.post("/Users", {"userName": "pia@example.com", "password": PASSWORD}).get_json()
    assert worker.drain()
    link = _link(app, user["id"])
    assert link.object_id and link.password_state == "synced" and link.password_stamp
    writes = _password_writes(graph_emulator, link.object_id)

    # A sign-in while M365 has the directory's password sends nothing.
    page = _login(client, "PIA@example.com", PASSWORD)
    assert page.status_code == 200, page.data
    assert b"bound and managed by the directory" in page.data
    assert b"your directory password" in page.data
    assert worker.drain()
    assert _password_writes(graph_emulator, link.object_id) == writes

    # Someone changes it in M365 directly; the next portal sign-in takes it back.
    _set_in_m365(graph_emulator, link.object_id, "Changed-In-M365-1")
    assert sign_in(graph_emulator, "pia@example.com", PASSWORD).status_code == 400
    assert _login(client, "pia@example.com", PASSWORD).status_code == 200
    assert worker.drain()
    assert sign_in(graph_emulator, "pia@example.com", PASSWORD).status_code == 200
    assert sign_in(graph_emulator, "pia@example.com", "Changed-In-M365-1").status_code == 400
    # The change made in M365, then the directory's one restore.
    assert _password_writes(graph_emulator, link.object_id) == writes + 2
    assert _link(app, user["id"]).password_state == "synced"
    status = app.test_cli_runner().invoke(args=["sync", "status"])
    assert "Passwords: 1 synced" in status.output


def test_the_first_login_after_a_takeover_sets_the_directory_password(
    scim: ScimClient,
    app: Flask,
    client: FlaskClient,
    worker: Worker,
    tenant_env: RunningEmulator,
) -> None:
    graph_emulator = tenant_env
    graph_emulator.create_user("taken")  # an existing account with its own password
    user = scim.post("/Users", {"userName": "taken@example.com", "password": PASSWORD}).get_json()
    assert worker.drain()  # M365_ON_CONFLICT=fail: reported, left alone
    assert _link(app, user["id"]).state == "conflict"
    bind = app.test_cli_runner().invoke(args=["m365", "import", "--bind", "--yes"])
    assert bind.exit_code == 0, bind.output
    assert worker.drain()
    link = _link(app, user["id"])
    assert link.state == "synced" and link.password_state == "unknown"
    state = scim.get(f"/Users/{user['id']}?attributes={M365}").get_json()[M365]
    assert state["passwordState"] == "unknown"
    assert sign_in(graph_emulator, "taken@example.com", STRONG_PASSWORD).status_code == 200

    page = _login(client, "taken@example.com", PASSWORD)
    assert page.status_code == 200
    assert b"not yet your directory password" in page.data
    assert worker.drain()
    assert sign_in(graph_emulator, "taken@example.com", PASSWORD).status_code == 200
    assert sign_in(graph_emulator, "taken@example.com", STRONG_PASSWORD).status_code == 400
    assert _link(app, user["id"]).password_state == "synced"


def test_a_temporary_password_is_replaced_at_the_portal(
    scim: ScimClient,
    app: Flask,
    client: FlaskClient,
    worker: Worker,
    graph_emulator: RunningEmulator,
) -> None:
    user = scim.user("temp@example.com")
    assert worker.drain()
    result = app.test_cli_runner().invoke(args=["users", "set-temp-password", "temp@example.com"])
    temp = result.stdout.strip().splitlines()[-1]
    assert worker.drain()
    assert _link(app, user["id"]).password_state == "temporary"

    page = _login(client, "temp@example.com", temp)
    assert page.status_code == 200
    assert b"Choose a new password" in page.data and b'name="current"' in page.data
    assert temp.encode() not in page.data

    form = {"username": "temp@example.com", "current": temp}
    same = client.post("/portal/password", data={**form, "password": temp, "confirm": temp})
    assert same.status_code == 400 and b"must differ" in same.data
    weak = client.post("/portal/password", data={**form, "password": "abc", "confirm": "abc"})
    assert weak.status_code == 400
    wrong = client.post(
        "/portal/password",
        data={**form, "current": "Not-The-Temp-1", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert wrong.status_code == 401
    done = client.post("/portal/password", data={**form, "password": PASSWORD, "confirm": PASSWORD})
    assert done.status_code == 200 and b"Password changed" in done.data
    assert worker.drain()
    assert sign_in(graph_emulator, "temp@example.com", PASSWORD).status_code == 200
    assert sign_in(graph_emulator, "temp@example.com", temp).status_code == 400
    assert _link(app, user["id"]).password_state == "synced"
    # No longer temporary: the portal signs the user in.
    assert b"Signed in" in _login(client, "temp@example.com", PASSWORD).data


def test_failed_sign_ins_are_limited_per_user_and_per_address(
    scim: ScimClient, app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "PORTAL_USER_FAILURES", 3)
    monkeypatch.setitem(app.config, "PORTAL_ADDRESS_FAILURES", 5)
    monkeypatch.setitem(app.config, "PORTAL_LOCKOUT_SECONDS", 600)
    scim.post("/Users", {"userName": "lee@example.com", "password": PASSWORD})
    scim.post("/Users", {"userName": "kim@example.com", "password": PASSWORD})

    wrong = _login(client, "lee@example.com", "Wrong-Pass-1")
    assert wrong.status_code == 401 and b"Wrong user name or password" in wrong.data
    assert "Retry-After" not in wrong.headers
    unknown = _login(client, "nobody@example.com", "Wrong-Pass-1")
    assert unknown.status_code == 401 and unknown.data == wrong.data.replace(
        b"lee@example.com", b"nobody@example.com"
    )
    _login(client, "lee@example.com", "Wrong-Pass-2")
    third = _login(client, "lee@example.com", "Wrong-Pass-3")
    assert third.status_code == 401 and 590 <= int(third.headers["Retry-After"]) <= 600
    # Locked: even the right password waits, from any address.
    locked = _login(client, "lee@example.com", PASSWORD, address="10.9.9.9")
    assert locked.status_code == 429 and 590 <= int(locked.headers["Retry-After"]) <= 600
    assert b"Too many failed sign-ins" in locked.data
    # Another user from another address is not held up...
    assert _login(client, "kim@example.com", PASSWORD, address="10.0.0.2").status_code == 200
    # ...but the address that failed five times is, whoever it names.
    _login(client, "kim@example.com", "Wrong-Pass-4")
    assert _login(client, "kim@example.com", PASSWORD).status_code == 429
    assert _login(client, "kim@example.com", PASSWORD, address="10.0.0.3").status_code == 200

    # When the lock is over, the right password works again.
    with app.app_context():
        db.session.execute(text("UPDATE login_throttle SET locked_until = window_started_at"))
        db.session.commit()
        db.session.remove()
    assert _login(client, "lee@example.com", PASSWORD).status_code == 200


def test_a_disabled_user_cannot_sign_in(scim: ScimClient, client: FlaskClient) -> None:
    scim.post("/Users", {"userName": "off@example.com", "password": PASSWORD, "active": False})
    assert _login(client, "off@example.com", PASSWORD).status_code == 403


def test_users_on_a_federated_domain_are_never_sent_passwords(
    scim: ScimClient,
    app: Flask,
    client: FlaskClient,
    graph_emulator: RunningEmulator,
) -> None:
    domains = ("example.com", "federated.example")
    federating = Worker(
        app,
        GraphClient(settings_for(graph_emulator)),
        SyncSettings(sync_domains=domains),
        domains,
        pacer=Pacer(1000),
        policy=Policy(max_attempts=3, base_seconds=0.02, cap_seconds=0.1),
        rng=random.Random(5),
        federated=("federated.example",),
    )
    user = scim.post(
        "/Users",
        {"userName": "fed@federated.example", "externalId": "okta-00u1", "password": PASSWORD},
    ).get_json()
    assert federating.drain()
    link = _link(app, user["id"])
    assert link.state == "synced" and link.password_state == "federated"
    accounts = [o for o in graph_emulator.state()["objects"] if o["id"] == link.object_id]
    assert accounts[0]["props"]["onPremisesImmutableId"] == "okta-00u1"
    state = scim.get(f"/Users/{user['id']}?attributes={M365}").get_json()[M365]
    assert state["passwordState"] == "federated"
    assert not any(
        r["method"] == "PATCH" and r["path"].endswith(link.object_id)
        for r in graph_emulator.request_log()
    )

    # A new password in the directory stays there, and the state says why.
    scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "password", "value": PASSWORD + "2"}],
        },
    )
    assert federating.drain()
    assert _link(app, user["id"]).password_state == "federated"
    page = _login(client, "fed@federated.example", PASSWORD + "2")
    assert page.status_code == 200 and b"your domain is federated" in page.data
    with app.app_context():
        checks = db.session.scalars(
            select(OutboxEvent.payload).where(
                OutboxEvent.event == "password", OutboxEvent.status == "pending"
            )
        ).all()
        db.session.remove()
    assert checks == []
    assert not any(
        r["method"] == "PATCH" and r["path"].endswith(link.object_id)
        for r in graph_emulator.request_log()
    )


def test_no_password_token_or_link_in_the_clear_anywhere(
    scim: ScimClient,
    app: Flask,
    client: FlaskClient,
    worker: Worker,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    m365 = {"alternateEmail": "scan.me@example.org"}
    scim.post("/Users", {"schemas": [M365], "userName": "scan@example.com", M365: m365})
    assert worker.drain()
    responses = []
    with smtp_server() as inbox:
        for name, value in inbox.env().items():
            monkeypatch.setenv(name, value)
        sent = app.test_cli_runner().invoke(args=["users", "send-activation", "scan@example.com"])
    body = inbox.messages[0][1].get_payload(decode=True)
    assert isinstance(body, bytes)
    link = next(w for w in body.decode().split() if "/portal/activate/" in w)
    path = link[link.index("/portal/") :]
    token = path.rsplit("/", 1)[1]
    responses.append(client.get(path))
    responses.append(client.post(path, data={"password": PASSWORD, "confirm": PASSWORD}))
    assert responses[-1].status_code == 200
    responses.append(_login(client, "scan@example.com", PASSWORD))
    responses.append(_login(client, "scan@example.com", PASSWORD + "x"))
    assert worker.drain()

    shown = b"".join(r.data + str(r.headers).encode() for r in responses)
    shown += (sent.stdout + sent.stderr).encode()
    for secret in (PASSWORD, token, link):
        assert secret.encode() not in shown
        assert secret not in caplog.text
        assert secret.encode() not in database_text(app, database_url, tmp_path)
