#!/usr/bin/env python3
"""Drain a backlog of directory changes into the Graph emulator, under Graph's write budget.

The emulator enforces the identity write budget (3,000 writes per 150 s per app), scaled by
--scale so the run takes about a minute; the sync workers pace themselves to it. Printed:
the delivered writes per second as a fraction of the budget, the share of Graph operations
answered 429, and the mean number of operations per HTTP request ($batch carries up to 20).

    python benchmarks/sync_drain.py [--changes 5000] [--scale 4] [--threads 4] [--groups 0]
        [--processes 1] [--database URL]

With --processes N (N > 1), N `scim-server worker` processes drain the backlog instead of
threads of this one, each paced to the whole budget: they share it through the database.
--database URL uses that (throwaway) database instead of a temporary SQLite one; several
processes want PostgreSQL.

With --groups N, N groups reach M365 before the clock starts, and each new user joins one of
them: its create and its member add share a $batch (the add dependsOn the create).

Everything is local: a temporary SQLite directory (or --database) and an emulator on
loopback. The emulator runs in a process of its own, as Graph is a server of its own: in
this one it would share
the interpreter's lock with the workers it is meant to measure.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from scim_server import create_app, directory
from scim_server.db import db
from scim_server.dbschema import upgrade
from scim_server.graph.client import GraphClient, GraphSession, TokenProvider
from scim_server.graph.emulator.control import RequestLog
from scim_server.graph.emulator.server import EmulatorServer
from scim_server.graph.emulator.state import EmulatorOptions
from scim_server.graph.settings import from_startup_line
from scim_server.sync import store
from scim_server.sync.budget import DatabaseBudget, SharedPacer
from scim_server.sync.settings import SyncSettings
from scim_server.sync.worker import Worker

BUDGET, WINDOW = 3000, 150.0  # Graph: writes per app and tenant, per 150 s
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


def _serve(options: EmulatorOptions, log_limit: int, pipe: Any) -> None:
    """The emulator's process: serve until the parent says stop (or goes away)."""
    server = EmulatorServer(options, port=0, use_tls=True)
    server.emulator.log = RequestLog(limit=log_limit)  # every request of the run
    server.start()
    pipe.send(server.info)
    with contextlib.suppress(EOFError):  # the parent went away: stop as well
        pipe.recv()
    server.stop()


def _control(info: dict[str, Any], path: str) -> Any:
    url = f"{info['authority_host']}/_emulator/{path}"
    response = requests.get(url, verify=info.get("ca_bundle") or True, timeout=120)
    response.raise_for_status()
    return response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=5000, help="users created (default 5000)")
    parser.add_argument("--scale", type=float, default=4.0, help="budget speed-up (default 4)")
    parser.add_argument(
        "--threads", type=int, default=4, help="worker threads (default 4, as `scim-server worker`)"
    )
    parser.add_argument(
        "--pace", type=float, default=0.97, help="pacing as a fraction of the budget"
    )
    parser.add_argument(
        "--groups", type=int, default=0, help="groups in M365 the new users join (default 0)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="scim-server worker processes, --threads each (default 1: threads of this one)",
    )
    parser.add_argument(
        "--database", help="a throwaway database URL (default: a temporary SQLite file)"
    )
    args = parser.parse_args()

    window = WINDOW / args.scale
    rate = BUDGET / window  # writes per second the emulator allows
    options = EmulatorOptions(
        domains=["example.com"], write_budget=BUDGET, write_window=window, control=True
    )
    parent, child = multiprocessing.get_context("spawn").Pipe()
    emulator = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(options, 50 * args.changes, child), daemon=True
    )
    emulator.start()
    info = parent.recv()
    settings = from_startup_line(info)
    work = Path(tempfile.mkdtemp(prefix="sync-drain-"))
    database = args.database or f"sqlite:///{work / 'directory.sqlite3'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": database})
    sync = SyncSettings(sync_domains=("example.com",), write_rate=rate * args.pace)
    tokens = TokenProvider(settings, GraphSession(settings.verify, settings.timeout))
    with app.app_context():
        upgrade()
        # As `scim-server worker` paces: the budget of the tenant, shared in the database.
        pacer = SharedPacer(
            DatabaseBudget(db.engine, settings.tenant_id, sync.write_rate), sync.write_rate
        )
        groups = [
            directory.create_group({"displayName": f"g{g}"}, "")[0]["id"]
            for g in range(args.groups)
        ]
    if groups:  # delivered before the clock starts
        assert Worker(app, GraphClient(settings), sync, sync.sync_domains).drain(timeout=120)
        started_log = len(_control(info, "requests")["value"])
    else:
        started_log = 0
    with app.app_context():
        print(f"creating a backlog of {args.changes} new users ...", flush=True)
        for i in range(args.changes):
            user, _ = directory.create_user({"userName": f"user{i:05}@example.com"}, "")
            if groups:
                _join(groups[i % len(groups)], user["id"])
    if args.processes > 1:
        elapsed = _drain_in_processes(app, info, database, sync.write_rate, args)
    else:
        elapsed = _drain_in_threads(app, settings, sync, tokens, pacer, args)

    entries = _control(info, "requests")["value"][started_log:]
    log = [r for r in entries if r["path"].startswith("/v1.0")]
    operations = [r for r in log if r["path"] != "/v1.0/$batch"]
    http_requests = [r for r in log if not r.get("batch_request_id")]
    writes = [r for r in operations if r["method"] in WRITES and r["status"] < 400]
    throttled = [r for r in operations if r["status"] == 429]
    with app.app_context():
        dead = store.backlog().get("dead", 0)
    state = _control(info, "state")
    members = sum(len(o["members"]) for o in state["objects"] if o["kind"] == "group")
    parent.send("stop")
    emulator.join(30)

    delivered = len(writes) / elapsed
    ops, share = len(operations), len(throttled) / max(len(operations), 1)
    per_request = ops / max(len(http_requests), 1)
    scaled = f"{BUDGET} per {window:.1f} s, Graph's x{args.scale:g}"
    print(f"budget           {rate:.1f} writes/s ({scaled})")
    changes = args.changes * (2 if groups else 1)
    print(f"changes          {changes} drained in {elapsed:.1f} s ({dead} dead letters)")
    if args.processes > 1:
        print(f"workers          {args.processes} processes x {args.threads} threads, one budget")
    if groups:
        adds = [r for r in operations if r["path"].endswith("/members/$ref")]
        joint = sum(1 for r in adds if r.get("depends_on"))
        refused = sum(1 for r in log if r["method"] in WRITES and 400 <= r["status"] != 429)
        print(f"memberships      {members} of {args.changes}; {joint} adds dependsOn a create")
        print(f"refused writes   {refused} (a member already there, 424s, lag 404s)")
    fraction = delivered / rate
    print(f"writes           {len(writes)} delivered, {delivered:.1f}/s = {fraction:.2f} of budget")
    if args.processes > 1 and len(writes) > 1:  # without the processes' start-up
        times = sorted(r["time"] for r in writes)
        steady = (len(writes) - 1) / (times[-1] - times[0])
        fraction = steady / rate
        print(f"                 {steady:.1f}/s = {fraction:.2f} from the first write to the last")
    print(f"429 answers      {len(throttled)} of {ops} operations = {share:.2%}")
    print(f"ops per request  {per_request:.2f} ({ops} operations in {len(http_requests)} requests)")


def _drain_in_threads(
    app: Any, settings: Any, sync: SyncSettings, tokens: Any, pacer: Any, args: Any
) -> float:
    """--threads workers in this process, as `scim-server worker` runs them; the seconds
    from their start until nothing is pending."""
    workers = [
        Worker(
            app,
            GraphClient(settings, tokens=tokens),
            sync,
            sync.sync_domains,
            name=f"bench-{i}",
            pacer=pacer,
            rng=random.Random(i),
        )
        for i in range(args.threads)
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop, 0.05)) for w in workers]
    started = time.monotonic()
    for t in threads:
        t.start()
    pending = args.changes
    while pending:
        time.sleep(0.5)
        with app.app_context():
            pending = store.backlog().get("pending", 0)
    elapsed = time.monotonic() - started
    stop.set()
    for t in threads:
        t.join()

    return elapsed


def _drain_in_processes(
    app: Any, info: dict[str, Any], database: str, rate: float, args: Any
) -> float:
    """--processes `scim-server worker` processes, each paced to the whole budget (they
    share it through the database); the seconds from their start until nothing is pending."""
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "GRAPH_TENANT_ID": info["tenant_id"],
        "GRAPH_CLIENT_ID": info["client_id"],
        "GRAPH_CLIENT_SECRET": info["client_secret"],
        "GRAPH_AUTHORITY_HOST": info["authority_host"],
        "GRAPH_URL": info["graph_url"],
        "GRAPH_CA_BUNDLE": info.get("ca_bundle") or "",
        "GRAPH_SANDBOX": "",
        "M365_SYNC_DOMAINS": "example.com",
        "M365_WRITE_RATE": str(rate),
    }
    cli = str(Path(sys.executable).parent / "scim-server")
    command = [cli, "worker", "--concurrency", str(args.threads)]
    started = time.monotonic()
    procs = [subprocess.Popen(command, env=env) for _ in range(args.processes)]
    try:
        pending = args.changes
        while pending:
            time.sleep(0.5)
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a scim-server worker process exited; see its output above")
            with app.app_context():
                pending = store.backlog().get("pending", 0)
        return time.monotonic() - started
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)


def _join(group_id: str, user_id: str) -> None:
    add = {"op": "add", "path": "members", "value": [{"value": user_id}]}
    directory.patch_group(group_id, [add], None, "")


if __name__ == "__main__":
    main()
