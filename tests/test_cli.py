"""The `scim-server` command, including a real `serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from flask import Flask


def test_token_create_prints_token_alone_on_last_line(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["token", "create", "okta", "--read-only"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("scim_") and " " not in token
    listed = runner.invoke(args=["token", "list", "--json"])
    rows = json.loads(listed.stdout)
    assert rows[0]["name"] == "okta" and rows[0]["read_only"] is True
    assert token not in listed.stdout  # only a prefix is ever shown again
    revoked = runner.invoke(args=["token", "revoke", "okta"])
    assert revoked.exit_code == 0
    again = runner.invoke(args=["token", "revoke", "okta"])
    assert again.exit_code == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_after_db_upgrade_syncs_to_the_sandbox(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}"}
    bindir = Path(sys.executable).parent
    cli = str(bindir / "scim-server")
    subprocess.run([cli, "db", "upgrade"], env=env, capture_output=True, check=True)
    created = subprocess.run(
        [cli, "token", "create", "smoke"], env=env, capture_output=True, text=True, check=True
    )
    token = created.stdout.strip().splitlines()[-1]
    port = _free_port()
    server = subprocess.Popen(
        [cli, "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/scim/v2/Users"
        body = None
        deadline = time.monotonic() + 60  # a loaded machine starts granian's workers slowly
        while time.monotonic() < deadline:
            try:
                req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, timeout=2) as resp:
                    body = json.load(resp)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert body is not None, "server did not answer"
        assert body["totalResults"] == 0
        # The embedded sync worker delivers to the sandbox tenant.
        new_user = urllib.request.Request(
            url,
            data=json.dumps({"userName": "bjensen@example.com"}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
        )
        with urllib.request.urlopen(new_user, timeout=5) as resp:
            assert resp.status == 201
        status = ""
        for _ in range(100):
            status = subprocess.run(
                [cli, "sync", "status"], env=env, capture_output=True, text=True, check=True
            ).stdout
            if "Users synced: 1" in status:
                break
            time.sleep(0.2)
        assert "SANDBOX" in status and "Users synced: 1" in status, status
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    assert "HTTP server started" in output and "sync worker started" in output
    assert "SANDBOX tenant" in output  # said plainly on start
    assert token not in output  # secrets never reach the log
