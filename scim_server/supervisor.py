"""`scim-server serve` as a supervisor: it starts the HTTP server (granian, with worker
processes of its own) and the sync worker (`scim-server worker`) as child processes and
watches both.

- The sync worker exits or is killed: logged at ERROR with its exit status or signal, and a
  new one is started after a backoff (`RestartPolicy`: 1 s, doubling to 30 s, back to 1 s
  once a worker has stayed up for a minute). When it cannot stay up (5 exits within a
  minute), `serve` stops the HTTP server and exits non-zero: answering while nothing syncs
  would hide the failure.
- The HTTP server exits: `serve` stops the sync worker and exits non-zero.
- SIGTERM or SIGINT: both children get SIGTERM, finish what they are doing (granian answers
  the requests in flight, the worker ends its batch and releases its leases), and whatever is
  still running after `STOP_SECONDS` is killed.

The policy (`Backoff`) is pure: it sees only the times a worker started and exited.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("scim_server.serve")

STOP_SECONDS = 13.0  # after SIGTERM, before SIGKILL: all is gone within 15 s
POLL_SECONDS = 0.2


# ---------------------------------------------------------------- the policy (pure)


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 1.0
    max_delay: float = 30.0
    stable_after: float = 60.0  # a worker up this long starts the backoff over
    max_exits: int = 5  # this many exits ...
    window: float = 60.0  # ... within this many seconds: give up


@dataclass(frozen=True)
class Restart:
    delay: float


@dataclass(frozen=True)
class GiveUp:
    exits: int
    window: float


class Backoff:
    """What to do when the supervised process exits: restart it after a delay, or give up."""

    def __init__(self, policy: RestartPolicy | None = None) -> None:
        self.policy = policy or RestartPolicy()
        self._exits: deque[float] = deque()
        self._delay = 0.0

    def exited(self, started_at: float, now: float) -> Restart | GiveUp:
        policy = self.policy
        if now - started_at >= policy.stable_after:
            self._delay = 0.0
        self._exits.append(now)
        while now - self._exits[0] > policy.window:
            self._exits.popleft()
        if len(self._exits) >= policy.max_exits:
            return GiveUp(len(self._exits), policy.window)
        self._delay = min(self._delay * 2, policy.max_delay) if self._delay else policy.first_delay
        return Restart(self._delay)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


# ---------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when `serve` dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One supervised command, in a process group of its own (a stop reaches granian's worker
    processes too, and the terminal's Ctrl-C reaches only `serve`)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self, now: float) -> None:
        self.process = subprocess.Popen(
            self.command, env=self.env, process_group=0, preexec_fn=_die_with_parent
        )
        self.started_at = now

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def poll(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        if self.running():
            self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the whole group: granian's workers must not outlive their parent."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)

    def wait(self, timeout: float) -> bool:
        if self.process is None:
            return True
        try:
            self.process.wait(max(timeout, 0))
        except subprocess.TimeoutExpired:
            return False
        return True

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)


class Supervisor:
    def __init__(
        self,
        http: Child,
        worker: Child | None,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.worker = worker
        self.backoff = Backoff(policy)
        self.clock = clock
        self._stop = threading.Event()
        self._signal: str | None = None

    def run(self) -> int:
        """Start both children and watch them; returns serve's exit status."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            self.http.start(self.clock())
            log.info("%s started (pid %d)", self.http.name, self.http.pid)
            if self.worker is not None:
                self._start_worker()
            status = self._watch()
        finally:
            self._stop_children()
        return status

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signal = signal.Signals(signum).name
        self._stop.set()

    def _start_worker(self) -> None:
        assert self.worker is not None
        self.worker.start(self.clock())
        log.info("%s started (pid %d)", self.worker.name, self.worker.pid)

    def _watch(self) -> int:
        restart_at: float | None = None
        while not self._stop.wait(POLL_SECONDS):
            code = self.http.poll()
            if code is not None:
                log.error(
                    "%s (pid %d) %s: stopping serve",
                    self.http.name,
                    self.http.pid,
                    describe_exit(code),
                )
                return 1
            worker = self.worker
            if worker is None:
                continue
            now = self.clock()
            if restart_at is not None:
                if now >= restart_at:
                    restart_at = None
                    self._start_worker()
                continue
            code = worker.poll()
            if code is None:
                continue
            decision = self.backoff.exited(worker.started_at, now)
            if isinstance(decision, GiveUp):
                log.error(
                    "%s (pid %d) %s (%d exits within %.0f s): stopping serve, "
                    "since nothing would deliver the directory's changes",
                    worker.name,
                    worker.pid,
                    describe_exit(code),
                    decision.exits,
                    decision.window,
                )
                return 1
            log.error(
                "%s (pid %d) %s; starting a new one in %.0f s",
                worker.name,
                worker.pid,
                describe_exit(code),
                decision.delay,
            )
            restart_at = now + decision.delay
        log.info("%s received: stopping", self._signal or "a signal")
        return 0

    def _stop_children(self) -> None:
        children = [c for c in (self.http, self.worker) if c is not None and c.process is not None]
        for child in children:
            child.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for child in children:
            if not child.wait(deadline - time.monotonic()):
                log.error(
                    "%s (pid %d) still running %.0f s after SIGTERM: killed",
                    child.name,
                    child.pid,
                    STOP_SECONDS,
                )
            # Also when it exited: what it left in its group (granian's workers) goes too.
            child.kill()
            child.wait(2)
