"""Logging: the formats, the levels, and no secret in any line at any level."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from scim_server import logs
from scim_server.sync.worker import Worker
from tests.conftest import ScimClient
from tests.graph_emulator import RunningEmulator
from tests.helpers import activation_link, new_hire, send_activation
from tests.smtp_server import Inbox

CLI = str(Path(sys.executable).parent / "scim-server")


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("scim_server.access", logging.INFO, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_request_fields_when_present() -> None:
    access = {
        "request_id": "r-1",
        "method": "GET",
        "path": "/scim/v2/Users",
        "route": "/scim/v2/Users",
        "status": 200,
        "duration_ms": 1.25,
        "token_name": "okta",
        "remote_addr": "10.0.0.1",
        "user_agent": "Okta SCIM Client 1.0.0",
    }
    line = logs.JsonFormatter().format(_record("GET %s", "/scim/v2/Users", **access))
    parsed = json.loads(line)
    assert parsed["level"] == "INFO" and parsed["logger"] == "scim_server.access"
    assert parsed["message"] == "GET /scim/v2/Users"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", parsed["time"])
    assert {k: parsed[k] for k in access} == access
    plain = json.loads(logs.JsonFormatter().format(_record("no extras")))
    assert set(plain) == {"time", "level", "logger", "message"}


def test_json_lines_hold_a_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exception"]


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.abc.def",
        'headers={"Authorization": "bearer scim_x"}',
        "GET /portal/activate/Zm9vYmFyYmF6cXV4?x=1 HTTP/1.1",
        "token scim_" + "A" * 43 + " was used",
    ],
)
def test_credentials_are_redacted_in_both_formats(text: str) -> None:
    secret = re.search(r"(?i)bearer (\S+?)[\"' ]|activate/([^?]+)|(scim_A+)", text + " ")
    assert secret is not None
    value = next(g for g in secret.groups() if g)
    for formatter in (logs.TextFormatter(), logs.JsonFormatter()):
        out = formatter.format(_record("%s", text))
        assert value not in out and "[redacted]" in out
    json.loads(logs.JsonFormatter().format(_record("%s", text)))  # still JSON


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "value"), [("LOG_LEVEL", "LOUD"), ("LOG_FORMAT", "xml"), ("LOG_LEVEL", "10")]
)
def test_a_bad_log_setting_is_refused_at_start(tmp_path: Path, name: str, value: str) -> None:
    done = _cli(
        "token", "list", DATABASE_URL=f"sqlite:///{tmp_path / 'x.sqlite3'}", **{name: value}
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and value in lines[0], done.stderr


def test_no_secret_in_any_log_line_at_debug(
    app: Flask,
    scim: ScimClient,
    client: FlaskClient,
    worker: Worker,
    graph_emulator: RunningEmulator,
    inbox: Inbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A flow through every secret: a SCIM token, a password set through SCIM and pushed to
    M365, the Graph app's secret and access token, an activation link and the password
    chosen through it. Everything logged, by us and by the libraries, at DEBUG, written in
    both formats, names none of them."""
    caplog.set_level(logging.DEBUG)
    scim_password = "Sc1m-Set-Passw0rd!"
    user = scim.user("secret.keeper@example.com", password=scim_password)
    hire = new_hire(scim)
    assert worker.drain()
    code, _out, err = send_activation(app, "hire@example.com")
    assert code == 0, err
    link = activation_link(inbox)
    chosen = "Ch0sen-Thr0ugh-Link!"
    assert client.get(link).status_code == 200
    done = client.post(link, data={"password": chosen, "confirm": chosen})
    assert done.status_code == 200
    assert worker.drain()
    assert scim.get(f"/Users/{user['id']}").status_code == 200
    assert scim.get(f"/Users/{hire['id']}").status_code == 200
    secrets = {
        "SCIM token": str(scim.token),
        "SCIM password": scim_password,
        "activation token": link.rsplit("/", 1)[-1],
        "chosen password": chosen,
        "Graph client secret": graph_emulator.client_secret,
        "Graph access token": worker.client.tokens.token(),
    }
    assert len(caplog.records) > 20  # the libraries did speak at DEBUG
    for formatter in (logs.TextFormatter(), logs.JsonFormatter()):
        written = "\n".join(formatter.format(r) for r in caplog.records)
        for what, secret in secrets.items():
            assert secret not in written, f"{what} in the log"
