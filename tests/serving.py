"""A real `scim-server serve` for the serving and supervision tests: its own SQLite database
and sandbox tenant, a token, its output in a file, and raw-socket helpers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BINDIR = Path(sys.executable).parent
CLI = str(BINDIR / "scim-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    """The pids of `pid`'s descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [c for c, p in parents.items() if p == parent and c not in found]
        found.update(children)
        frontier.extend(children)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(sock: socket.socket, buffered: bytearray | None = None) -> Response:
    """One response (status line, headers, Content-Length bytes of body) from `sock`;
    bytes read beyond it stay in `buffered` for the next call."""
    data = buffered if buffered is not None else bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {bytes(data)[:200]!r}")
        data += chunk
    head, _, _ = bytes(data).partition(b"\r\n\r\n")
    del data[: len(head) + 4]
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(data) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        data += chunk
    body = bytes(data[:length])
    del data[:length]
    return Response(int(lines[0].split()[1]), headers, body)


@dataclass
class RunningServe:
    port: int
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def connect(self, timeout: float = 10) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def request_bytes(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> bytes:
        data = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines.append(f"Authorization: Bearer {self.token}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body is not None:
            lines += ["Content-Type: application/scim+json", f"Content-Length: {len(data)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + data

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        with self.connect() as sock:
            sock.sendall(self.request_bytes(method, path, body, headers))
            return read_response(sock)

    def worker_pid(self) -> int | None:
        """The pid of the sync worker child, if one runs now."""
        for pid in descendants(self.process.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline[-2:] == [b"worker", b""] and alive(pid):
                return pid
        return None

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert time.monotonic() < deadline, f"{text!r} not in serve's output:\n{self.output()}"
            assert self.process.poll() is None, f"serve exited:\n{self.output()}"
            time.sleep(0.1)


def start_serve(
    tmp: Path, *args: str, env: dict[str, str] | None = None, wait: bool = True
) -> RunningServe:
    base = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'serve.sqlite3'}", **(env or {})}
    subprocess.run([CLI, "db", "upgrade"], env=base, check=True, capture_output=True)
    token = subprocess.run(
        [CLI, "token", "create", "serving-test"],
        env=base,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()[-1]
    port = free_port()
    log = tmp / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [CLI, "serve", "--port", str(port), *args],
            env=base,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = RunningServe(port, token, process, log, base)
    if wait:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"serve exited:\n{running.output()}"
            try:
                if running.call("GET", "/scim/v2/Users?count=1").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"serve did not answer:\n{running.output()}"
            time.sleep(0.1)
    return running


def stop_serve(running: RunningServe) -> None:
    """SIGTERM, and SIGKILL for anything left (a failed test must not leave processes)."""
    family = descendants(running.process.pid)
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(20)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()
    for pid in family:
        if alive(pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def serve(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[RunningServe]:
    running = start_serve(tmp, *args, env=env)
    try:
        yield running
    finally:
        stop_serve(running)
