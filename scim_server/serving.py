"""How `scim-server serve` runs the HTTP server: granian (Rust I/O, the WSGI interface), in
worker processes of its own, through its documented command line.

Why granian: its I/O runs in Rust, so a connection that is idle, or sends its headers or its
body slowly, costs a socket and no Python thread; a request reaches a Python thread only once
its headers are in. The body is read by the application's thread (WSGI), so each worker
keeps granian's large pool of blocking threads (started on demand): a slow body, or a write
waiting on SQLite's write lock, holds one thread while the others go on serving.
"""

from __future__ import annotations

import os
import sys

from flask import Flask

from scim_server.httplimits import SERVER_BUFFER_BYTES

# `serve --no-access-log` tells its HTTP workers through their environment.
ACCESS_LOG_ENV = "SCIM_SERVE_ACCESS_LOG"
# How long granian waits for a worker to finish its requests when stopping (seconds).
WORKER_STOP_SECONDS = 10


def app_factory() -> Flask:
    """The application of one HTTP worker process (granian calls it: `--factory`)."""
    from scim_server import create_app

    return create_app({"SCIM_ACCESS_LOG": os.environ.get(ACCESS_LOG_ENV, "1") != "0"})


def http_server_command(host: str, port: int, workers: int, threads: int | None) -> list[str]:
    """granian's command line for `serve`."""
    command = [sys.executable, "-m", "granian", "--interface", "wsgi", "--factory"]
    command += ["--host", host, "--port", str(port), "--workers", str(max(workers, 1))]
    if threads is not None:
        command += ["--blocking-threads", str(max(threads, 1))]
    command += [
        "--http",
        "1",
        "--no-ws",
        # The application writes the access log (scim_server.accesslog), not the server.
        "--no-access-log",
        "--log-level",
        "warning",
        # Our own limits (scim_server.httplimits) are lower, and answered in SCIM JSON.
        "--http1-buffer-size",
        str(SERVER_BUFFER_BYTES),
        # A worker that dies is replaced by granian; `serve` watches granian itself.
        "--respawn-failed-workers",
        "--workers-kill-timeout",
        str(WORKER_STOP_SECONDS),
        "scim_server.serving:app_factory",
    ]
    return command
