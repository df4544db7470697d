#!/usr/bin/env python3
"""What one write costs the sandbox tenant (the Graph emulator with a state file, as
`serve --sandbox` runs it in the sync worker), by the size of the tenant.

Each write is a change to one user and the save of the state file that follows it, as the
emulator does after every write request. For each size the tenant is made on a fresh file,
then a number of users are updated one at a time; the figures are the median time of one
update and its save, with the process's CPU time per write beside it, and the median time of
a lookup by UPN (`GET /users?$filter=userPrincipalName eq '…'`, which the sync sends before
every create), through the emulator's request dispatch::

    .venv/bin/python benchmarks/sandbox_writes.py [--sizes 100,1000,5000] [--writes 200]
        [--baseline DIR]

--baseline DIR runs the same measurement with another checkout of the project (its own
DIR/.venv, made with `make -C DIR .venv/bin/scim-server`) and prints its rows below these.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
PASSWORD = "Corr3ct-Horse!"


def child(sizes: list[int], writes: int) -> None:
    """In the checkout that is the working directory: one JSON line of figures per size."""
    sys.path.insert(0, str(Path.cwd()))
    from scim_server.graph.emulator.graph_api import GraphRequest, dispatch
    from scim_server.graph.emulator.state import Emulator, EmulatorOptions

    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="sandbox-writes-") as work:
            path = Path(work) / "tenant.sqlite3"
            em = Emulator(EmulatorOptions(state_file=path))
            ids = [
                em.tenant.create_user(
                    {
                        "accountEnabled": True,
                        "displayName": f"User {i}",
                        "mailNickname": f"user{i}",
                        "userPrincipalName": f"user{i}@example.com",
                        "passwordProfile": {
                            "password": PASSWORD,
                            "forceChangePasswordNextSignIn": False,
                        },
                    }
                ).id
                for i in range(size)
            ]
            em.persist()
            times = []
            cpu_start = time.process_time()
            for i in range(writes):
                started = time.perf_counter()
                with em.lock:
                    em.tenant.update_user(ids[i * 7919 % size], {"jobTitle": f"Job {i}"})
                    em.persist()
                times.append(time.perf_counter() - started)
            cpu = time.process_time() - cpu_start
            lookups = []
            for i in range(writes):
                upn = f"user{i * 7919 % size}@example.com"
                request = GraphRequest(
                    "GET",
                    "/users",
                    {"$select": "id", "$filter": f"userPrincipalName eq '{upn}'"},
                    {},
                    None,
                    "benchmark",
                )
                started = time.perf_counter()
                response = dispatch(em, request)
                lookups.append(time.perf_counter() - started)
                if response.status != 200 or len(response.body["value"]) != 1:
                    raise SystemExit(f"lookup of {upn}: {response.status} {response.body}")
            close = getattr(em, "close", None)
            if close is not None:  # checkouts before the incremental store had none
                close()
            print(
                json.dumps(
                    {
                        "size": size,
                        "median_ms": statistics.median(times) * 1000,
                        "cpu_ms": cpu * 1000 / writes,
                        "lookup_ms": statistics.median(lookups) * 1000,
                    }
                ),
                flush=True,
            )


def measure(checkout: Path, sizes: list[int], writes: int) -> dict[int, dict[str, Any]]:
    python = checkout / ".venv" / "bin" / "python"
    done = subprocess.run(
        [
            str(python),
            str(HERE),
            "--child",
            "--sizes",
            ",".join(map(str, sizes)),
            "--writes",
            str(writes),
        ],
        cwd=checkout,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {done.stderr[-2000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {row["size"]: row for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000", help="users in the tenant")
    parser.add_argument("--writes", type=int, default=200, help="updates measured per size")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured alike")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.child:
        child(sizes, args.writes)
        return
    here = measure(HERE.parent.parent, sizes, args.writes)
    print(f"# python benchmarks/sandbox_writes.py --sizes {args.sizes} --writes {args.writes}")
    runs = [("this tree", here)]
    if args.baseline is not None:
        runs.append(
            (f"baseline {args.baseline}", measure(args.baseline.resolve(), sizes, args.writes))
        )
    print("| tree | users | ms per write (median) | CPU ms per write | lookup by UPN ms |")
    print("|---|---:|---:|---:|---:|")
    for label, figures in runs:
        for size in sizes:
            r = figures[size]
            print(
                f"| {label} | {size} | {r['median_ms']:.2f} | {r['cpu_ms']:.2f} "
                f"| {r['lookup_ms']:.3f} |"
            )


if __name__ == "__main__":
    main()
