"""Activation email (issue 6): `scim-server users send-activation` mails a single-use,
expiring link through a real SMTP server (aiosmtpd); the page sets the password under the
same policy, and M365 takes it (the emulator's password grant is the oracle)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from scim_server import activation
from scim_server.db import db
from scim_server.sync.worker import Worker
from tests.conftest import ScimClient
from tests.graph_emulator import STRONG_PASSWORD, RunningEmulator, sign_in
from tests.helpers import activation_link, new_hire, send_activation
from tests.smtp_server import Inbox, smtp_server

M365 = "urn:ietf:params:scim:schemas:extension:m365:2.0:User"
CHOSEN = "Act1vated-Now!"


def test_activation_sets_the_password_in_the_directory_and_in_m365(
    scim: ScimClient,
    app: Flask,
    client: FlaskClient,
    worker: Worker,
    graph_emulator: RunningEmulator,
    inbox: Inbox,
) -> None:
    user = new_hire(scim)
    assert worker.drain()  # in M365 with a password nobody knows
    code, out, err = send_activation(app, "hire@example.com")
    assert code == 0, err
    assert "hire.personal@example.org" in out
    assert [to for to, _m in inbox.messages] == [["hire.personal@example.org"]]
    message = inbox.messages[0][1]
    assert message["Subject"] == "Activate your account"
    assert message["From"] == "Directory <directory@example.com>"
    link = activation_link(inbox)
    assert link not in out + err  # the link is the user's, not the admin's
    # 7-bit text: the link is whole on its line, even in a raw message.
    assert message["Content-Transfer-Encoding"] == "7bit"

    page = client.get(link)
    assert page.status_code == 200
    assert b"hire@example.com" in page.data and b'name="confirm"' in page.data
    assert link.encode() not in page.data
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"

    differ = client.post(link, data={"password": CHOSEN, "confirm": CHOSEN + "x"})
    assert differ.status_code == 400 and b"differ" in differ.data
    weak = client.post(link, data={"password": "weakweak", "confirm": "weakweak"})
    assert weak.status_code == 400 and b"three of" in weak.data
    done = client.post(link, data={"password": CHOSEN, "confirm": CHOSEN})
    assert done.status_code == 200, done.data
    assert b"Account activated" in done.data

    state = scim.get(f"/Users/{user['id']}?attributes={M365}").get_json()[M365]
    assert state["passwordState"] == "pending"
    assert worker.drain()
    assert sign_in(graph_emulator, "hire@example.com", CHOSEN).status_code == 200
    assert sign_in(graph_emulator, "hire@example.com", CHOSEN + "x").status_code == 400
    state = scim.get(f"/Users/{user['id']}?attributes={M365}").get_json()[M365]
    assert state["passwordState"] == "synced"

    # Single use: the link is spent, and the user has a password now.
    again = client.post(link, data={"password": "An0ther-Pass!", "confirm": "An0ther-Pass!"})
    assert again.status_code == 410
    assert client.get(link).status_code == 410
    code, _out, err = send_activation(app, "hire@example.com")
    assert code == 1 and "already has a password" in err


def test_resending_spends_the_earlier_link_and_an_old_link_expires(
    scim: ScimClient, app: Flask, client: FlaskClient, inbox: Inbox
) -> None:
    new_hire(scim)
    assert send_activation(app, "hire@example.com")[0] == 0
    first = activation_link(inbox)
    code, out, _err = send_activation(app, "HIRE@example.com", "--to", "elsewhere@example.org")
    assert code == 0 and "elsewhere@example.org" in out
    assert inbox.messages[-1][0] == ["elsewhere@example.org"]
    second = activation_link(inbox)
    assert first != second
    assert client.get(first).status_code == 410
    assert client.get(second).status_code == 200
    with app.app_context():
        db.session.execute(text("UPDATE activation_tokens SET expires_at = created_at"))
        db.session.commit()
        db.session.remove()
    expired = client.post(second, data={"password": CHOSEN, "confirm": CHOSEN})
    assert expired.status_code == 410 and b"expired" in expired.data
    assert client.get("/portal/activate/not-a-token").status_code == 410


def test_activation_needs_a_recipient_and_a_relay(
    scim: ScimClient, app: Flask, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    scim.post("/Users", {"userName": "nomail@example.com"})
    code, _out, err = send_activation(app, "nomail@example.com")
    assert code == 1 and "alternateEmail" in err
    assert send_activation(app, "nobody@example.com")[0] == 1
    assert inbox.messages == []
    monkeypatch.delenv("SMTP_HOST")
    result = app.test_cli_runner().invoke(
        args=["users", "send-activation", "nomail@example.com", "--to", "x@example.org"]
    )
    assert result.exit_code != 0
    assert "SMTP_HOST" in str(result.exception) + result.output


def test_a_relay_that_cannot_be_reached_leaves_no_working_link(
    scim: ScimClient, app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_hire(scim)
    with smtp_server() as gone:
        env = gone.env()
    for name, value in env.items():  # the server has stopped: nothing listens there
        monkeypatch.setenv(name, value)
    code, _out, err = send_activation(app, "hire@example.com")
    assert code == 1 and "cannot reach the SMTP relay" in err
    with app.app_context():
        live = db.session.execute(
            text("SELECT count(*) FROM activation_tokens WHERE spent_at IS NULL")
        ).scalar()
        db.session.remove()
    assert live == 0


def test_starttls_and_login_with_the_relay(
    scim: ScimClient, app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_hire(scim)
    with smtp_server(tmp_path, login=("relay-user", "relay-Secret-1")) as inbox:
        for name, value in inbox.env(SMTP_USERNAME="relay-user").items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("SMTP_PASSWORD", "wrong")
        code, _out, err = send_activation(app, "hire@example.com")
        assert code == 1 and "refused SMTP_USERNAME/SMTP_PASSWORD" in err
        assert "wrong" not in err
        monkeypatch.setenv("SMTP_PASSWORD", "relay-Secret-1")
        code, _out, err = send_activation(app, "hire@example.com")
        assert code == 0, err
        assert inbox.logins == ["relay-user"]
        assert len(inbox.messages) == 1
        # Without the relay's CA, TLS fails, and says so.
        monkeypatch.delenv("SMTP_CA_BUNDLE")
        code, _out, err = send_activation(app, "hire@example.com")
        assert code == 1 and "TLS with the SMTP relay" in err


def test_an_imported_account_takes_the_password_chosen_through_activation(
    scim: ScimClient,
    app: Flask,
    client: FlaskClient,
    worker: Worker,
    tenant_env: RunningEmulator,
    inbox: Inbox,
) -> None:
    graph_emulator = tenant_env
    graph_emulator.create_user("adele")  # an account with a password of its own
    done = app.test_cli_runner().invoke(args=["m365", "import", "--bind", "--yes"])
    assert done.exit_code == 0, done.output
    assert worker.drain()
    found = scim.get(f'/Users?filter=userName eq "adele@example.com"&attributes={M365}').get_json()[
        "Resources"
    ]
    assert found[0][M365]["passwordState"] == "none"  # imported users carry no password
    code, _out, err = send_activation(app, "adele@example.com", "--to", "adele.home@example.org")
    assert code == 0, err
    link = activation_link(inbox)
    assert client.post(link, data={"password": CHOSEN, "confirm": CHOSEN}).status_code == 200
    assert worker.drain()
    assert sign_in(graph_emulator, "adele@example.com", CHOSEN).status_code == 200
    assert sign_in(graph_emulator, "adele@example.com", STRONG_PASSWORD).status_code == 400


def test_two_runs_at_once_issue_one_link_and_two_redeems_at_once_spend_it_once(
    scim: ScimClient, app: Flask
) -> None:
    """The check for a live link and the new link are one write transaction (the user's row
    lock on PostgreSQL, the write lock on SQLite), and the link is spent in the password's."""
    user = scim.user("twice@example.com")
    start = threading.Barrier(2)

    def issue(_: int) -> activation._Issued | None:
        with app.app_context():
            start.wait()
            return activation._issue(user["id"], resend=False)

    with ThreadPoolExecutor(2) as pool:
        issued = [i for i in pool.map(issue, range(2)) if i is not None]
    assert len(issued) == 1  # the other run found it being sent
    token = issued[0].token

    def redeem(_: int) -> str:
        with app.test_request_context():
            start.wait()
            try:
                activation.redeem(token, CHOSEN, CHOSEN)
            except activation.LinkInvalid:
                return "refused"
            return "set"

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(redeem, range(2))) == ["refused", "set"]
    with app.app_context():
        rows = db.session.execute(
            text("SELECT spent_at IS NOT NULL FROM activation_tokens WHERE user_id = :u"),
            {"u": user["id"]},
        ).all()
        db.session.remove()
    assert [bool(spent) for (spent,) in rows] == [True]
