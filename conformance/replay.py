#!/usr/bin/env python3
# Replays each SCIM client's documented request sequence against a server and prints one line
# per step and, last, "N passed, M failed". The sources of each replay are listed at the top of
# conformance/replay_<client>.py. Standard library only.
"""Usage: python conformance/replay.py --base-url URL --token TOKEN [--client NAME|all]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conformance.runner import http_transport, replays, run_replay


def main(argv: list[str] | None = None) -> int:
    available = replays()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8080/scim/v2")
    parser.add_argument("--token", required=True, help="bearer token")
    parser.add_argument("--client", default="all", choices=[*available, "all"])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = parser.parse_args(argv)
    chosen = list(available) if args.client == "all" else [args.client]
    send = http_transport(args.base_url, args.timeout)
    passed = failed = 0
    for name in chosen:
        outcome = run_replay(available[name], send, args.token, args.base_url)
        for line in outcome.lines:
            print(line)
        if len(chosen) > 1:
            print(f"# {name}: {outcome.passed} passed, {outcome.failed} failed")
        passed += outcome.passed
        failed += outcome.failed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
