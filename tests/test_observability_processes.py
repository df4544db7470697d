"""What an operator watches, against real processes: `scim-server serve --no-sync` (gunicorn,
several processes) and `scim-server worker` processes talking to the emulator over HTTPS,
all on the test session's database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.graph_emulator import RunningEmulator, graph_env
from tests.helpers import sample

CLI = str(Path(sys.executable).parent / "scim-server")
# A heartbeat a second, stale after three: the test waits seconds, not a minute.
FAST_BEATS = {"SYNC_HEARTBEAT_SECONDS": "1", "SYNC_HEARTBEAT_MAX_AGE_SECONDS": "3"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _until(what: Callable[[], Any], timeout: float = 20.0, pause: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(pause)


@pytest.fixture
def env(app: Flask, database_url: str, graph_emulator: RunningEmulator) -> dict[str, str]:
    """The processes' environment: the test database, the emulator as the tenant."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        **graph_env(graph_emulator),
        "M365_SYNC_DOMAINS": "example.com",
        "M365_WRITE_RATE": "500",
        **FAST_BEATS,
    }


@pytest.fixture
def serve(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start `scim-server serve --no-sync`; returns its base URL. Stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(workers: int = 1, **extra: str) -> str:
        port = _free_port()
        with (tmp_path / f"serve-{port}.log").open("wb") as log:
            proc = subprocess.Popen(
                [CLI, "serve", "--port", str(port), "--workers", str(workers), "--no-sync"],
                env={**env, **extra},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        started.append(proc)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return _get(base + "/healthz")[0] == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        assert _until(up), "serve did not answer"
        return base

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(20)


def _worker(env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    command = [CLI, "worker", "--concurrency", "2"]
    if log is None:
        return subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=out)


def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    status, body = _get(base + "/readyz")
    return status, json.loads(body)


def test_readyz_follows_a_real_worker_process(
    env: dict[str, str], serve: Callable[..., str]
) -> None:
    base = serve()
    status, body = _readyz(base)
    assert status == 503 and body["checks"]["sync_worker"]["ok"] is False  # none ever beat

    worker = _worker(env)
    try:
        assert _until(lambda: _readyz(base)[0] == 200), _readyz(base)
        worker.send_signal(signal.SIGKILL)  # gone without a word: its row stays, unbeaten
        worker.wait(10)
        stale = _until(lambda: _readyz(base)[0] == 503, timeout=10)
        assert stale, _readyz(base)
        status, body = _readyz(base)
        seen = body["checks"]["sync_worker"]
        assert seen["ok"] is False and seen["last_beat_age_seconds"] >= 3
        assert body["checks"]["database"]["ok"] and body["checks"]["schema"]["ok"]

        worker = _worker(env)  # a new one beats at once
        assert _until(lambda: _readyz(base)[0] == 200), _readyz(base)
        assert _readyz(base)[1]["checks"]["sync_worker"]["fresh_workers"] == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    # A worker that stops cleanly folds its row into `retired`: gone from readiness too.
    assert _until(lambda: _readyz(base)[0] == 503, timeout=10), _readyz(base)


def _token(env: dict[str, str]) -> str:
    done = subprocess.run(
        [CLI, "token", "create", "ops"], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def test_metrics_are_summed_across_the_http_processes(
    env: dict[str, str], serve: Callable[..., str], tmp_path: Path
) -> None:
    token = _token(env)
    counts = tmp_path / "prometheus"
    base = serve(workers=2, PROMETHEUS_MULTIPROC_DIR=str(counts))
    url = base + "/scim/v2/Users"
    labels = {"method": "GET", "route": "/scim/v2/Users", "status": "200"}
    sent = 0
    # New connections until both processes have served some (each keeps its own file).
    while len({p.name.split("_")[-1] for p in counts.glob("counter_*.db")}) < 2 and sent < 400:
        assert _get(url, token)[0] == 200
        sent += 1
    assert len(list(counts.glob("counter_*.db"))) == 2, "one process served everything"
    for _ in range(4):  # whichever process answers the scrape, it counts them all
        text = _get(base + "/metrics")[1].decode()
        assert sample(text, "scim_http_requests_total", **labels) == sent
    for _ in range(10):
        assert _get(url, token)[0] == 200
    text = _get(base + "/metrics")[1].decode()
    assert sample(text, "scim_http_requests_total", **labels) == sent + 10
    durations = {"method": "GET", "route": "/scim/v2/Users"}
    assert sample(text, "scim_http_request_duration_seconds_count", **durations) == sent + 10


def test_sync_series_come_from_a_worker_on_its_own(
    env: dict[str, str],
    serve: Callable[..., str],
    graph_emulator: RunningEmulator,
    tmp_path: Path,
) -> None:
    """`serve --no-sync` scrapes what a separate `scim-server worker` did: its counters
    reach /metrics through the database, not through files the two would have to share."""
    token = _token(env)
    base = serve(METRICS_TOKEN="a-metrics-token-for-the-scraper")
    assert _get(base + "/metrics")[0] == 401
    for n in range(3):
        request = urllib.request.Request(
            base + "/scim/v2/Users",
            data=json.dumps({"userName": f"metered{n}@example.com"}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
    scrape_token = "a-metrics-token-for-the-scraper"

    def scrape() -> str:
        status, body = _get(base + "/metrics", scrape_token)
        assert status == 200
        return body.decode()

    assert sample(scrape(), "scim_outbox_events", state="pending") == 3
    log = tmp_path / "worker.log"
    worker = _worker({**env, "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}, log)
    try:
        delivered = _until(
            lambda: sample(scrape(), "scim_sync_delivered_total", kind="user") == 3, timeout=30
        )
        assert delivered, scrape()
        text = scrape()
        assert sample(text, "scim_outbox_events", state="pending") == 0
        assert (sample(text, "scim_graph_requests_total", status="200") or 0) >= 1
        assert sample(text, "scim_graph_throttled_total") == 0
        age = sample(text, "scim_sync_worker_heartbeat_age_seconds")
        assert age is not None and age < 3
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    # Stopped, its counts stay (folded into `retired`).
    assert sample(scrape(), "scim_sync_delivered_total", kind="user") == 3

    # LOG_FORMAT=json: each line the worker logged is one JSON object.
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines if not line.startswith("Microsoft 365 tenant")]
    assert len(records) == len(lines) - 1  # the command's own message, said as text
    delivered_lines = [r for r in records if r["message"].startswith("sync delivered")]
    assert len(delivered_lines) == 3
    assert all(r["logger"] == "scim_server.sync" and r["graph_request_id"] for r in delivered_lines)
    assert token not in log.read_text()
    assert graph_emulator.client_secret not in log.read_text()
