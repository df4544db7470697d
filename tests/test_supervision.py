"""`serve` supervises its sync worker and its HTTP server: the restart policy alone, then
real processes (a killed worker, a worker that cannot start, a dead HTTP server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from flask import Flask

from models import OutboxEvent
from scim_server import outbox
from scim_server.db import begin, db
from scim_server.supervisor import Backoff, GiveUp, Restart, RestartPolicy, describe_exit
from tests.conftest import ScimClient
from tests.serving import RunningServe, alive, descendants, serve, start_serve, stop_serve

M365 = "urn:ietf:params:scim:schemas:extension:m365:2.0:User"

# ------------------------------------------------------------------ the policy


def test_restarts_back_off_from_1_s_doubling_to_30_s() -> None:
    backoff = Backoff(RestartPolicy(max_exits=100))
    delays = []
    now = 0.0
    for _ in range(8):
        decision = backoff.exited(started_at=now, now=now + 20)  # up 20 s each time
        assert isinstance(decision, Restart)
        delays.append(decision.delay)
        now += 20 + decision.delay
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_worker_that_stayed_up_a_minute_starts_the_backoff_over() -> None:
    backoff = Backoff()
    assert backoff.exited(0, 1) == Restart(1)
    assert backoff.exited(2, 3) == Restart(2)
    assert backoff.exited(5, 6) == Restart(4)
    assert backoff.exited(10, 200) == Restart(1)  # up 190 s


def test_five_exits_within_a_minute_give_up() -> None:
    backoff = Backoff()
    decisions = [backoff.exited(t, t + 1) for t in (0, 3, 7, 15, 31)]
    assert all(isinstance(d, Restart) for d in decisions[:4])
    assert decisions[4] == GiveUp(exits=5, window=60)


def test_exits_spread_over_more_than_a_minute_do_not_give_up() -> None:
    backoff = Backoff()
    for t in range(0, 600, 20):  # one exit every 20 s, each after 19 s up
        assert isinstance(backoff.exited(t, t + 19), Restart)


def test_exit_statuses_are_described_with_the_signal_name() -> None:
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(2) == "exited with status 2"


# ------------------------------------------------------------------ leases


def test_a_stopping_worker_releases_only_its_own_leases(app: Flask, scim: ScimClient) -> None:
    for name in ("a@example.com", "b@example.com"):
        assert scim.post("/Users", {"userName": name}).status_code == 201
    with app.app_context():
        with begin(write=True) as conn:
            mine = outbox.claim(conn, "host:1-0", limit=1, lease_seconds=120)
        with begin(write=True) as conn:
            theirs = outbox.claim(conn, "host:2-0", limit=1, lease_seconds=120)
        assert len(mine) == len(theirs) == 1
        with begin(write=True) as conn:
            assert outbox.release(conn, "host:1-0") == 1
        rows = {e.id: e for e in db.session.scalars(db.select(OutboxEvent))}
        assert rows[mine[0].id].locked_by is None and rows[mine[0].id].locked_until is None
        assert rows[theirs[0].id].locked_by == "host:2-0"
        db.session.remove()
        # Released: claimable again at once, not after the lease.
        with begin(write=True) as conn:
            again = outbox.claim(conn, "host:3-0", limit=5, lease_seconds=120)
        assert [e.id for e in again] == [mine[0].id]


# ------------------------------------------------------------------ real processes


def test_a_killed_worker_is_logged_and_replaced_and_writes_still_sync(tmp_path: Path) -> None:
    with serve(tmp_path) as running:
        running.wait_for("sync worker started")
        first = _wait_for_worker(running)
        os.kill(first, signal.SIGKILL)
        running.wait_for("was killed by SIGKILL")
        line = next(line for line in running.output().splitlines() if "SIGKILL" in line)
        assert " ERROR scim_server.serve " in line and f"pid {first}" in line
        deadline = time.monotonic() + 20
        while (second := running.worker_pid()) in (None, first):
            assert time.monotonic() < deadline, running.output()
            time.sleep(0.1)
        assert not alive(first)
        # The HTTP side never stopped, and the new worker delivers.
        created = running.call("POST", "/scim/v2/Users", {"userName": "after.kill@example.com"})
        assert created.status == 201
        user_id = created.json()["id"]
        deadline = time.monotonic() + 30
        while True:
            state = running.call("GET", f"/scim/v2/Users/{user_id}?attributes={M365}").json()
            if state.get(M365, {}).get("syncState") == "synced":
                break
            assert time.monotonic() < deadline, (state, running.output())
            time.sleep(0.2)
        assert state[M365]["objectId"]
        assert running.worker_pid() == second


def test_a_worker_that_cannot_stay_up_stops_serve(tmp_path: Path) -> None:
    unreachable = {  # a tenant that cannot be reached: the worker exits at start, every time
        "GRAPH_TENANT_ID": "00000000-0000-0000-0000-000000000000",
        "GRAPH_CLIENT_ID": "client",
        "GRAPH_CLIENT_SECRET": "secret",
        "GRAPH_AUTHORITY_HOST": "https://127.0.0.1:9",
        "GRAPH_URL": "https://127.0.0.1:9/v1.0",
        "GRAPH_TIMEOUT_SECONDS": "2",
        "GRAPH_SANDBOX": "",  # the tenant above, not the suite's sandbox
    }
    running = start_serve(tmp_path, env=unreachable, wait=False)
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 90
        while running.process.poll() is None:
            family |= descendants(running.process.pid)
            assert time.monotonic() < deadline, running.output()
            time.sleep(0.2)
    finally:
        stop_serve(running)
    output = running.output()
    assert running.process.returncode == 1, output
    assert "Token endpoint unreachable" in output  # the worker's own error
    assert output.count("sync worker started") == 5
    assert "(5 exits within 60 s): stopping serve" in output
    time.sleep(0.5)
    assert not [pid for pid in family if alive(pid)]  # the HTTP server went with it


def test_a_sync_setting_to_fix_stops_serve_before_it_starts(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}
    env["M365_DELETE_POLICY"] = "nuke"
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "scim-server"), "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "M365_DELETE_POLICY must be one of disable, delete, ignore" in done.stderr
    assert time.monotonic() - started < 30


def test_serve_exits_non_zero_when_the_http_server_dies(tmp_path: Path) -> None:
    running = start_serve(tmp_path)
    try:
        family = descendants(running.process.pid)
        http = next(
            pid
            for pid in family
            if b"granian" in Path(f"/proc/{pid}/cmdline").read_bytes() and os.getpgid(pid) == pid
        )
        os.kill(http, signal.SIGKILL)
        running.process.wait(20)
    finally:
        stop_serve(running)
    output = running.output()
    assert running.process.returncode == 1, output
    assert f"HTTP server (pid {http}) was killed by SIGKILL: stopping serve" in output
    time.sleep(0.5)
    assert not [pid for pid in family if alive(pid)]  # granian's workers and the worker too


def _wait_for_worker(running: RunningServe) -> int:
    deadline = time.monotonic() + 20
    while (pid := running.worker_pid()) is None:
        assert time.monotonic() < deadline, running.output()
        time.sleep(0.1)
    return pid
