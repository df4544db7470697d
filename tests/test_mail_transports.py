"""Activation mail through Microsoft Graph and over implicit TLS (issue 16, mail).

MAIL_TRANSPORT=graph sends as MAIL_SENDER through `POST /users/{sender}/sendMail` with the
sync's msal + requests client, against the emulator over real HTTPS; the tests read the
link from the emulator's control interface (GET /_emulator/mail) and complete activation
on the portal. Graph's errors reach the admin as one line; 429 and 5xx are retried.
SMTP_SSL is tested with aiosmtpd over TLS from the first byte, under a CA made here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from scim_server import mail
from scim_server.db import db
from scim_server.sync.worker import Worker
from tests.conftest import ScimClient
from tests.graph_emulator import RunningEmulator, sign_in
from tests.helpers import new_hire, send_activation
from tests.smtp_server import smtp_server

M365 = "urn:ietf:params:scim:schemas:extension:m365:2.0:User"
CHOSEN = "Gr4ph-Activated!"
SENDER = "directory@example.com"


@pytest.fixture
def graph_mail(tenant_env: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    """The emulator as the tenant, with the mailbox MAIL_SENDER names, and mail through it."""
    for name in ("SMTP_HOST", "SMTP_FROM", "SMTP_PORT", "SMTP_STARTTLS", "SMTP_SSL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAIL_TRANSPORT", "graph")
    monkeypatch.setenv("MAIL_SENDER", SENDER)
    monkeypatch.setenv("MAIL_RATE_PER_MINUTE", "0")
    tenant_env.create_user("directory", displayName="Directory")
    return tenant_env


def _sent(emulator: RunningEmulator) -> list[dict[str, Any]]:
    response = emulator.control("GET", "mail")
    assert response.status_code == 200
    return list(response.json()["value"])


def _link(message: dict[str, Any]) -> str:
    found = re.search(r"https?://\S+/portal/activate/(\S+)", message["message"]["body"]["content"])
    assert found, message
    return "/portal/activate/" + found.group(1)


def _live_links(app: Flask) -> int:
    with app.app_context():
        live = db.session.execute(
            text("SELECT count(*) FROM activation_tokens WHERE spent_at IS NULL")
        ).scalar()
        db.session.remove()
    return int(live or 0)


def _sendmail_statuses(emulator: RunningEmulator) -> list[int | None]:
    return [
        e.get("status")
        for e in emulator.request_log()
        if e["method"] == "POST" and e["path"].endswith("/sendMail")
    ]


def _one_line(err: str) -> str:
    """The admin's error: the command's last line, on its own."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, err
    assert "Traceback" not in err
    return lines[-1]


def test_activation_mail_through_graph_sendmail_and_the_portal(
    scim: ScimClient,
    app: Flask,
    client: FlaskClient,
    worker: Worker,
    graph_mail: RunningEmulator,
) -> None:
    user = new_hire(scim)
    assert worker.drain()
    code, out, err = send_activation(app, "hire@example.com")
    assert code == 0, err
    assert "hire.personal@example.org" in out
    [sent] = _sent(graph_mail)
    # user-sendmail.md's shape: as MAIL_SENDER's mailbox, to the alternate address, not kept
    # in Sent Items; Graph answered 202 Accepted.
    assert sent["mailbox"] == SENDER
    assert sent["toRecipients"] == ["hire.personal@example.org"]
    assert sent["saveToSentItems"] is False
    assert sent["message"]["subject"] == "Activate your account"
    assert sent["message"]["body"]["contentType"] == "Text"
    assert _sendmail_statuses(graph_mail) == [202]
    log = [e for e in graph_mail.request_log() if e["path"].endswith("/sendMail")]
    assert log[0]["path"] == f"/v1.0/users/{SENDER}/sendMail"
    link = _link(sent)
    assert link not in out + err

    assert client.get(link).status_code == 200
    done = client.post(link, data={"password": CHOSEN, "confirm": CHOSEN})
    assert done.status_code == 200 and b"Account activated" in done.data
    assert worker.drain()
    assert sign_in(graph_mail, "hire@example.com", CHOSEN).status_code == 200
    state = scim.get(f"/Users/{user['id']}?attributes={M365}").get_json()[M365]
    assert state["passwordState"] == "synced"
    # DELETE clears the emulator's sent mail.
    assert graph_mail.control("DELETE", "mail").status_code == 204
    assert _sent(graph_mail) == []


def test_a_sender_that_is_no_mailbox_is_one_line_and_leaves_no_link(
    scim: ScimClient, app: Flask, graph_mail: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_hire(scim)
    monkeypatch.setenv("MAIL_SENDER", "nobody@example.com")
    code, _out, err = send_activation(app, "hire@example.com")
    assert code == 1
    line = _one_line(err)
    assert "MAIL_SENDER nobody@example.com: no such mailbox" in line
    assert "ErrorInvalidUser" in line
    assert _sendmail_statuses(graph_mail) == [404]  # not retried
    assert _sent(graph_mail) == [] and _live_links(app) == 0
    assert graph_mail.client_secret not in err


def test_send_as_denied_is_one_line(
    scim: ScimClient, app: Flask, graph_mail: RunningEmulator
) -> None:
    new_hire(scim)
    graph_mail.fault(
        kind="status",
        status=403,
        code="ErrorSendAsDenied",
        method="POST",
        path=f"/v1.0/users/{SENDER}/sendMail",
    )
    code, _out, err = send_activation(app, "hire@example.com")
    assert code == 1
    line = _one_line(err)
    assert f"Graph refused to send as {SENDER}: send-as denied" in line
    assert "403 ErrorSendAsDenied" in line and "does not have the right to send mail" in line
    assert _sendmail_statuses(graph_mail) == [403]
    assert _live_links(app) == 0


def test_throttled_then_accepted_and_throttled_for_good(
    scim: ScimClient, app: Flask, graph_mail: RunningEmulator
) -> None:
    new_hire(scim)
    path = f"/v1.0/users/{SENDER}/sendMail"
    # Two 429s (Retry-After: 1) and a 503, then Graph takes it: one message, no error.
    graph_mail.fault(kind="status", status=429, retry_after=1, count=2, method="POST", path=path)
    graph_mail.fault(kind="status", status=503, retry_after=0, count=1, method="POST", path=path)
    code, out, err = send_activation(app, "hire@example.com")
    assert code == 0, err
    assert _sendmail_statuses(graph_mail) == [429, 429, 503, 202]
    assert len(_sent(graph_mail)) == 1 and "hire.personal@example.org" in out

    # Throttled on every try: the admin reads one line, and no link works.
    graph_mail.control("POST", "reset")
    graph_mail.create_user("directory")
    graph_mail.fault(
        kind="status",
        status=429,
        retry_after=1,
        count=mail.GRAPH_MAIL_ATTEMPTS,
        method="POST",
        path=path,
    )
    code, _out, err = send_activation(app, "hire@example.com")
    assert code == 1
    line = _one_line(err)
    assert f"Graph throttled sendMail as {SENDER} ({mail.GRAPH_MAIL_ATTEMPTS} tries)" in line
    assert "run the command again later" in line
    assert _sendmail_statuses(graph_mail) == [429] * mail.GRAPH_MAIL_ATTEMPTS
    assert _live_links(app) == 0


def test_the_emulator_checks_sendmail_as_documented(graph_mail: RunningEmulator) -> None:
    def send(sender: str, body: Any) -> Any:
        return graph_mail.graph("POST", f"/users/{sender}/sendMail", json=body)

    def message(**extra: Any) -> dict[str, Any]:
        return {
            "subject": "Hi",
            "body": {"contentType": "Text", "content": "Hello"},
            "toRecipients": [{"emailAddress": {"address": "someone@example.org"}}],
            **extra,
        }

    mailbox = graph_mail.graph("GET", f"/users/{SENDER}").json()
    # By UPN in any case, or by id; saveToSentItems as the page's own example sends it.
    accepted = send(SENDER.upper(), {"message": message(), "saveToSentItems": "false"})
    assert accepted.status_code == 202 and accepted.content == b""
    assert send(mailbox["id"], {"message": message()}).status_code == 202
    sent = _sent(graph_mail)
    assert [m["mailboxId"] for m in sent] == [mailbox["id"]] * 2
    assert [m["saveToSentItems"] for m in sent] == [False, True]

    unknown = send("nobody@example.com", {"message": message()})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "ErrorInvalidUser"
    assert "The requested user 'nobody@example.com' is invalid." in unknown.text
    for bad in (
        message(toRecipients=[]),
        message(toRecipients=[{"emailAddress": {"address": "not an address"}}]),
        message(toRecipients=[{"address": "someone@example.org"}]),
    ):
        refused = send(SENDER, {"message": bad})
        assert refused.status_code == 400, bad
        assert refused.json()["error"]["code"] == "ErrorInvalidRecipients"
    assert send(SENDER, {}).status_code == 400
    assert send(SENDER, {"message": message(body={"contentType": "Rtf"})}).status_code == 400
    assert send(SENDER, {"message": message(), "saveToSentItems": "no"}).status_code == 400
    assert send(SENDER, {"message": message(**{"from": {"emailAddress": "x"}})}).status_code == 400
    # Another `from` than the mailbox: no Send As in the emulator.
    other = message(**{"from": {"emailAddress": {"address": "ceo@example.com"}}})
    denied = send(SENDER, {"message": other})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "ErrorSendAsDenied"
    assert len(_sent(graph_mail)) == 2  # nothing refused was kept
    # The action's name in any case, as Microsoft's pages write it both ways.
    lower = graph_mail.graph("POST", f"/users/{SENDER}/sendmail", json={"message": message()})
    assert lower.status_code == 202 and len(_sent(graph_mail)) == 3
    # The control interface's reset forgets the mail too.
    graph_mail.reset()
    assert _sent(graph_mail) == []


def test_the_emulator_finds_users_by_upn_through_its_index(graph_mail: RunningEmulator) -> None:
    """Renames, deletes and restores keep the UPN lookup (sendMail's, $ref's) right."""
    user = graph_mail.create_user("adele")
    assert graph_mail.graph("GET", "/users/ADELE@example.com").status_code == 200
    renamed = graph_mail.graph(
        "PATCH", f"/users/{user['id']}", json={"userPrincipalName": "adele.v@example.com"}
    )
    assert renamed.status_code == 204
    assert graph_mail.graph("GET", "/users/adele@example.com").status_code == 404
    assert graph_mail.graph("GET", "/users/adele.v@example.com").status_code == 200
    assert graph_mail.graph("DELETE", f"/users/{user['id']}").status_code == 204
    assert graph_mail.graph("GET", "/users/adele.v@example.com").status_code == 404
    restored = graph_mail.graph("POST", f"/directory/deletedItems/{user['id']}/restore")
    assert restored.status_code == 200
    assert graph_mail.graph("GET", "/users/adele.v@example.com").status_code == 200


def test_implicit_tls_with_a_login(
    scim: ScimClient, app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_hire(scim)
    with smtp_server(tmp_path, login=("relay-user", "relay-Secret-1"), implicit_tls=True) as inbox:
        env = inbox.env(SMTP_USERNAME="relay-user", SMTP_PASSWORD="relay-Secret-1")
        assert env["SMTP_SSL"] == "true" and env["SMTP_STARTTLS"] == "false"
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code, out, err = send_activation(app, "hire@example.com")
        assert code == 0, err
        assert inbox.logins == ["relay-user"]
        assert [to for to, _m in inbox.messages] == [["hire.personal@example.org"]]
        assert "hire.personal@example.org" in out
        # Without the relay's CA the handshake fails, and says so in one line.
        monkeypatch.delenv("SMTP_CA_BUNDLE")
        code, _out, err = send_activation(app, "hire@example.com")
        assert code == 1
        assert "TLS with the SMTP relay" in _one_line(err)
        assert "relay-Secret-1" not in err
    assert len(inbox.messages) == 1


def test_smtp_ssl_defaults_to_port_465(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("SMTP_FROM", "directory@example.com")
    monkeypatch.setenv("SMTP_SSL", "true")
    for name in ("SMTP_PORT", "SMTP_STARTTLS", "MAIL_TRANSPORT", "MAIL_SENDER"):
        monkeypatch.delenv(name, raising=False)
    settings = mail.settings_from_env()
    assert isinstance(settings, mail.SmtpSettings)
    assert (settings.port, settings.implicit_tls, settings.starttls) == (465, True, False)
    monkeypatch.setenv("SMTP_STARTTLS", "true")
    with pytest.raises(mail.ConfigError, match="SMTP_SSL and SMTP_STARTTLS are both true"):
        mail.settings_from_env()


def _user(scim: ScimClient, user_name: str, alternate: str | None = None, **attrs: Any) -> None:
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", M365],
        "userName": user_name,
        **attrs,
    }
    if alternate is not None:
        body[M365] = {"alternateEmail": alternate}
    response = scim.post("/Users", body)
    assert response.status_code == 201, response.get_json()


def _bulk(app: Flask, *args: str) -> tuple[int, str, str]:
    return send_activation(app, "--all-without-password", *args)


def test_send_activation_to_all_without_password(
    scim: ScimClient,
    app: Flask,
    client: FlaskClient,
    worker: Worker,
    graph_mail: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _user(scim, "ann@example.com", "ann@home.example")  # gets one
    _user(scim, "bob@example.com")  # no alternateEmail
    _user(scim, "cid@contoso.com", "cid@home.example")  # out of M365_SYNC_DOMAINS' scope
    _user(scim, "dee@example.com", "dee@home.example", password="Has-A-Passw0rd!")  # not listed
    _user(scim, "eve@example.com", "eve@home.example", active=False)  # inactive
    _user(scim, "fay@example.com", "fay@home.example")  # already sent one
    _user(scim, "gus@example.com", "not an address")  # Graph refuses the recipient
    assert worker.drain()
    assert send_activation(app, "fay@example.com")[0] == 0
    _user(scim, "hal@example.com", "hal@home.example")  # the sync has not seen him yet

    code, out, err = _bulk(app, "--dry-run")
    assert code == 0, err
    assert "would send  ann@example.com at ann@home.example" in out
    assert "would send  gus@example.com at not an address" in out
    assert "skip        bob@example.com: without alternateEmail" in out
    assert (
        "skip        cid@contoso.com: not managed (out of scope, a conflict, or released): "
        "out_of_scope" in out
    )
    assert "skip        eve@example.com: inactive" in out
    assert "skip        fay@example.com: already sent" in out
    assert "skip        hal@example.com: not provisioned yet" in out
    assert "dee@example.com" not in out
    assert out.strip().splitlines()[-1] == (
        "Dry run: would send 2; skipped 5 (1 inactive (active is false), 1 not provisioned yet "
        "(the sync worker has not seen them: run again), 1 not managed (out of scope, a "
        "conflict, or released), 1 without alternateEmail, 1 already sent (a link still works; "
        "--resend sends new ones)). Nothing was sent."
    )
    assert len(_sent(graph_mail)) == 1  # fay's, from before
    assert _live_links(app) == 1

    code, out, err = _bulk(app)
    assert code == 1  # gus failed
    assert "sent        ann@example.com at ann@home.example" in out
    assert "failed      gus@example.com: Graph refused the recipient (400 Error" in err
    assert out.strip().splitlines()[-1].startswith("Sent 1; skipped 5 (")
    assert out.strip().splitlines()[-1].endswith("; failed 1.")
    sent = _sent(graph_mail)
    assert [m["toRecipients"] for m in sent] == [["fay@home.example"], ["ann@home.example"]]
    ann_link = _link(sent[-1])
    assert _live_links(app) == 2  # fay's and ann's; gus's was spent when Graph refused it

    # Again: nothing twice. Ann and Fay have links that work; Gus is tried (and fails) again.
    code, out, _err = _bulk(app)
    assert code == 1
    assert "skip        ann@example.com: already sent" in out
    assert out.strip().splitlines()[-1].startswith("Sent 0; skipped 6 (")
    assert len(_sent(graph_mail)) == 2

    # --resend: new links for Ann and Fay; the earlier ones are spent.
    code, out, _err = _bulk(app, "--resend")
    assert code == 1
    assert out.strip().splitlines()[-1].startswith("Sent 2; skipped 4 (")
    assert len(_sent(graph_mail)) == 4
    assert client.get(ann_link).status_code == 410
    assert client.get(_link(_sent(graph_mail)[-2])).status_code == 200

    # A mailbox gone: the run stops at the first send and says so in one line.
    monkeypatch.setenv("MAIL_SENDER", "gone@example.com")
    code, out, err = _bulk(app, "--resend")
    assert code == 1
    last = _one_line(err)
    assert last.startswith(
        "scim-server users send-activation: stopped: MAIL_SENDER gone@example.com: no such "
        "mailbox in the tenant (Graph 404 ErrorInvalidUser): give the UPN or primary address "
        "of a user or shared mailbox with an Exchange Online mailbox (request-id "
    )
    assert last.endswith(
        "; 2 not attempted (run the command again once fixed: it carries on where it stopped)"
    )
    assert len(_sent(graph_mail)) == 4
    assert "Sent 0;" in out


def test_send_activation_usage_errors(app: Flask) -> None:
    for args in (
        [],
        ["someone@example.com", "--all-without-password"],
        ["--all-without-password", "--to", "x@example.org"],
        ["someone@example.com", "--resend"],
        ["someone@example.com", "--dry-run"],
    ):
        code, _out, err = send_activation(app, *args)
        assert code == 2, (args, err)


def test_the_bulk_send_over_smtp_keeps_its_pace_and_goes_on_past_a_refused_recipient(
    scim: ScimClient,
    app: Flask,
    worker: Worker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scim_server import activation

    for name in ("ann", "bob", "cat"):
        _user(scim, f"{name}@example.com", f"{name}@home.example")
    assert worker.drain()
    waits: list[float] = []
    with smtp_server() as inbox:
        inbox.refuse.add("bob@home.example")
        for name, value in inbox.env().items():
            monkeypatch.setenv(name, value)
        with app.app_context():
            report = activation.send_all(
                mail.transport_from_env(), resend=False, per_minute=30, sleep=waits.append
            )
    assert report.sent == [
        ("ann@example.com", "ann@home.example"),
        ("cat@example.com", "cat@home.example"),
    ]
    assert [u for u, _why in report.failed] == ["bob@example.com"]
    assert "refused the recipient bob@home.example" in report.failed[0][1]
    assert report.aborted is None
    assert [to for to, _m in inbox.messages] == [["ann@home.example"], ["cat@home.example"]]
    # 30 a minute: two seconds between sends (less the time each send took).
    assert len(waits) == 2 and all(0.5 < w <= 2.0 for w in waits), waits
    assert _live_links(app) == 2


def test_a_link_whose_run_died_before_sending_is_sent_again_once_it_is_stale(
    scim: ScimClient,
    app: Flask,
    worker: Worker,
    graph_mail: RunningEmulator,
) -> None:
    """A run killed between making a link and sending it leaves a working link nobody got
    (sent_at unset): for IN_FLIGHT it is taken to be on its way, then a new one goes."""
    from scim_server import activation

    _user(scim, "ann@example.com", "ann@home.example")
    assert worker.drain()
    with app.app_context():
        user_id = db.session.execute(text("SELECT id FROM users")).scalar()
        db.session.remove()
        issued = activation._issue(str(user_id), resend=False)  # …and the process dies
    assert issued is not None
    code, out, _err = _bulk(app)
    assert code == 0
    assert "skip        ann@example.com: being sent" in out
    assert _sent(graph_mail) == []
    with app.app_context():
        db.session.execute(
            text("UPDATE activation_tokens SET created_at = :t"),
            {"t": activation.utcnow() - activation.IN_FLIGHT * 2},
        )
        db.session.commit()
        db.session.remove()
    code, out, _err = _bulk(app)
    assert code == 0 and "sent        ann@example.com at ann@home.example" in out
    assert len(_sent(graph_mail)) == 1
    assert _live_links(app) == 1  # the stale link was spent by the new one
    code, out, _err = _bulk(app)
    assert "skip        ann@example.com: already sent" in out and len(_sent(graph_mail)) == 1
