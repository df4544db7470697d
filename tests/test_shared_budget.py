"""One Graph write budget per app and tenant, shared by every worker process (sync.budget):
the bucket row in the database, the pacer that spends its grants, and three real
`scim-server worker` processes draining a backlog at the emulator's sped-up budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask import Flask

from scim_server.db import db
from scim_server.sync import store
from scim_server.sync.budget import GRANT, DatabaseBudget, SharedPacer
from tests.conftest import ScimClient
from tests.graph_emulator import RunningEmulator, graph_env
from tests.helpers import FakeClock

CLI = str(Path(sys.executable).parent / "scim-server")
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


class FakeSource:
    """A shared budget that grants what is asked and remembers the calls."""

    def __init__(self, wait: float = 0.0) -> None:
        self.takes: list[tuple[float, float]] = []
        self.pauses: list[float] = []
        self.wait = wait
        self.paused = 0.0

    def take(self, need: float, want: float) -> tuple[float, float]:
        self.takes.append((need, want))
        if self.paused:
            paused, self.paused = self.paused, 0.0
            return 0.0, paused
        return want, self.wait

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


def test_a_shared_pacer_asks_the_budget_once_per_grant_not_per_write() -> None:
    clock = FakeClock()
    source = FakeSource()
    pacer = SharedPacer(source, 10, clock=clock, sleep=clock.sleep)
    for _ in range(2 * GRANT):
        pacer.acquire()
    assert source.takes == [(1.0, GRANT), (1.0, GRANT)]
    pacer.acquire(GRANT)  # a whole $batch of writes: one grant of its size
    assert source.takes[-1] == (GRANT, GRANT)


def test_a_shared_pacer_waits_as_long_as_the_budget_says() -> None:
    clock = FakeClock()
    pacer = SharedPacer(FakeSource(wait=1.5), 10, clock=clock, sleep=clock.sleep)
    assert pacer.acquire() == 1.5
    assert pacer.acquire() == 0  # the rest of that grant is paid for already


def test_a_hold_is_the_longest_retry_after_and_reaches_the_budget_once() -> None:
    clock = FakeClock()
    source = FakeSource()
    pacer = SharedPacer(source, 10, clock=clock, sleep=clock.sleep)
    pacer.acquire()  # holds the rest of a grant
    for _ in range(20):  # twenty parts of one batch, each throttled for 2 s
        pacer.hold(2.0)
        clock.now += 0.001
    pacer.hold(1.0)  # a shorter one does not shorten it
    assert source.pauses == [2.0]  # the other processes hear of it once
    waited = pacer.acquire()
    assert round(waited, 3) == 1.999  # 2 s from the last part; then a new grant
    assert len(source.takes) == 2


def test_a_shared_pacer_waits_out_a_pause_another_process_set() -> None:
    clock = FakeClock()
    source = FakeSource()
    source.paused = 3.0
    pacer = SharedPacer(source, 10, clock=clock, sleep=clock.sleep)
    assert pacer.acquire() == 3.0
    assert len(source.takes) == 2  # told to wait, then granted


def test_grants_from_the_database_add_up_to_the_rate(app: Flask) -> None:
    """Two processes' budgets on one row: together they get the burst, then the rate."""
    clock = FakeClock()
    with app.app_context():
        one, two = (DatabaseBudget(db.engine, "tenant-a", 10, clock=clock) for _ in range(2))
        other_tenant = DatabaseBudget(db.engine, "tenant-b", 10, clock=clock)
    assert one.take(1, 20) == (20, 0)  # the bucket starts full (10): 20 leaves a debt of 10
    granted, wait = two.take(1, 20)
    assert granted == 20 and round(wait, 6) == 1.1  # behind that debt, until its first write
    clock.now += 10  # 100 tokens later the debt (30) is paid and the bucket full again
    assert one.take(5, 20) == (20, 0)
    assert other_tenant.take(1, 20) == (20, 0)  # another tenant, another budget


def test_a_pause_in_the_database_stops_every_process(app: Flask) -> None:
    clock = FakeClock()
    with app.app_context():
        one, two = (DatabaseBudget(db.engine, "tenant-a", 10, clock=clock) for _ in range(2))
    one.pause(4.0)
    one.pause(2.0)  # a shorter one does not shorten it
    assert two.take(1, 20) == (0, 4.0)
    clock.now += 4.0
    assert two.take(1, 20)[0] == 20


# ---------------------------------------------------------------- three processes


BUDGET, WINDOW = 150, 10.0  # the emulator's budget, Graph's sped up 10x: 15 writes/s
USERS = 300


@pytest.mark.skipif(
    not os.environ.get("SCIM_TEST_DATABASE_URL"),
    reason="needs PostgreSQL: worker processes on SQLite share its one writer, not a budget "
    "row locked per grant (SCIM_TEST_DATABASE_URL)",
)
def test_three_worker_processes_share_one_write_budget(
    app: Flask,
    scim: ScimClient,
    database_url: str,
    graph_emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    """Each process paces itself to M365_WRITE_RATE = the whole budget; shared, the three
    together deliver the budget and almost never meet a 429."""
    rate = BUDGET / WINDOW
    graph_emulator.configure(write_budget=BUDGET, write_window=WINDOW)
    for i in range(USERS):
        scim.user(f"user{i:04}@example.com")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        **graph_env(graph_emulator),
        "M365_SYNC_DOMAINS": "example.com",
        "M365_WRITE_RATE": str(rate),
    }
    workers = []
    for n in range(3):
        with (tmp_path / f"worker-{n}.log").open("wb") as log:
            workers.append(
                subprocess.Popen(
                    [CLI, "worker", "--concurrency", "2"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
    try:
        deadline = time.monotonic() + 50
        pending = USERS
        while pending and time.monotonic() < deadline:
            time.sleep(0.5)
            with app.app_context():
                pending = store.backlog().get("pending", 0)
                db.session.remove()
        logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("worker-*.log"))
        assert pending == 0, logs
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(20)

    log = [r for r in graph_emulator.request_log() if r["path"].startswith("/v1.0")]
    operations = [r for r in log if r["path"] != "/v1.0/$batch"]
    creates = [r for r in operations if r["method"] == "POST" and r["status"] == 201]
    users = [o for o in graph_emulator.state()["objects"] if o["kind"] == "user"]
    assert len(creates) == len(users) == USERS
    writes = sorted(r["time"] for r in operations if r["method"] in WRITES and r["status"] < 400)
    # The emulator's bucket starts full (BUDGET writes at once); past the first hundred
    # writes the workers are at the rate the budget refills.
    skip = 100
    delivered = (len(writes) - skip) / (writes[-1] - writes[skip])
    assert delivered >= 0.9 * rate, (delivered, rate)
    throttled = [r for r in operations if r["status"] == 429]
    assert len(throttled) <= 0.01 * len(operations), (len(throttled), len(operations))
