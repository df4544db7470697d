#!/usr/bin/env python3
"""What one write costs the sandbox tenant (the Graph emulator with a state file, as
`serve --sandbox` runs it in the sync worker), by the size of the tenant.

Each write is a change to one user and the save of the state file that follows it, as the
emulator does after every write request. For each size the tenant is made on a fresh file,
then a number of users are updated one at a time; the figure is the median time of one
update and its save, with the process's CPU time per write beside it::

    .venv/bin/python benchmarks/sandbox_writes.py [--sizes 100,1000,5000] [--writes 200]
        [--baseline DIR]

--baseline DIR runs the same measurement with another checkout of the project (its own
DIR/.venv, made with `make -C DIR .venv/bin/scim-server`) and prints both side by side.
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
            close = getattr(em, "close", None)
            if close is not None:  # checkouts before the incremental store had none
                close()
            print(
                json.dumps(
                    {
                        "size": size,
                        "median_ms": statistics.median(times) * 1000,
                        "cpu_ms": cpu * 1000 / writes,
                        "file_kib": sum(p.stat().st_size for p in Path(work).iterdir()) / 1024,
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
    if args.baseline is None:
        print("| users | ms per write (median) | CPU ms per write | file KiB |")
        print("|---:|---:|---:|---:|")
        for size in sizes:
            r = here[size]
            print(f"| {size} | {r['median_ms']:.2f} | {r['cpu_ms']:.2f} | {r['file_kib']:.0f} |")
        return
    then = measure(args.baseline.resolve(), sizes, args.writes)
    print(f"# baseline: {args.baseline}")
    print("| users | ms per write | CPU ms per write | baseline ms per write | CPU ms per write |")
    print("|---:|---:|---:|---:|---:|")
    for size in sizes:
        r, b = here[size], then[size]
        print(
            f"| {size} | {r['median_ms']:.2f} | {r['cpu_ms']:.2f} "
            f"| {b['median_ms']:.2f} | {b['cpu_ms']:.2f} |"
        )


if __name__ == "__main__":
    main()
