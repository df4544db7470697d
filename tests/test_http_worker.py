"""`scim-server serve`'s gunicorn worker (scim_server.http_worker): requests served on the
thread that reads them, over kept-alive and pipelined connections."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[int]:
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'worker.sqlite3'}"}
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    command += ["--worker-class", "scim_server.http_worker.InlineWorker", "wsgi:app"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


def _read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """`count` responses (status line and headers, then Content-Length bytes of body)."""
    data = b""
    responses: list[bytes] = []
    while len(responses) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(rest) >= length:
                responses.append(head)
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(responses)} responses"
        data += chunk
    return responses


def test_kept_alive_and_pipelined_requests_are_all_answered(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        # Three requests in one write: the worker serves them in turn, without recursing.
        sock.sendall(_request("/scim/v2/Users") * 3)
        first = _read_responses(sock, 3)
        # The same connection stays open for the next request.
        sock.sendall(_request("/scim/v2/Groups"))
        second = _read_responses(sock, 1)
    for head in first + second:
        assert head.startswith(b"HTTP/1.1 401"), head  # no token: but answered, in order
        assert b"connection: keep-alive" in head.lower()
