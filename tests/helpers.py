"""Plain helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from scim_server.db import db
from tests.conftest import ScimClient
from tests.smtp_server import Inbox

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
M365 = "urn:ietf:params:scim:schemas:extension:m365:2.0:User"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        found = re.fullmatch(r"([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)", line)
        if not found or found.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(3) or ""))
        if got == labels:
            return float(found.group(4))
    return None


def scrape(client: FlaskClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200, response.data
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.get_data(as_text=True)


def patch_ops(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def database_text(app: Flask, database_url: str, tmp_path: Path) -> bytes:
    """Everything the database holds, as bytes: every page of the SQLite file (free pages
    and the WAL's newer pages included), or every PostgreSQL row."""
    if database_url.startswith("sqlite:///"):
        # Through SQLite's backup API, never open() and close() on the live file: closing any
        # descriptor of it drops this process's POSIX locks, and SQLite's with them.
        copy = tmp_path / "copy.sqlite3"
        source = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return copy.read_bytes()
    from sqlalchemy import text

    from models import Base

    with app.app_context():
        rows = [
            str(row[0])
            for table in Base.metadata.sorted_tables
            for row in db.session.execute(text(f'SELECT t::text FROM "{table.name}" t'))
        ]
        db.session.remove()
    return "\n".join(rows).encode()


def new_hire(scim: ScimClient, user_name: str = "hire@example.com") -> dict[str, object]:
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", M365],
        "userName": user_name,
        "displayName": "New Hire",
        M365: {"alternateEmail": "hire.personal@example.org"},
    }
    response = scim.post("/Users", body)
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def send_activation(app: Flask, *args: str) -> tuple[int, str, str]:
    result = app.test_cli_runner().invoke(args=["users", "send-activation", *args])
    return result.exit_code, result.stdout, result.stderr


def activation_link(inbox: Inbox, index: int = -1) -> str:
    _to, message = inbox.messages[index]
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = re.search(r"https?://\S+/portal/activate/(\S+)", body.decode())
    assert found, body
    return "/portal/activate/" + found.group(1)
