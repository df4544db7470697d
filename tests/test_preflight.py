"""Configuration fails fast (issue 12): `serve` and `worker` check every setting and the
database before they listen or claim anything. A bad value exits with status 2 and one line
that names the variable, never a traceback, and never a secret."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "scim-server")
SECRET = "s3cret-never-printed"

# (variable, value, what the one line must say)
BAD = [
    ("M365_DELETE_POLICY", "nuke", "M365_DELETE_POLICY"),
    ("M365_ON_CONFLICT", "merge", "M365_ON_CONFLICT"),
    ("M365_USAGE_LOCATION", "Britain", "M365_USAGE_LOCATION"),
    ("M365_WRITE_RATE", "fast", "M365_WRITE_RATE"),
    ("M365_LEASE_SECONDS", "1", "M365_LEASE_SECONDS"),
    ("M365_DRIFT", "fix", "M365_DRIFT"),
    ("M365_DRIFT_INTERVAL_MINUTES", "0", "M365_DRIFT_INTERVAL_MINUTES"),
    ("M365_DRIFT_INTERVAL_MINUTES", "nan", "M365_DRIFT_INTERVAL_MINUTES"),
    ("M365_DRIFT_READ_RATE", "-5", "M365_DRIFT_READ_RATE"),
    ("SCIM_MAX_PAGE_SIZE", "many", "SCIM_MAX_PAGE_SIZE"),
    ("SCIM_TOKEN_CACHE_SECONDS", "-1", "SCIM_TOKEN_CACHE_SECONDS"),
    ("SCIM_PUBLIC_URL", "ftp://example.com", "SCIM_PUBLIC_URL"),
    ("SCIM_TRUSTED_PROXIES", "two", "SCIM_TRUSTED_PROXIES"),
    ("SCIM_ENCRYPTION_KEY", SECRET, "SCIM_ENCRYPTION_KEY"),
    ("PORTAL_USER_FAILURES", "0", "PORTAL_USER_FAILURES"),
    ("PORTAL_LOCKOUT_SECONDS", "soon", "PORTAL_LOCKOUT_SECONDS"),
    ("ACTIVATION_TTL_HOURS", "1.5", "ACTIVATION_TTL_HOURS"),
    ("GRAPH_TENANT_ID", "00000000-0000-0000-0000-000000000000", "GRAPH_CLIENT_ID"),
    ("GRAPH_CLIENT_SECRET", SECRET, "GRAPH_TENANT_ID"),  # a tenant's secret, no tenant
    ("SMTP_HOST", "smtp.example.com", "SMTP_FROM"),
    ("SMTP_STARTTLS", "maybe", "SMTP_STARTTLS"),
    ("SMTP_SSL", "maybe", "SMTP_SSL"),
    ("MAIL_TRANSPORT", "pigeon", "MAIL_TRANSPORT"),
    ("MAIL_TRANSPORT", "graph", "MAIL_SENDER"),
    ("MAIL_SENDER", "directory@example.com", "MAIL_TRANSPORT is smtp"),  # graph not chosen
    ("MAIL_RATE_PER_MINUTE", "-1", "MAIL_RATE_PER_MINUTE"),
    ("DATABASE_URL", f"mysql://admin:{SECRET}@db.example.com/scim", "DATABASE_URL"),
    ("DATABASE_URL", f"postgresql://admin:{SECRET}@127.0.0.1:9/scim", "cannot reach"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def base_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("M365_", "SCIM_", "PORTAL_", "GRAPH_", "SMTP_", "MAIL_", "ACTIVATION_")
        )
    }
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'preflight.sqlite3'}"
    return env


def _assert_one_line(done: subprocess.CompletedProcess[str], names: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert names in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize(("name", "value", "names"), BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_serve_refuses_a_bad_setting_before_it_listens(
    base_env: dict[str, str], tmp_path: Path, name: str, value: str, names: str
) -> None:
    port = _free_port()
    done = _run([CLI, "serve", "--port", str(port)], {**base_env, name: value})
    _assert_one_line(done, names)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    # Nothing was set up either: the schema was not created in the SQLite file.
    database = tmp_path / "preflight.sqlite3"
    assert not database.exists() or database.stat().st_size == 0


@pytest.mark.parametrize(
    ("name", "value", "names"),
    [BAD[0], BAD[9], BAD[14], BAD[-1]],
    ids=["M365_DELETE_POLICY", "SCIM_ENCRYPTION_KEY", "GRAPH_CLIENT_SECRET", "unreachable"],
)
def test_the_worker_refuses_a_bad_setting_before_it_claims(
    base_env: dict[str, str], name: str, value: str, names: str
) -> None:
    _assert_one_line(_run([CLI, "worker"], {**base_env, name: value}), names)


# Mail settings that are wrong only together (issue 16).
MAIL_BAD = [
    ({"MAIL_TRANSPORT": "graph", "MAIL_SENDER": "Directory <dir@example.com>"}, "MAIL_SENDER"),
    ({"MAIL_TRANSPORT": "graph", "MAIL_SENDER": "no-at-sign"}, "must be an email address"),
    ({"MAIL_TRANSPORT": "GRAPH", "MAIL_SENDER": "dir@example.com"}, "GRAPH_TENANT_ID"),
    (
        {
            "SMTP_HOST": "smtp.example.com",
            "SMTP_FROM": "d@example.com",
            "SMTP_SSL": "true",
            "SMTP_STARTTLS": "true",
        },
        "SMTP_SSL and SMTP_STARTTLS",
    ),
    (
        {
            "SMTP_HOST": "smtp.example.com",
            "SMTP_FROM": "d@example.com",
            "SMTP_STARTTLS": "false",
            "SMTP_USERNAME": "relay",
            "SMTP_PASSWORD": SECRET,
        },
        "SMTP_USERNAME",
    ),
]


@pytest.mark.parametrize(("env", "names"), MAIL_BAD, ids=[b[1] for b in MAIL_BAD])
def test_serve_refuses_mail_settings_that_do_not_fit(
    base_env: dict[str, str], env: dict[str, str], names: str
) -> None:
    done = _run([CLI, "serve", "--port", str(_free_port()), "--sandbox"], {**base_env, **env})
    _assert_one_line(done, names)


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]], ids=["serve", "worker"])
def test_without_a_tenant_or_the_sandbox_nothing_starts(
    base_env: dict[str, str], command: list[str]
) -> None:
    """The sandbox is never a silent fallback: a box whose tenant settings went missing
    must not deliver to the emulator."""
    done = _run([CLI, *command], base_env)
    _assert_one_line(done, "GRAPH_TENANT_ID")
    assert "--sandbox" in done.stderr


def test_serve_without_sync_needs_no_target(base_env: dict[str, str]) -> None:
    # --no-sync needs neither a tenant nor the sandbox: it gets as far as the schema check.
    done = _run([CLI, "serve", "--no-sync", "--port", str(_free_port())], base_env)
    _assert_one_line(done, "scim-server db upgrade")


def test_a_tenant_and_the_sandbox_at_once_are_refused(base_env: dict[str, str]) -> None:
    env = {
        **base_env,
        "GRAPH_TENANT_ID": "00000000-0000-0000-0000-000000000000",
        "GRAPH_CLIENT_ID": "app",
        "GRAPH_CLIENT_SECRET": SECRET,
    }
    _assert_one_line(_run([CLI, "worker", "--sandbox"], env), "choose one target")


def test_host_and_port_come_from_the_environment(base_env: dict[str, str], tmp_path: Path) -> None:
    """Twelve-factor: HOST and PORT set where serve listens; the flags win over them."""
    port = _free_port()
    env = {**base_env, "HOST": "127.0.0.1", "PORT": str(port)}
    assert _run([CLI, "db", "upgrade"], env).returncode == 0
    server = subprocess.Popen(
        [CLI, "serve", "--no-sync", "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import time
        import urllib.request

        for _ in range(150):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"serve did not listen on PORT={port}")
    finally:
        server.terminate()
        server.wait(20)
