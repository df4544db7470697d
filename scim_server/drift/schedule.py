"""Drift rounds in the background of a sync worker process: a thread that asks every
minute (or every interval, when shorter) whether a round is due, and runs it if this worker
wins the lease. Nothing runs at start: a new target's first round is due an interval after a
worker first asks (drift.state.ensure), so starting or restarting workers costs no reads."""

from __future__ import annotations

import logging
import threading

from scim_server.drift.rounds import Drift, Stopped

log = logging.getLogger("scim_server.drift")

CHECK_SECONDS = 60.0


class Scheduler:
    def __init__(self, drift: Drift, check_seconds: float | None = None) -> None:
        self.drift = drift
        self.check_seconds = check_seconds or min(CHECK_SECONDS, drift.interval)
        self.thread: threading.Thread | None = None

    def start(self, stop: threading.Event) -> None:
        self.drift.stop = stop
        self.thread = threading.Thread(
            target=self._run, args=(stop,), name="sync-drift", daemon=True
        )
        self.thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.check_seconds):
            try:
                self.drift.run_if_due()
            except Stopped:
                return
            except Exception:  # a worker outlives a failed round; the next is due later
                log.exception("drift round of %s failed", self.drift.target)

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
