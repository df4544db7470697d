#!/usr/bin/env python3
"""Throughput of `scim-server serve` beside the reference peer scim2-server, measured with wrk.

wrk (a C load generator, `apt-get install wrk`) costs little CPU per request, so on a small
machine shared with the server the figures are the server's. One run starts each server on
an empty directory of its own, seeds it, runs every scenario for --duration seconds on
--connections keep-alive connections (the peer closes each one after its response: HTTP/1.0),
reads the server's CPU (all its processes, from /proc) before and after each scenario, stops
it, and prints one table with the ratios and the targets::

    .venv/bin/python benchmarks/wrk_load.py [--no-sync] [--no-access-log] [--duration 5]
        [--connections 4] [--scenarios create,get,filter,patch,page100] [--no-peer]
        [--baseline DIR] [--rounds N]

--baseline DIR also measures another checkout of the project (its own DIR/.venv, made with
`make -C DIR .venv/bin/scim-server`) in the same run and configuration, and prints the change
per scenario: a refactor's cost, side by side. --rounds N runs this tree and the baseline N
times in turn and reports the median of each: single runs move by a fifth (README, "keep-alive
connections stay with one worker"), so one run cannot show a 10% change.

By default `serve` runs as `make run` starts it: sync worker on (sandbox tenant), access log
on (to a file). The peer is installed on first use in --peer-venv (default .venv-bench-peer).
Like scim_load.py it creates users and never deletes them; each server gets a fresh
temporary database, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scim_load import (  # noqa: E402  (a sibling script, not a package)
    Client,
    Names,
    Pool,
    ProcStat,
    create_user_op,
    proc_stats,
    process_tree,
    process_tree_cpu,
    run_parallel,
)

SCENARIOS = ("create", "get", "filter", "patch", "page100")
TARGETS = {"create": 3.0, "filter": 3.0, "patch": 3.0, "page100": 10.0}
PEER_VERSION = "0.8.3"


@dataclass
class Result:
    scenario: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float  # the server's CPU per request, all its processes
    # The busiest HTTP worker's share of the HTTP workers' CPU (ours only): about 0.5 when
    # wrk's connections fell evenly on two workers, 1.0 when all landed on one.
    busiest: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else math.nan


@dataclass
class Server:
    label: str
    command: list[str]
    base_url: str
    token: str
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wait_ready(server: Server, timeout: float = 60.0) -> None:
    client = Client(server.base_url, server.token, timeout=5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            sys.exit(f"{server.label} exited with status {server.process.returncode}")
        reply = client.call("GET", "/Users?count=1")
        if reply.status == 200:
            client.close()
            return
        time.sleep(0.2)
    sys.exit(f"{server.label} did not answer within {timeout:.0f} s")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def start_ours(
    args: argparse.Namespace, work: Path, checkout: Path | None = None, label: str = "scim-server"
) -> Server:
    bindir = Path(sys.executable).parent if checkout is None else checkout / ".venv" / "bin"
    scim_server = str(bindir / "scim-server")
    work = Path(tempfile.mkdtemp(prefix="server-", dir=work))  # a fresh database each time
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}"}
    env["SCIM_INSTANCE_PATH"] = str(work / "instance")  # its own keys and sandbox tenant
    subprocess.run([scim_server, "db", "upgrade"], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [scim_server, "token", "create", "wrk-bench"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    command = [scim_server, "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--sandbox"] if args.sync else ["--no-sync"]  # as `make run`
    command += [] if args.access_log else ["--no-access-log"]
    command += shlex.split(args.serve_args)
    out = open(work / "serve.log", "wb")  # noqa: SIM115 (held for the server's lifetime)
    process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(label, command, f"http://127.0.0.1:{port}/scim/v2", token, process)


def peer_python(args: argparse.Namespace) -> Path:
    venv = Path(args.peer_venv)
    python = venv / "bin" / "python"
    if not (venv / "bin" / "scim2-server").exists():
        log(f"installing scim2-server {PEER_VERSION} in {venv} ...")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, f"scim2-server=={PEER_VERSION}"], check=True)
    return python


def start_peer(args: argparse.Namespace, work: Path) -> Server:
    python = peer_python(args)
    port = free_port()
    token = "wrk-bench-peer"
    command = [str(python.parent / "scim2-server"), "--port", str(port), "--bearer-token", token]
    out = open(work / "peer.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    return Server(
        f"scim2-server {PEER_VERSION}", command, f"http://127.0.0.1:{port}/v2", token, process
    )


def seed(server: Server, args: argparse.Namespace, users_file: Path) -> int:
    """Create the pool that get/filter/patch use (and enough users for page100)."""
    client = Client(server.base_url, server.token, timeout=30)
    pool = Pool()
    total = max(args.pool, args.population)
    stats = run_parallel(
        "seed", total, 4, 300, create_user_op(client, Names("wrk-seed"), pool), progress_every=0
    )
    client.close()
    if stats.errors:
        sys.exit(f"seeding {server.label} failed: {stats.errors[0]}")
    users_file.write_text("".join(f"{i} {n}\n" for i, n in pool.users[: args.pool]))
    return total


def run_wrk(
    server: Server, scenario: str, args: argparse.Namespace, users: Path, population: int
) -> Result:
    env = {
        **os.environ,
        "WRK_SCRIPTS": str(HERE / "wrk"),
        "WRK_PREFIX": urlsplit(server.base_url).path,
        "WRK_TOKEN": server.token,
        "WRK_USERS": str(users),
        "WRK_TAG": f"wrk{time.time_ns()}",
        "WRK_POPULATION": str(population),
    }
    url = urlsplit(server.base_url)
    command = [
        "wrk",
        f"-t{min(args.threads, args.connections)}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "wrk" / f"{scenario}.lua"),
        f"{url.scheme}://{url.netloc}",
    ]
    pid = server.process.pid
    stats = proc_stats()
    before, workers_before = process_tree_cpu(pid, stats), http_worker_cpu(pid, stats)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    stats = proc_stats()
    after, workers_after = process_tree_cpu(pid, stats), http_worker_cpu(pid, stats)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"wrk failed on {scenario}:\n{done.stdout}\n{done.stderr}")
    figures: dict[str, Any] = json.loads(lines[-1])
    errors = sum(
        figures[key]
        for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    if server.label.startswith("scim2-server"):
        # The peer closes every connection after its response (HTTP/1.0): wrk counts the
        # close as a read error, though every response was whole. Only statuses count here.
        errors = figures["status_errors"] + figures["timeouts"]
    requests = figures["requests"]
    cpu = (after - before) * 1000 / requests if before is not None and after and requests else 0
    return Result(
        scenario,
        requests,
        errors,
        figures["duration_us"] / 1e6,
        figures["p50_us"] / 1000,
        figures["p99_us"] / 1000,
        cpu,
        busiest_share(workers_before, workers_after),
    )


def http_worker_cpu(pid: int, stats: dict[int, ProcStat]) -> dict[int, float]:
    """CPU seconds so far of each HTTP worker under `pid`: the granian processes whose
    parent is granian too (its workers). Empty for a server that has none (the peer)."""
    tree = process_tree(pid, stats)
    commands: dict[int, str] = {}
    for p in tree:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as cmdline:
                commands[p] = cmdline.read().decode(errors="replace")
        except OSError:
            commands[p] = ""
    clock = os.sysconf("SC_CLK_TCK")
    return {
        p: stats[p].own / clock
        for p in tree
        if "granian" in commands[p] and "granian" in commands.get(stats[p].ppid, "")
    }


def busiest_share(before: dict[int, float], after: dict[int, float]) -> float | None:
    used = [after[p] - before.get(p, 0.0) for p in after]
    total = sum(used)
    return max(used) / total if len(used) > 1 and total > 0 else None


def measure(server: Server, args: argparse.Namespace, work: Path) -> list[Result]:
    try:
        wait_ready(server)
        users = work / f"users-{server.process.pid}.txt"
        log(f"{server.label}: seeding {max(args.pool, args.population)} users ...")
        population = seed(server, args, users)
        results = []
        for scenario in args.scenarios:
            log(f"{server.label}: {scenario} for {args.duration} s ...")
            results.append(run_wrk(server, scenario, args, users, population))
        return results
    finally:
        stop(server)


def print_table(ours: list[Result], peer: list[Result] | None) -> None:
    header = (
        "| scenario | scim-server req/s | p50 / p99 ms | CPU ms/req | busiest worker | errors |"
    )
    rule = "|---|---:|---:|---:|---:|---:|"
    if peer:
        header += " scim2-server req/s | p50 / p99 ms | CPU ms/req | errors | ratio | target |"
        rule += "---:|---:|---:|---:|---:|---:|"
    print(header)
    print(rule)
    theirs = {r.scenario: r for r in peer or []}
    for r in ours:
        row = (
            f"| {r.scenario} | {r.rps:.1f} | {r.p50_ms:.1f} / {r.p99_ms:.1f} | {r.cpu_ms:.2f} "
            f"| {_share(r)} | {r.errors} |"
        )
        other = theirs.get(r.scenario)
        if other is not None:
            ratio = r.rps / other.rps if other.rps else math.nan
            target = TARGETS.get(r.scenario)
            verdict = (
                "—"
                if target is None
                else f"{target:g}x — {'met' if ratio >= target else 'NOT met'}"
            )
            row += (
                f" {other.rps:.1f} | {other.p50_ms:.1f} / {other.p99_ms:.1f} | "
                f"{other.cpu_ms:.2f} | {other.errors} | {ratio:.2f}x | {verdict} |"
            )
        print(row)


def median_results(runs: list[list[Result]]) -> list[Result]:
    """Per scenario, the run with the median requests/s (its other figures with it)."""
    out = []
    for results in zip(*runs, strict=True):
        ranked = sorted(results, key=lambda r: r.rps)
        out.append(ranked[len(ranked) // 2])
    return out


def checkout_version(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    )
    return done.stdout.strip()[:80] or "not a git checkout"


def _share(r: Result) -> str:
    return f"{r.busiest * 100:.0f}%" if r.busiest is not None else "—"


def _run_figure(r: Result) -> str:
    """A run's req/s, with the busiest HTTP worker's share of their CPU: 1230@52%."""
    return f"{r.rps:.0f}" + (f"@{_share(r)}" if r.busiest is not None else "")


def print_change(runs: list[list[Result]], base_runs: list[list[Result]]) -> None:
    """This tree against the baseline, per scenario: the medians, the change, every run."""
    print(
        "| scenario | this tree req/s | CPU ms/req | baseline req/s | CPU ms/req | change |"
        " runs (this tree / baseline): req/s@busiest HTTP worker's CPU share |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    medians = zip(median_results(runs), median_results(base_runs), strict=True)
    for k, (ours, base) in enumerate(medians):
        change = (ours.rps / base.rps - 1) * 100 if base.rps else math.nan
        each = " ".join(_run_figure(run[k]) for run in runs)
        each_base = " ".join(_run_figure(run[k]) for run in base_runs)
        print(
            f"| {ours.scenario} | {ours.rps:.1f} | {ours.cpu_ms:.2f} | {base.rps:.1f} "
            f"| {base.cpu_ms:.2f} | {change:+.1f}% | {each} / {each_base} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sync", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--serve-args", default="", help="more `serve` options, e.g. --workers 3")
    parser.add_argument("--duration", type=int, default=5, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--pool", type=int, default=500, help="users for get/filter/patch")
    parser.add_argument("--population", type=int, default=1000, help="users for page100")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--peer-venv", default=".venv-bench-peer")
    parser.add_argument("--json", action="store_true", help="also one JSON line at the end")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure beside")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each, medians reported")
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")

    runs: list[list[Result]] = []
    base_runs: list[list[Result]] = []
    with tempfile.TemporaryDirectory(prefix="wrk-load-") as tmp:
        work = Path(tmp)
        for _ in range(args.rounds):
            ours_server = start_ours(args, work)
            runs.append(measure(ours_server, args, work))
            if args.baseline is not None:
                base_server = start_ours(args, work, args.baseline.resolve(), "baseline")
                base_runs.append(measure(base_server, args, work))
        ours = median_results(runs)
        peer: list[Result] | None = None
        peer_server = None
        if args.peer:
            peer_server = start_peer(args, work)
            peer = measure(peer_server, args, work)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"# {started}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"# python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"# scim-server: {shlex.join(ours_server.command[1:])}")
    mode = "sync worker ON (sandbox tenant), as `make run`" if args.sync else "--no-sync"
    print(f"#   {mode}; access log {'on (to a file)' if args.access_log else 'off'}")
    if peer_server is not None:
        print(f"# peer: scim2-server {PEER_VERSION} (in memory), {peer_server.base_url}")
    print(
        f"# wrk: {args.connections} keep-alive connections, {args.threads} threads, "
        f"{args.duration} s per scenario"
    )
    if args.rounds > 1:
        print(f"# figures: the median of {args.rounds} runs of each server, taken in turn")
    print_table(ours, peer)
    if base_runs:
        print()
        print(f"# baseline: {args.baseline.resolve()} ({checkout_version(args.baseline)})")
        print_change(runs, base_runs)
    if args.json:
        print(
            json.dumps(
                {
                    "sync": args.sync,
                    "ours": [r.__dict__ | {"rps": r.rps} for r in ours],
                    "peer": [r.__dict__ | {"rps": r.rps} for r in peer or []],
                }
            )
        )
    failed = any(r.errors for r in ours + (peer or []))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
