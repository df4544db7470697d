#!/usr/bin/env python3
"""CPU instructions per request of the WSGI app, counted by valgrind's callgrind.

A refactor's cost in CPU, measured so that a busy or throttled machine does not move it:
callgrind counts instructions, not seconds, so the same code gives the same count (within a
fraction of a percent) whatever else the machine is doing. Wall-clock figures here moved by
a fifth from run to run, which hides a 10% change; these do not.

Each scenario runs `wsgi:app` in-process, called directly as a WSGI server would call it (no
HTTP server, no sync worker, no access log file: the request's own Python work), on a fresh
SQLite directory. The count for N requests minus the count for none, over N, is the cost of
one request::

    .venv/bin/python benchmarks/request_instructions.py [--requests 300]
        [--scenarios get,filter,patch,create,page100] [--baseline DIR]

--baseline DIR counts another checkout of the project too (its own DIR/.venv, made with
`make -C DIR .venv/bin/scim-server`) and prints the change per scenario. Needs valgrind
(`apt-get install valgrind`); each run spends about a minute starting Python under it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SCENARIOS = ("get", "filter", "patch", "create", "page100")
USERS = 100  # page100 reads them all
CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]


def child(scenario: str, count: int) -> None:
    """In the checkout that is the working directory: seed, warm up, then run the scenario
    `count` times (0: seed and warm up only)."""
    work = Path(tempfile.mkdtemp(prefix="instructions-"))
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{work / 'bench.sqlite3'}",
        "SCIM_INSTANCE_PATH": str(work / "instance"),
    }
    cli = str(Path(sys.executable).parent / "scim-server")
    subprocess.run([cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    token = (
        subprocess.run(
            [cli, "token", "create", "instructions"], env=env, check=True, capture_output=True
        )
        .stdout.decode()
        .strip()
    )
    os.environ.update(env)
    sys.path.insert(0, os.getcwd())
    import logging

    from wsgi import app  # the checkout's own app

    logging.disable(logging.CRITICAL)

    def call(method: str, path: str, body: Any = None, query: str = "") -> bytes:
        data = json.dumps(body).encode() if body is not None else b""
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Bearer {token}",
            "CONTENT_TYPE": "application/scim+json",
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(data),
            "wsgi.errors": sys.stderr,
        }
        status: list[str] = []
        body_out = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
        if not status or status[0][0] not in "2":
            raise SystemExit(f"{method} {path}: {status} {body_out[:300]!r}")
        return body_out

    made = [0]

    def create(_: int) -> None:
        made[0] += 1
        name = f"user{made[0]}@example.com"
        user = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": name,
            "name": {"givenName": "Given", "familyName": "Family"},
            "emails": [{"value": name, "type": "work", "primary": True}],
            "active": True,
        }
        ids.append(json.loads(call("POST", "/scim/v2/Users", user))["id"])

    ids: list[str] = []
    for i in range(USERS):
        create(i)
    patch = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
    runs = {
        "get": lambda i: call("GET", f"/scim/v2/Users/{ids[i % USERS]}"),
        "filter": lambda i: call(
            "GET",
            "/scim/v2/Users",
            query=f"filter=userName+eq+%22user{i % USERS + 1}%40example.com%22",
        ),
        "patch": lambda i: call(
            "PATCH",
            f"/scim/v2/Users/{ids[i % USERS]}",
            {
                "schemas": [patch],
                "Operations": [{"op": "replace", "path": "displayName", "value": f"n{i}"}],
            },
        ),
        "create": create,
        "page100": lambda i: call("GET", "/scim/v2/Users", query="startIndex=1&count=100"),
    }
    # Statement caches, lazy imports: every scenario warms up in every run, so that the run of
    # none differs from the others only by the requests counted.
    for warm in runs.values():
        for i in range(30):
            warm(i)
    for i in range(count):
        runs[scenario](i)


def instructions(checkout: Path, scenario: str, count: int) -> int:
    python = checkout / ".venv" / "bin" / "python"
    done = subprocess.run(
        [*CALLGRIND, str(python), str(HERE), "--child", scenario, str(count)],
        cwd=checkout,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{checkout} {scenario}: {done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(checkout: Path, scenarios: list[str], count: int) -> dict[str, float]:
    """Instructions per request of each scenario: (a run of `count` - a run of none) / count.
    The runs go two at a time (valgrind runs one thread of the CPU)."""
    jobs = [("get", 0)] + [(s, count) for s in scenarios]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counted = list(pool.map(lambda job: instructions(checkout, *job), jobs))
    none = counted[0]
    return {s: (c - none) / count for s, c in zip(scenarios, counted[1:], strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    here = per_request(HERE.parent.parent, scenarios, args.requests)
    print(f"# python benchmarks/request_instructions.py {' '.join(sys.argv[1:])}")
    print(f"# instructions per request (callgrind), {args.requests} requests a scenario")
    if args.baseline is None:
        print("| scenario | instructions |\n|---|---:|")
        for s in scenarios:
            print(f"| {s} | {here[s] / 1e6:.3f} M |")
        return
    then = per_request(args.baseline.resolve(), scenarios, args.requests)
    print(f"# baseline: {args.baseline}")
    print("| scenario | this tree | baseline | change |\n|---|---:|---:|---:|")
    for s in scenarios:
        change = (here[s] - then[s]) / then[s] * 100
        print(f"| {s} | {here[s] / 1e6:.3f} M | {then[s] / 1e6:.3f} M | {change:+.1f}% |")


if __name__ == "__main__":
    main()
