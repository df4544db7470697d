"""Faults, each ending with the emulator's tenant equal to the directory, with no lost change
and no duplicate object: a 429 storm, workers killed with SIGKILL mid-batch again and again,
and two worker processes at once on PostgreSQL. The workers are real `scim-server worker`
processes talking to the emulator over HTTPS."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from models import M365Link, OutboxEvent
from scim_server.db import db
from scim_server.graph.client import GraphClient
from scim_server.sync.pacer import Pacer
from scim_server.sync.policy import Policy
from scim_server.sync.settings import SyncSettings
from scim_server.sync.worker import Worker
from tests.conftest import ScimClient
from tests.graph_emulator import RunningEmulator, graph_env, settings_for

CLI = str(Path(sys.executable).parent / "scim-server")


def _worker_env(database_url: str, emulator: RunningEmulator, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        **graph_env(emulator),
        "M365_SYNC_DOMAINS": "example.com",
        "M365_WRITE_RATE": "500",
        "M365_LEASE_SECONDS": "5",
        **extra,
    }


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CLI, "worker", "--concurrency", "3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _pending(app: Flask) -> int:
    with app.app_context():
        try:
            return int(
                db.session.scalar(select(func.count()).where(OutboxEvent.status == "pending")) or 0
            )
        finally:
            db.session.remove()


def _assert_tenant_matches_directory(app: Flask, emulator: RunningEmulator, upns: set[str]) -> None:
    objects = [o for o in emulator.state()["objects"] if o["kind"] == "user"]
    names = [o["props"]["userPrincipalName"].lower() for o in objects if not o["deleted_at"]]
    assert sorted(n for n in names if n in upns) == sorted(upns)  # each exactly once
    with app.app_context():
        states = dict(
            db.session.execute(
                select(M365Link.state, func.count())
                .where(M365Link.resource_type == "User")
                .group_by(M365Link.state)
            ).all()
        )
        dead = db.session.scalar(select(func.count()).where(OutboxEvent.status == "dead"))
        db.session.remove()
    assert states == {"synced": len(upns)}, states
    assert dead == 0


def test_a_429_storm_is_ridden_out(
    scim: ScimClient, app: Flask, graph_emulator: RunningEmulator
) -> None:
    graph_emulator.configure(write_budget=8, write_window=1)
    upns = {f"storm{i}@example.com" for i in range(40)}
    for upn in upns:
        scim.user(upn)
    worker = Worker(
        app,
        GraphClient(settings_for(graph_emulator)),
        SyncSettings(sync_domains=("example.com",)),
        ("example.com",),
        pacer=Pacer(1000),  # no pacing: every write goes at once and meets the 429s
        policy=Policy(max_attempts=3, base_seconds=0.05, cap_seconds=0.5),
        rng=random.Random(1),
    )
    assert worker.drain(timeout=60)
    assert worker.counters.graph_errors.get("Throttled", 0) > 0
    _assert_tenant_matches_directory(app, graph_emulator, upns)


def test_workers_killed_mid_batch_lose_nothing_and_duplicate_nothing(
    scim: ScimClient, app: Flask, graph_emulator: RunningEmulator, database_url: str
) -> None:
    # A group already in M365 that half the new users join: their creates and adds share
    # $batches (dependsOn), and a kill between the two must lose no membership.
    group = scim.group("Crashers")
    in_process = Worker(
        app,
        GraphClient(settings_for(graph_emulator)),
        SyncSettings(sync_domains=("example.com",)),
        ("example.com",),
    )
    assert in_process.drain(timeout=30)
    upns = {f"crash{i:03}@example.com" for i in range(100)}
    ids = {upn: scim.user(upn, title="before")["id"] for upn in sorted(upns)}
    joiners = sorted(upns)[::2]
    for start in range(0, len(joiners), 10):
        members = [{"value": ids[upn]} for upn in joiners[start : start + 10]]
        scim.patch(
            f"/Groups/{group['id']}",
            {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": members}],
            },
        )
    # Paced slowly enough (about 8 s of writes) that the workers die mid-way, again and again.
    env = _worker_env(database_url, graph_emulator, M365_WRITE_RATE="25")
    rng = random.Random(5)
    deadline = time.monotonic() + 90
    kills = 0
    while _pending(app) and time.monotonic() < deadline:
        worker = _start_worker(env)
        time.sleep(rng.uniform(0.8, 1.6))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
        if kills == 3:  # changes keep arriving between the crashes
            for upn in sorted(upns)[:10]:
                user = scim.get(f'/Users?filter=userName eq "{upn}"').get_json()["Resources"][0]
                scim.patch(
                    f"/Users/{user['id']}",
                    {
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "path": "title", "value": "after"}],
                    },
                )
        if kills >= 6:
            break
    # Then one worker runs to the end (the killed ones' leases expire after 5 s).
    worker = _start_worker(env)
    try:
        while _pending(app) and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    assert kills >= 2
    assert _pending(app) == 0
    _assert_tenant_matches_directory(app, graph_emulator, upns)
    titles = {
        o["props"]["userPrincipalName"]: o["props"].get("jobTitle")
        for o in graph_emulator.state()["objects"]
        if o["kind"] == "user"
    }
    assert all(titles[u] == "after" for u in sorted(upns)[:10])
    assert all(titles[u] == "before" for u in sorted(upns)[10:])
    objects = graph_emulator.state()["objects"]
    by_id = {o["id"]: o["props"]["userPrincipalName"] for o in objects if o["kind"] == "user"}
    crashers = [o for o in objects if o["kind"] == "group"]
    assert len(crashers) == 1
    assert sorted(by_id[m] for m in crashers[0]["members"]) == joiners


def test_two_worker_processes_on_postgresql(
    scim: ScimClient, app: Flask, graph_emulator: RunningEmulator, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several workers need PostgreSQL (FOR UPDATE SKIP LOCKED); this run is SQLite")
    upns = {f"pair{i:03}@example.com" for i in range(80)}
    ids: list[str] = [scim.user(upn)["id"] for upn in sorted(upns)]
    group = scim.group("Pair", members=ids)
    env = _worker_env(database_url, graph_emulator)
    workers = [_start_worker(env) for _ in range(2)]
    deadline = time.monotonic() + 90
    try:
        while _pending(app) and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(0.5)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(20)
    assert _pending(app) == 0
    objects: list[dict[str, Any]] = graph_emulator.state()["objects"]
    users = {o["id"]: o for o in objects if o["kind"] == "user"}
    groups = [o for o in objects if o["kind"] == "group" and o["props"]["displayName"] == "Pair"]
    assert len(groups) == 1
    members = {users[m]["props"]["userPrincipalName"] for m in groups[0]["members"]}
    assert members == upns
    with app.app_context():
        linked = db.session.scalar(select(func.count()).where(M365Link.resource_id == group["id"]))
        db.session.remove()
    assert linked == 1
