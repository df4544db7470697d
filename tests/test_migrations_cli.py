"""Migrations are a step of their own (issue 14): `scim-server db upgrade` migrates, under a
lock that makes nodes starting together take turns; every other command checks the schema
and refuses, in one line, to run on one that is behind; read-only commands never migrate.
And the CLI says its own version, and shows only what an operator uses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from scim_server.config import normalise_database_url
from scim_server.dbschema import ADVISORY_LOCK_KEY

CLI = str(Path(sys.executable).parent / "scim-server")


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def fresh_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An empty database: a SQLite file, or a new PostgreSQL database in a PostgreSQL run."""
    external = os.environ.get("SCIM_TEST_DATABASE_URL")
    env = {
        k: v
        for k, v in os.environ.items()
        if k == "GRAPH_SANDBOX" or not k.startswith(("GRAPH_", "M365_"))
    }
    if not external:
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        yield env
        return
    from tests.conftest import _drop_postgres_database, _postgres_database

    url = _postgres_database(external)
    env["DATABASE_URL"] = url.replace("postgresql+psycopg://", "postgresql://")
    try:
        yield env
    finally:
        _drop_postgres_database(url)


def _tables(env: dict[str, str]) -> set[str]:
    engine = sa.create_engine(normalise_database_url(env["DATABASE_URL"]))
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "command",
    [
        ("token", "list"),
        ("sync", "status"),
        ("token", "create", "early"),
        ("users", "set-temp-password", "nobody"),
        ("worker",),
        ("serve", "--no-sync", "--port", "0"),
    ],
)
def test_commands_refuse_a_schema_behind_and_do_not_migrate(
    fresh_env: dict[str, str], command: tuple[str, ...]
) -> None:
    done = _run(*command, env=fresh_env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "scim-server db upgrade" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "alembic_version" not in _tables(fresh_env)  # nothing was migrated


def test_db_upgrade_then_current_and_history(fresh_env: dict[str, str]) -> None:
    before = _run("db", "current", env=fresh_env)
    assert before.returncode == 0 and "(empty database)" in before.stdout
    assert "alembic_version" not in _tables(fresh_env)  # `current` reads, never migrates
    history = _run("db", "history", env=fresh_env).stdout.splitlines()
    head = history[0].split()[0]
    upgraded = _run("db", "upgrade", env=fresh_env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"revision {head}" in upgraded.stdout
    after = _run("db", "current", env=fresh_env).stdout
    assert f"current: {head}" in after and "run `scim-server db upgrade`" not in after
    assert _run("token", "list", env=fresh_env).returncode == 0


def test_worker_migrate_upgrades_at_start(fresh_env: dict[str, str]) -> None:
    worker = subprocess.Popen(
        [CLI, "worker", "--migrate"], env=fresh_env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while "users" not in _tables(fresh_env) and time.monotonic() < deadline:
            assert worker.poll() is None
            time.sleep(0.2)
        assert "users" in _tables(fresh_env)
    finally:
        worker.terminate()
        worker.wait(30)
    assert _run("db", "current", env=fresh_env).returncode == 0


@pytest.mark.skipif(
    not os.environ.get("SCIM_TEST_DATABASE_URL"),
    reason="the advisory lock is PostgreSQL's; on SQLite the upgrade takes a file lock",
)
def test_an_upgrade_waits_for_the_advisory_lock_another_node_holds(
    fresh_env: dict[str, str],
) -> None:
    engine = sa.create_engine(normalise_database_url(fresh_env["DATABASE_URL"]))
    try:
        with engine.connect() as holder:
            holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
            first = subprocess.Popen([CLI, "db", "upgrade"], env=fresh_env, text=True)
            second = subprocess.Popen([CLI, "db", "upgrade"], env=fresh_env, text=True)
            time.sleep(3)
            # Both wait behind the lock: neither has touched the schema.
            assert first.poll() is None and second.poll() is None
            assert "alembic_version" not in _tables(fresh_env)
            holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
            holder.commit()
        # Released: one upgrades, the other finds the schema at head; both succeed.
        assert first.wait(120) == 0 and second.wait(120) == 0
        assert {"users", "groups", "outbox"} <= _tables(fresh_env)
    finally:
        engine.dispose()


def test_two_upgrades_started_together_both_succeed(fresh_env: dict[str, str]) -> None:
    nodes = [
        subprocess.Popen([CLI, "db", "upgrade"], env=fresh_env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(node.wait(120), node.communicate()[1]) for node in nodes]
    assert all(code == 0 for code, _ in results), results
    assert _run("db", "current", env=fresh_env).stdout.count("current: ") == 1


def test_the_cli_shows_its_own_version_and_only_operators_commands() -> None:
    version = subprocess.run([CLI, "--version"], capture_output=True, text=True, check=True)
    from importlib.metadata import version as installed

    assert version.stdout.strip() == f"scim-server, version {installed('scim-server')}"
    top = subprocess.run([CLI, "--help"], capture_output=True, text=True, check=True).stdout
    for flask_option in ("--env-file", "--app", "--debug"):
        assert flask_option not in top
    db_help = subprocess.run([CLI, "db", "--help"], capture_output=True, text=True).stdout
    commands = db_help.split("Commands:")[1].split()
    assert [w for w in commands if w in ("upgrade", "current", "history", "migrate", "init")] == [
        "current",
        "history",
        "upgrade",
    ]


def test_scim_instance_path_moves_the_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "SCIM_ENCRYPTION_KEY", "SCIM_ENCRYPTION_KEYS")
    }
    env["SCIM_INSTANCE_PATH"] = str(data)
    assert _run("db", "upgrade", env=env).returncode == 0
    created = _run("users", "set-temp-password", "nobody", env=env)  # a key file is not needed
    assert created.returncode == 1  # no such user: but the database is the one in `data`
    assert (data / "scim.sqlite3").is_file()
