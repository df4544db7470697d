"""How `scim-server serve` runs the HTTP server: granian (Rust I/O, the WSGI interface), in
worker processes of its own, through its documented command line.

Why granian: its I/O runs in Rust, so a connection that is idle, or sends its headers or its
body slowly, costs a socket and no Python thread; a request reaches a Python thread only once
its headers are in. The body is read by the application's thread (WSGI), so each worker
keeps granian's large pool of blocking threads (started on demand): a slow body holds one
thread while the others go on serving. Of those threads, only `--threads` (default 1) run the
application at once, each once its body is in (scim_server.gate).
"""

from __future__ import annotations

import os
import sys

from flask import Flask

from scim_server.gate import RequestGate
from scim_server.httplimits import SERVER_BUFFER_BYTES

# `serve --no-access-log` tells its HTTP workers through their environment.
ACCESS_LOG_ENV = "SCIM_SERVE_ACCESS_LOG"
# `serve --threads N`: requests each HTTP worker runs at once (scim_server.gate).
THREADS_ENV = "SCIM_SERVE_THREADS"
# How long granian waits for a worker to finish its requests when stopping (seconds).
WORKER_STOP_SECONDS = 10


def app_factory() -> Flask:
    """The application of one HTTP worker process (granian calls it: `--factory`)."""
    from scim_server import create_app

    app = create_app({"SCIM_ACCESS_LOG": os.environ.get(ACCESS_LOG_ENV, "1") != "0"})
    slots = int(os.environ.get(THREADS_ENV) or 1)
    # One request at a time in Python (by default), each once its body is in: see gate.py.
    app.wsgi_app = RequestGate(  # type: ignore[method-assign]
        app.wsgi_app, app.config["MAX_CONTENT_LENGTH"], slots
    )
    return app


def http_server_command(host: str, port: int, workers: int) -> list[str]:
    """granian's command line for `serve`."""
    command = [sys.executable, "-m", "granian", "--interface", "wsgi", "--factory"]
    command += ["--host", host, "--port", str(port), "--workers", str(max(workers, 1))]
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
