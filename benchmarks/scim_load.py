#!/usr/bin/env python3
"""Loopback load and scale benchmark for a SCIM 2.0 server.

Standalone: needs only the standard library. The client is kept light so the
figures measure the server: one keep-alive ``http.client`` connection per thread,
pre-rendered requests, JSON parsed only where a check needs it (see ``Client``).

Load mode (the default) runs a fixed number of requests per scenario, split
across client threads (and, with --processes, client processes), and prints
requests/s and latency percentiles::

    python benchmarks/scim_load.py --base-url http://127.0.0.1:8080/scim/v2 --token TOKEN \\
        [--threads 8] [--processes 1] [--requests 2000] \\
        [--scenarios create,get,filter,patch,page100] [--json]

Scale mode measures how two operations behave as the directory grows::

    python benchmarks/scim_load.py scale --base-url URL --token TOKEN \\
        [--users 100000] [--big-group 50000] [--json]

Every response status is checked; any error makes the run exit with status 1.
The benchmark creates users and groups and never deletes them: point it at a
throwaway server or database.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import queue
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.synchronize import Barrier as ProcessBarrier
from typing import Any
from urllib.parse import quote, urlsplit

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
SCIM_JSON = "application/scim+json"

ALL_SCENARIOS = ("create", "get", "filter", "patch", "page100")
PAGE_SIZE = 100
ERROR_SAMPLES = 8


# --------------------------------------------------------------------------- output helpers


def log(message: str) -> None:
    """Progress and diagnostics go to stderr, results to stdout."""
    print(message, file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    rank = (len(sorted_values) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def ms(seconds: float) -> float:
    return seconds * 1000.0


def num(value: float, digits: int = 2) -> float | None:
    """A float for JSON output: rounded, NaN/inf become null."""
    if math.isnan(value) or math.isinf(value):
        return None
    return round(value, digits)


def fmt(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) or math.isinf(value) else f"{value:.{digits}f}"


def truncate(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- HTTP client


@dataclass
class Reply:
    """One HTTP exchange: status 0 means a transport error (see ``transport_error``)."""

    method: str
    path: str
    status: int
    seconds: float
    body: bytes
    transport_error: str | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def describe(self) -> str:
        if self.transport_error is not None:
            return f"{self.method} {self.path}: {self.transport_error}"
        text = self.body.decode("utf-8", errors="replace")
        return f"{self.method} {self.path} -> HTTP {self.status}: {truncate(text)}"


# Characters left as they are in a request target (as ``requests`` does): reserved ones and
# '%', so an already percent-encoded path is not encoded twice.
URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
STANDARD_ERROR_NAME = re.compile(r"\w*(Error|Exception|Timeout)$")


def describe_transport_error(exc: BaseException) -> str:
    """``Name: message`` of a transport failure, the name ending in Error/Exception.

    ``http.client.RemoteDisconnected``, ``IncompleteRead`` or ``socket.gaierror`` are shown
    under their nearest standard base class, e.g. ``ConnectionResetError
    (RemoteDisconnected): ...``, so ``error_kind`` groups them like any other.
    """
    name = type(exc).__name__
    if STANDARD_ERROR_NAME.match(name) is None:
        base = next(
            klass.__name__
            for klass in type(exc).__mro__
            if STANDARD_ERROR_NAME.match(klass.__name__) is not None
        )
        name = f"{base} ({name})"
    return f"{name}: {exc}"


class Client:
    """Minimal SCIM client: one persistent HTTP/1.1 connection per thread (``http.client``).

    The client shares the machine with the server under test, so it is kept light: the
    request is pre-rendered bytes (fixed headers rendered once), the response is read whole
    with ``http.client.HTTPResponse``, and callers parse JSON only where a check needs it.
    When the server closes the connection (``Connection: close``, HTTP/1.0 - the peer
    ``scim2-server`` does so after every response - an idle timeout or a reset), the next
    request opens a new one: that is counted in ``reconnects``, not as an error, and its
    cost is in that request's latency, since it is the server's own cost.
    """

    def __init__(self, base_url: str, token: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            parts = urlsplit(self.base_url)
            port = parts.port
        except ValueError as exc:
            raise BenchmarkAbort(f"bad --base-url {base_url!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BenchmarkAbort(f"--base-url must be an http:// URL, got {base_url!r}")
        if parts.query or parts.fragment:
            raise BenchmarkAbort(f"--base-url must not have a query or fragment: {base_url!r}")
        if re.search(r"[\x00-\x1f\x7f]", token):
            raise BenchmarkAbort("the token contains control characters")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = port or (443 if self.https else 80)
        self.prefix = parts.path  # e.g. /scim/v2; request paths are appended to it
        self.timeout = timeout
        host_header = parts.netloc.rpartition("@")[2]  # without any user:password@
        try:
            self._head = (
                f"Host: {host_header}\r\n"
                f"Authorization: Bearer {token}\r\n"
                f"Accept: {SCIM_JSON}\r\n"
                "User-Agent: scim_load\r\n"
            ).encode("latin-1")
        except UnicodeEncodeError:
            raise BenchmarkAbort("the token and host must be ISO-8859-1 text") from None
        self._body_head = f"Content-Type: {SCIM_JSON}\r\nContent-Length: ".encode()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self.connects = 0  # TCP connections opened
        self.reconnects = 0  # of which replaced a connection the server had closed

    def render(self, method: str, path: str, data: bytes | None) -> bytes:
        """The request bytes: request line, the fixed headers, and the body if any."""
        target = quote(self.prefix + path, safe=URL_SAFE)  # a no-op for the usual paths
        line = f"{method} {target} HTTP/1.1\r\n".encode()
        if data is None:
            return line + self._head + b"\r\n"
        length = str(len(data)).encode()
        return b"".join((line, self._head, self._body_head, length, b"\r\n\r\n", data))

    def call(self, method: str, path: str, body: Any = None) -> Reply:
        """Send one request; the timing covers (re)connecting, sending and reading it whole."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        request = self.render(method, path, data)
        started = time.perf_counter()
        try:
            status, content = self._exchange(method, request)
        except (OSError, http.client.HTTPException) as exc:
            elapsed = time.perf_counter() - started
            return Reply(method, path, 0, elapsed, b"", describe_transport_error(exc))
        return Reply(method, path, status, time.perf_counter() - started, content)

    def _exchange(self, method: str, request: bytes) -> tuple[int, bytes]:
        local = self._local
        conn: http.client.HTTPConnection | None = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = self._new_connection()
            local.server_closed = False
        reused = conn.sock is not None
        if not reused:
            self._connect(conn, reconnect=local.server_closed)
            local.server_closed = False
        response = conn.response_class(conn.sock, method=method)
        try:
            try:
                conn.sock.sendall(request)
                response.begin()
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
                # (RemoteDisconnected is a ConnectionResetError.) The server closed this
                # kept-alive connection while it was idle, before answering: send the
                # request again on a new one. A fresh connection is not retried.
                if not reused:
                    raise
                response.close()
                self._connect(conn, reconnect=True)
                response = conn.response_class(conn.sock, method=method)
                conn.sock.sendall(request)
                response.begin()
            content = response.read()
        except BaseException:
            response.close()
            conn.close()  # in an unknown state: the next request opens a new one
            local.server_closed = False
            raise
        if response.will_close:  # Connection: close, or HTTP/1.0 without keep-alive
            conn.close()
            local.server_closed = True
        return response.status, content

    def _new_connection(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _connect(self, conn: http.client.HTTPConnection, reconnect: bool) -> None:
        conn.close()
        conn.connect()  # also sets TCP_NODELAY
        with self._lock:
            self._open.add(conn)
            self.connects += 1
            self.reconnects += reconnect

    def close(self) -> None:
        """Close every connection; only between phases, when no request is under way."""
        with self._lock:
            connections, self._open = self._open, set()
        for conn in connections:
            conn.close()


def check_status(reply: Reply, expected: Iterable[int]) -> str | None:
    """None when the status is one of ``expected``, else an error description."""
    if reply.transport_error is None and reply.status in set(expected):
        return None
    return reply.describe()


def id_from_location(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- parallel runner


@dataclass
class Stats:
    """Figures of one scenario (or one setup/growth phase)."""

    name: str
    planned: int
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    stopped_early: bool = False
    server_cpu: float | None = None  # seconds of CPU the server used (--server-pid)

    @property
    def done(self) -> int:
        return len(self.latencies) + len(self.errors)

    @property
    def rps(self) -> float:
        return self.done / self.wall if self.wall > 0 else math.nan

    def pct_ms(self, q: float) -> float:
        return ms(percentile(sorted(self.latencies), q))

    @property
    def server_cpu_ms(self) -> float:
        """Server CPU per completed request, in ms (NaN without --server-pid)."""
        if self.server_cpu is None or not self.done:
            return math.nan
        return ms(self.server_cpu) / self.done


@dataclass(frozen=True)
class ProcStat:
    """One process, from /proc/PID/stat: its parent, and its CPU in clock ticks."""

    ppid: int
    own: int  # utime + stime
    reaped: int  # cutime + cstime: its children that have exited


def proc_stats() -> dict[int, ProcStat]:
    """Every process Linux's /proc lists now (empty when it cannot be read)."""
    stats: dict[int, ProcStat] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return stats
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state ppid ... utime(11) stime(12) cutime(13) cstime(14).
        stats[int(entry)] = ProcStat(
            int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        )
    return stats


def process_tree(pid: int, stats: dict[int, ProcStat]) -> set[int]:
    """`pid` and its descendants among `stats` (empty when `pid` is not there)."""
    if pid not in stats:
        return set()
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, s in stats.items() if s.ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return tree


def process_tree_cpu(pid: int, stats: dict[int, ProcStat] | None = None) -> float | None:
    """CPU seconds (user + system) used so far by `pid` and its descendants, from Linux's
    /proc (or `stats`, a proc_stats() reading); None when `pid` cannot be read. Reaped
    children count through their parent's cutime/cstime, so a worker that exits between two
    readings is not lost."""
    stats = proc_stats() if stats is None else stats
    tree = process_tree(pid, stats)
    if not tree:
        return None
    return sum(stats[p].own + stats[p].reaped for p in tree) / os.sysconf("SC_CLK_TCK")


# An operation takes the request index and returns (latency in seconds, error or None).
Operation = Callable[[int], tuple[float, str | None]]


def run_parallel(
    name: str,
    total: int,
    threads: int,
    max_seconds: float,
    operation: Operation,
    progress_every: float = 0.0,
    progress_unit: str = "requests",
    first: int = 0,
) -> Stats:
    """Run ``operation(i)`` for i in [first, first + total) on ``threads`` threads.

    Work is handed out from a shared counter, so the fixed total is split across
    the threads; no new request starts after ``max_seconds``.
    """
    stats = Stats(name=name, planned=total)
    lock = threading.Lock()
    next_index = 0
    completed = 0
    started = time.perf_counter()
    deadline = started + max_seconds

    def worker() -> None:
        nonlocal next_index, completed
        latencies: list[float] = []
        errors: list[str] = []
        while True:
            if time.perf_counter() >= deadline:
                with lock:
                    if next_index < total:
                        stats.stopped_early = True
                break
            with lock:
                index = next_index
                next_index += 1
            if index >= total:
                break
            try:
                seconds, error = operation(first + index)
            except Exception as exc:  # a bug or a malformed response: count it, keep going
                seconds, error = 0.0, f"{type(exc).__name__}: {exc}"
            if error is None:
                latencies.append(seconds)
            else:
                errors.append(error)
            with lock:
                completed += 1
        with lock:
            stats.latencies.extend(latencies)
            stats.errors.extend(errors)

    workers = [
        threading.Thread(target=worker, name=f"{name}-{n}", daemon=True)
        for n in range(max(1, min(threads, total)))
    ]
    for thread in workers:
        thread.start()
    last_report = started
    for thread in workers:
        while thread.is_alive():
            thread.join(timeout=0.25)
            now = time.perf_counter()
            if progress_every and now - last_report >= progress_every:
                last_report = now
                with lock:
                    done = completed
                rate = done / (now - started)
                log(f"  {name}: {done}/{total} {progress_unit} ({rate:.0f}/s)")
    stats.wall = time.perf_counter() - started
    return stats


def error_kind(error: str) -> str:
    """Group errors: ids, generated userNames and query strings are masked."""
    text = re.sub(r"bench-[0-9a-f]{8}s?-\d+", "<userName>", error)
    text = re.sub(r"/(Users|Groups)/[^ ?:]+", r"/\1/<id>", text)
    text = re.sub(r"\?[^ :]*", "?...", text)
    transport = re.match(r"[^:]*: \w*(Error|Exception|Timeout)\b", text)
    if transport is not None:
        return transport.group(0)
    head = text.split(": ", 1)[0]
    status = re.search(r"-> HTTP \d+", text)
    return head if status is None or status.group(0) in head else f"{head} {status.group(0)}"


def print_errors(all_stats: Iterable[Stats]) -> None:
    for stats in all_stats:
        if not stats.errors:
            continue
        print(f"\nerrors in {stats.name}: {len(stats.errors)}")
        kinds = Counter(error_kind(error) for error in stats.errors)
        for kind, count in kinds.most_common():
            print(f"  {count:6d} x {kind}")
        for error in stats.errors[:ERROR_SAMPLES]:
            print(f"    {error}")
        if len(stats.errors) > ERROR_SAMPLES:
            print(f"    ... {len(stats.errors) - ERROR_SAMPLES} more")


# --------------------------------------------------------------------------- SCIM helpers


class Names:
    """Unique userNames for this run: bench-<run id>-<counter>.

    A client process gets the run's prefix and a block of counters reserved for it.
    """

    def __init__(self, tag: str = "", prefix: str | None = None, start: int = 1) -> None:
        self.prefix = prefix if prefix is not None else f"bench-{uuid.uuid4().hex[:8]}{tag}-"
        self._lock = threading.Lock()
        self._next = start

    def next(self) -> str:
        with self._lock:
            number = self._next
            self._next += 1
        return f"{self.prefix}{number:07d}"

    def reserve(self, count: int) -> int:
        """Set aside ``count`` counters (for another process); returns the first."""
        with self._lock:
            first = self._next
            self._next += count
        return first


def user_body(user_name: str) -> dict[str, Any]:
    given, _, family = user_name.rpartition("-")
    return {
        "schemas": [USER_SCHEMA],
        "userName": user_name,
        "name": {"givenName": given or "Bench", "familyName": family or user_name},
        "displayName": user_name,
        "emails": [{"value": f"{user_name}@example.com", "type": "work", "primary": True}],
        "active": True,
    }


def user_name_filter(user_name: str) -> str:
    """The query string for a ``userName eq`` filter, percent-encoded (spaces as %20)."""
    expression = f'userName eq "{user_name}"'
    return "filter=" + quote(expression, safe="")


class Pool:
    """Thread-safe list of (id, userName) of users this run created."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.users: list[tuple[str, str]] = []

    def add(self, user_id: str, user_name: str) -> None:
        with self._lock:
            self.users.append((user_id, user_name))

    def extend(self, users: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            self.users.extend(users)

    def __len__(self) -> int:
        return len(self.users)


def create_user_op(client: Client, names: Names, pool: Pool) -> Operation:
    def operation(_index: int) -> tuple[float, str | None]:
        user_name = names.next()
        reply = client.call("POST", "/Users", user_body(user_name))
        error = check_status(reply, (201,))
        if error is None:
            doc = reply.json()
            user_id = doc.get("id") if isinstance(doc, dict) else None
            if not isinstance(user_id, str) or not user_id:
                error = f"POST /Users: 201 without an id: {truncate(reply.body.decode())}"
            else:
                pool.add(user_id, user_name)
        return reply.seconds, error

    return operation


def count_users(client: Client) -> int:
    reply = client.call("GET", "/Users?startIndex=1&count=1")
    error = check_status(reply, (200,))
    if error is not None:
        raise BenchmarkAbort(f"cannot count users: {error}")
    doc = reply.json()
    total = doc.get("totalResults") if isinstance(doc, dict) else None
    if not isinstance(total, int):
        raise BenchmarkAbort(f"list response without totalResults: {reply.describe()}")
    return total


def service_provider_config(client: Client) -> dict[str, Any]:
    reply = client.call("GET", "/ServiceProviderConfig")
    error = check_status(reply, (200,))
    if error is not None:
        raise BenchmarkAbort(f"cannot read /ServiceProviderConfig: {error}")
    doc = reply.json()
    if not isinstance(doc, dict):
        raise BenchmarkAbort(f"/ServiceProviderConfig is not an object: {reply.describe()}")
    return doc


class BenchmarkAbort(Exception):
    """The benchmark cannot go on (server unreachable, auth refused, ...)."""


# --------------------------------------------------------------------------- load mode


def ensure_population(
    client: Client,
    names: Names,
    pool: Pool,
    want_pool: int,
    want_total: int,
    threads: int,
    max_seconds: float,
) -> tuple[int, list[Stats]]:
    """Create users until this run owns ``want_pool`` and the directory holds ``want_total``.

    Returns the directory size afterwards and the setup stats (for error reporting).
    """
    total = count_users(client)
    missing = max(want_pool - len(pool), want_total - total, 0)
    setups: list[Stats] = []
    if missing:
        log(f"setup: creating {missing} users (directory has {total}) ...")
        stats = run_parallel(
            "setup",
            missing,
            threads,
            max_seconds,
            create_user_op(client, names, pool),
            progress_every=2.0,
        )
        setups.append(stats)
        log(f"setup: {stats.done - len(stats.errors)} created in {stats.wall:.1f}s")
        total = count_users(client)
    return total, setups


def scenario_operation(
    scenario: str, client: Client, names: Names, pool: Pool, population: int
) -> Operation:
    users = list(pool.users)
    if scenario == "create":
        return create_user_op(client, names, pool)

    if scenario == "get":

        def get_op(index: int) -> tuple[float, str | None]:
            user_id, _ = users[index % len(users)]
            reply = client.call("GET", f"/Users/{user_id}")
            error = check_status(reply, (200,))
            if error is None:
                doc = reply.json()
                if not isinstance(doc, dict) or doc.get("id") != user_id:
                    error = f"GET /Users/{user_id}: wrong resource: {truncate(str(doc))}"
            return reply.seconds, error

        return get_op

    if scenario == "filter":

        def filter_op(index: int) -> tuple[float, str | None]:
            # A stride walks the pool in a scattered order.
            _, user_name = users[(index * 7919) % len(users)]
            reply = client.call("GET", f"/Users?{user_name_filter(user_name)}")
            error = check_status(reply, (200,))
            if error is None:
                error = check_single_match(reply, user_name)
            return reply.seconds, error

        return filter_op

    if scenario == "patch":

        def patch_op(index: int) -> tuple[float, str | None]:
            user_id, _ = users[index % len(users)]
            value = f"Bench Patched {index}"
            body = {
                "schemas": [PATCH_SCHEMA],
                "Operations": [{"op": "replace", "path": "displayName", "value": value}],
            }
            reply = client.call("PATCH", f"/Users/{user_id}", body)
            # RFC 7644 3.5.2: 200 with the resource, or 204 without a body.
            error = check_status(reply, (200, 204))
            if error is None and reply.status == 200:
                doc = reply.json()
                if isinstance(doc, dict) and "displayName" in doc and doc["displayName"] != value:
                    error = (
                        f"PATCH /Users/{user_id}: displayName not replaced: {doc['displayName']!r}"
                    )
            return reply.seconds, error

        return patch_op

    if scenario == "page100":
        if population < PAGE_SIZE:
            raise BenchmarkAbort(f"page100 needs at least {PAGE_SIZE} users, have {population}")
        positions = population - PAGE_SIZE + 1  # valid startIndex values: 1 .. positions

        def page_op(index: int) -> tuple[float, str | None]:
            start_index = 1 + (index * PAGE_SIZE) % positions
            path = f"/Users?startIndex={start_index}&count={PAGE_SIZE}"
            reply = client.call("GET", path)
            error = check_status(reply, (200,))
            if error is None:
                doc = reply.json()
                resources = doc.get("Resources") if isinstance(doc, dict) else None
                got = len(resources) if isinstance(resources, list) else 0
                if got != PAGE_SIZE:
                    error = f"GET {path}: {got} resources instead of {PAGE_SIZE}"
            return reply.seconds, error

        return page_op

    raise BenchmarkAbort(f"unknown scenario {scenario!r}")


def check_single_match(reply: Reply, user_name: str) -> str | None:
    doc = reply.json()
    if not isinstance(doc, dict):
        return f"filter {user_name}: not a ListResponse: {truncate(str(doc))}"
    resources = doc.get("Resources") or []
    if doc.get("totalResults") != 1 or len(resources) != 1:
        return f"filter {user_name}: totalResults={doc.get('totalResults')} len={len(resources)}"
    found = str(resources[0].get("userName", ""))
    if found.lower() != user_name.lower():
        return f"filter {user_name}: got userName {found!r}"
    return None


def print_table(results: Sequence[Stats]) -> None:
    with_cpu = any(stats.server_cpu is not None for stats in results)
    header = (
        f"{'scenario':<10} {'requests':>11} {'errors':>7} {'req/s':>9} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}" + (f" {'srv cpu ms':>10}" if with_cpu else "")
    )
    print(header)
    print("-" * len(header))
    for stats in results:
        requests_text = f"{stats.done}" + ("*" if stats.stopped_early else "")
        print(
            f"{stats.name:<10} {requests_text:>11} {len(stats.errors):>7} "
            f"{fmt(stats.rps, 1):>9} {fmt(stats.pct_ms(0.50)):>8} "
            f"{fmt(stats.pct_ms(0.95)):>8} {fmt(stats.pct_ms(0.99)):>8}"
            + (f" {fmt(stats.server_cpu_ms, 3):>10}" if with_cpu else "")
        )
    if any(stats.stopped_early for stats in results):
        print("* stopped by --max-seconds before the requested number of requests")


def run_load(args: argparse.Namespace) -> int:
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in scenarios if name not in ALL_SCENARIOS]
    if unknown:
        log(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(ALL_SCENARIOS)}")
        return 2
    client = Client(args.base_url, args.token, args.timeout)
    names = Names()
    pool = Pool()

    service_provider_config(client)  # fails early on a wrong URL or token
    needs_pool = any(name in ("get", "filter", "patch") for name in scenarios)
    needs_pages = "page100" in scenarios
    population, setups = ensure_population(
        client,
        names,
        pool,
        want_pool=args.pool if needs_pool else 0,
        want_total=max(args.page_population, PAGE_SIZE) if needs_pages else 0,
        threads=args.threads,
        max_seconds=args.setup_max_seconds,
    )
    client.close()
    if needs_pool and not pool.users:
        print_errors(setups)
        raise BenchmarkAbort("setup created no users")

    processes = args.processes
    clients = f"{processes} processes x {args.threads} threads" if processes > 1 else ""
    log(
        f"server {client.base_url}: {population} users; {clients or f'{args.threads} threads'}, "
        f"{args.requests} requests per scenario"
    )
    if args.server_pid and process_tree_cpu(args.server_pid) is None:
        log(f"--server-pid {args.server_pid}: no such process in /proc; no server CPU figures")
    results: list[Stats] = []
    for scenario in scenarios:
        log(f"running {scenario} ...")
        cpu_before = process_tree_cpu(args.server_pid) if args.server_pid else None
        if processes > 1:
            stats, reconnects = run_processes(args, scenario, names, pool, population)
        else:
            operation = scenario_operation(scenario, client, names, pool, population)
            before = client.reconnects
            stats = run_parallel(
                scenario,
                args.requests,
                args.threads,
                args.max_seconds,
                operation,
                progress_every=5.0,
            )
            client.close()
            reconnects = client.reconnects - before
        if reconnects:
            log(f"  {scenario}: {reconnects} reconnects (the server closed the connection)")
        cpu_after = process_tree_cpu(args.server_pid) if args.server_pid else None
        if cpu_before is not None and cpu_after is not None:
            stats.server_cpu = cpu_after - cpu_before
        results.append(stats)
        if scenario == "create":
            population += stats.done - len(stats.errors)

    header = f"SCIM load: {client.base_url}  threads={args.threads}  requests={args.requests}"
    print(header + (f"  processes={processes}" if processes > 1 else ""))
    print_table(results)
    print_errors([*setups, *results])
    failed = sum(len(stats.errors) for stats in [*setups, *results])
    if args.json:
        document = {
            "mode": "load",
            "base_url": client.base_url,
            "threads": args.threads,
            **({"processes": processes} if processes > 1 else {}),
            "requests_per_scenario": args.requests,
            "population": population,
            "setup_errors": sum(len(stats.errors) for stats in setups),
            "results": {
                stats.name: {
                    "requests": stats.done,
                    "planned": stats.planned,
                    "errors": len(stats.errors),
                    "stopped_early": stats.stopped_early,
                    "seconds": num(stats.wall, 3),
                    "rps": num(stats.rps, 1),
                    "p50_ms": num(stats.pct_ms(0.50), 3),
                    "p95_ms": num(stats.pct_ms(0.95), 3),
                    "p99_ms": num(stats.pct_ms(0.99), 3),
                    **(
                        {"server_cpu_ms": num(stats.server_cpu_ms, 3)}
                        if stats.server_cpu is not None
                        else {}
                    ),
                }
                for stats in results
            },
        }
        print(json.dumps(document))
    return 1 if failed else 0


# --------------------------------------------------------------------------- client processes

PROCESS_START_TIMEOUT = 120.0  # seconds for the client processes of a scenario to get ready


@dataclass
class ShardTask:
    """One client process's share of a load scenario (pickled to the process)."""

    number: int
    processes: int
    scenario: str
    base_url: str
    token: str
    timeout: float
    threads: int
    max_seconds: float
    first: int  # this process sends requests first .. first + count - 1 of the scenario
    count: int
    users: list[tuple[str, str]]
    population: int
    names_prefix: str
    names_start: int


@dataclass
class ShardResult:
    """What a client process sends back: its raw figures, or why it could not run."""

    number: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped_early: bool = False
    created: list[tuple[str, str]] = field(default_factory=list)
    reconnects: int = 0
    failure: str | None = None


def run_shard(task: ShardTask, barrier: ProcessBarrier, results: ProcessQueue[ShardResult]) -> None:
    """Body of a client process: get ready, wait for the others, run its share."""
    result = ShardResult(number=task.number)
    client: Client | None = None
    try:
        client = Client(task.base_url, task.token, task.timeout)
        pool = Pool()
        pool.extend(task.users)
        names = Names(prefix=task.names_prefix, start=task.names_start)
        operation = scenario_operation(task.scenario, client, names, pool, task.population)
        barrier.wait(PROCESS_START_TIMEOUT)
        stats = run_parallel(
            f"{task.scenario}[{task.number + 1}/{task.processes}]",
            task.count,
            task.threads,
            task.max_seconds,
            operation,
            progress_every=5.0,
            first=task.first,
        )
        result.latencies = stats.latencies
        result.errors = stats.errors
        result.stopped_early = stats.stopped_early
        result.created = pool.users[len(task.users) :]
        result.reconnects = client.reconnects
    except BaseException as exc:  # tell the parent rather than leave it waiting
        barrier.abort()
        result.failure = f"{type(exc).__name__}: {exc}"
    finally:
        if client is not None:
            client.close()
    results.put(result)


def run_processes(
    args: argparse.Namespace, scenario: str, names: Names, pool: Pool, population: int
) -> tuple[Stats, int]:
    """Run one scenario from ``--processes`` client processes of ``--threads`` threads each.

    The requests are split into contiguous index ranges, so the scenario sends the same
    requests as from one process. The processes start together (after a barrier, so their
    start-up is not timed); the wall time runs until the last one has reported. Latencies
    are merged for the percentiles, users created are added to the pool. Returns the stats
    and the number of reconnects.
    """
    processes = min(args.processes, args.requests)
    share, extra = divmod(args.requests, processes)
    names_start = names.reserve(args.requests)
    users = list(pool.users)
    tasks: list[ShardTask] = []
    first = 0
    for number in range(processes):
        count = share + (1 if number < extra else 0)
        tasks.append(
            ShardTask(
                number=number,
                processes=processes,
                scenario=scenario,
                base_url=args.base_url,
                token=args.token,
                timeout=args.timeout,
                threads=args.threads,
                max_seconds=args.max_seconds,
                first=first,
                count=count,
                users=users,
                population=population,
                names_prefix=names.prefix,
                names_start=names_start + first,
            )
        )
        first += count
    # spawn: a fresh interpreter per process, nothing inherited from this one's threads.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results: ProcessQueue[ShardResult] = context.Queue()
    workers = [
        context.Process(
            target=run_shard,
            args=(task, barrier, results),
            name=f"{scenario}-{task.number + 1}",
            daemon=True,
        )
        for task in tasks
    ]
    for worker in workers:
        worker.start()
    received: list[ShardResult] = []
    try:
        # A broken barrier means a process failed to get ready: its result says why.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(PROCESS_START_TIMEOUT)
        started = time.perf_counter()
        while len(received) < len(workers):
            try:
                received.append(results.get(timeout=0.5))
                continue
            except queue.Empty:
                if any(worker.is_alive() for worker in workers):
                    continue
            try:  # every process has exited: what they sent has arrived by now
                received.append(results.get(timeout=2.0))
            except queue.Empty:
                codes = ", ".join(str(worker.exitcode) for worker in workers)
                raise BenchmarkAbort(
                    f"{scenario}: {len(workers) - len(received)} client process(es) exited "
                    f"without a result (exit codes {codes})"
                ) from None
        wall = time.perf_counter() - started
    finally:
        for worker in workers:
            worker.join(timeout=5.0)
            if worker.is_alive():
                worker.terminate()
                worker.join()
    received.sort(key=lambda result: result.number)
    failures = [f"process {r.number + 1}: {r.failure}" for r in received if r.failure]
    if failures:
        raise BenchmarkAbort(f"{scenario}: {'; '.join(failures)}")
    stats = Stats(name=scenario, planned=args.requests, wall=wall)
    for result in received:
        stats.latencies.extend(result.latencies)
        stats.errors.extend(result.errors)
        stats.stopped_early = stats.stopped_early or result.stopped_early
        pool.extend(result.created)
    return stats, sum(result.reconnects for result in received)


# --------------------------------------------------------------------------- scale mode


@dataclass
class Grower:
    """Grows the directory, through /Bulk when the server offers it."""

    client: Client
    names: Names
    pool: Pool
    threads: int
    bulk_threads: int
    bulk_size: int
    max_seconds: float
    bulk_supported: bool = False
    max_operations: int = 0
    max_payload: int = 0
    phases: list[Stats] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: dict[str, Any], **kwargs: Any) -> Grower:
        grower = cls(**kwargs)
        bulk = config.get("bulk")
        if isinstance(bulk, dict) and bulk.get("supported") is True:
            grower.max_operations = int(bulk.get("maxOperations") or 0)
            grower.max_payload = int(bulk.get("maxPayloadSize") or 0)
            grower.bulk_supported = grower.max_operations > 0
        return grower

    def describe(self) -> str:
        if not self.bulk_supported:
            return f"POST /Users on {self.threads} threads (no /Bulk)"
        return (
            f"POST /Bulk, {self.batch_size()} operations per request on {self.bulk_threads} "
            f"threads (server: maxOperations={self.max_operations}, "
            f"maxPayloadSize={self.max_payload})"
        )

    def batch_size(self) -> int:
        size = min(self.bulk_size, self.max_operations)
        if self.max_payload > 0:
            sample = len(json.dumps(self.bulk_operation(0, "bench-xxxxxxxx-0000000")).encode())
            # Keep 10% headroom for the envelope and longer names.
            size = min(size, max(1, int(self.max_payload * 0.9) // (sample + 1)))
        return max(1, size)

    @staticmethod
    def bulk_operation(index: int, user_name: str) -> dict[str, Any]:
        return {
            "method": "POST",
            "path": "/Users",
            "bulkId": f"u{index}",
            "data": user_body(user_name),
        }

    def grow(self, count: int, label: str) -> None:
        """Create ``count`` more users (recorded in the pool)."""
        if count <= 0:
            return
        if self.bulk_supported:
            self._grow_bulk(count, label)
        else:
            log(f"{label}: creating {count} users with POST /Users ...")
            stats = run_parallel(
                label,
                count,
                self.threads,
                self.max_seconds,
                create_user_op(self.client, self.names, self.pool),
                progress_every=3.0,
                progress_unit="users",
            )
            self.client.close()
            self.phases.append(stats)

    def _grow_bulk(self, count: int, label: str) -> None:
        batch = self.batch_size()
        batches = math.ceil(count / batch)
        log(f"{label}: creating {count} users in {batches} bulk requests of <= {batch} ...")

        def operation(index: int) -> tuple[float, str | None]:
            size = min(batch, count - index * batch)
            return self._send_bulk([self.names.next() for _ in range(size)])

        stats = run_parallel(
            label,
            batches,
            self.bulk_threads,
            self.max_seconds,
            operation,
            progress_every=3.0,
            progress_unit="bulk requests",
        )
        self.client.close()
        self.phases.append(stats)

    def _send_bulk(self, user_names: list[str]) -> tuple[float, str | None]:
        operations = [self.bulk_operation(i, name) for i, name in enumerate(user_names)]
        body = {"schemas": [BULK_REQUEST_SCHEMA], "Operations": operations}
        size = len(json.dumps(body, separators=(",", ":")).encode())
        if self.max_payload and size > self.max_payload and len(user_names) > 1:
            half = len(user_names) // 2
            first_seconds, first_error = self._send_bulk(user_names[:half])
            second_seconds, second_error = self._send_bulk(user_names[half:])
            return first_seconds + second_seconds, first_error or second_error
        reply = self.client.call("POST", "/Bulk", body)
        error = check_status(reply, (200,))
        if error is not None:
            return reply.seconds, error
        doc = reply.json()
        results = doc.get("Operations") if isinstance(doc, dict) else None
        if not isinstance(results, list):
            return reply.seconds, f"POST /Bulk: no Operations in response: {reply.describe()}"
        by_bulk_id = {f"u{i}": name for i, name in enumerate(user_names)}
        failures: list[str] = []
        created: list[tuple[str, str]] = []
        for result in results:
            status = result.get("status")
            code = str(status.get("code") if isinstance(status, dict) else status)
            name = by_bulk_id.get(str(result.get("bulkId")))
            location = result.get("location")
            response = result.get("response")
            user_id = None
            if isinstance(location, str) and location:
                user_id = id_from_location(location)
            elif isinstance(response, dict) and isinstance(response.get("id"), str):
                user_id = response["id"]
            if code != "201" or name is None or user_id is None:
                failures.append(f"{code} {truncate(json.dumps(result), 160)}")
            else:
                created.append((user_id, name))
        self.pool.extend(created)
        if len(created) != len(user_names):
            detail = "; ".join(failures[:2])
            return reply.seconds, (
                f"POST /Bulk: {len(created)}/{len(user_names)} users created: {detail}"
            )
        return reply.seconds, None


@dataclass
class Sample:
    """Sequential latency measurements of one configuration."""

    label: str
    size: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def median_ms(self) -> float:
        return ms(percentile(sorted(self.latencies), 0.5))

    def p95_ms(self) -> float:
        return ms(percentile(sorted(self.latencies), 0.95))

    def as_stats(self) -> Stats:
        return Stats(name=self.label, planned=0, latencies=self.latencies, errors=self.errors)


def measure_filter(
    client: Client, user_names: Sequence[str], samples: int, size: int, label: str
) -> Sample:
    rng = random.Random(size)
    sample = Sample(label=label, size=size)
    for warm in range(min(10, samples)):
        client.call("GET", f"/Users?{user_name_filter(user_names[warm % len(user_names)])}")
    for _ in range(samples):
        user_name = rng.choice(user_names)
        reply = client.call("GET", f"/Users?{user_name_filter(user_name)}")
        sample.statuses[reply.status] += 1
        error = check_status(reply, (200,)) or check_single_match(reply, user_name)
        if error is None:
            sample.latencies.append(reply.seconds)
        else:
            sample.errors.append(error)
    return sample


def create_group(client: Client, display_name: str, member_ids: Sequence[str]) -> str:
    body: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "displayName": display_name}
    if member_ids:
        body["members"] = [{"value": member_id} for member_id in member_ids]
    reply = client.call("POST", "/Groups", body)
    error = check_status(reply, (201,))
    if error is not None:
        raise BenchmarkAbort(f"cannot create group {display_name}: {error}")
    doc = reply.json()
    group_id = doc.get("id") if isinstance(doc, dict) else None
    if not isinstance(group_id, str):
        raise BenchmarkAbort(f"group created without an id: {reply.describe()}")
    return group_id


def add_members_body(member_ids: Sequence[str]) -> dict[str, Any]:
    return {
        "schemas": [PATCH_SCHEMA],
        "Operations": [
            {
                "op": "add",
                "path": "members",
                "value": [{"value": member_id} for member_id in member_ids],
            }
        ],
    }


def remove_member_body(member_id: str) -> dict[str, Any]:
    return {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "remove", "path": f'members[value eq "{member_id}"]'}],
    }


def count_members(client: Client, group_id: str) -> int | None:
    reply = client.call("GET", f"/Groups/{group_id}")
    if check_status(reply, (200,)) is not None:
        return None
    doc = reply.json()
    members = doc.get("members") if isinstance(doc, dict) else None
    return len(members) if isinstance(members, list) else 0


def run_scale(args: argparse.Namespace) -> int:
    client = Client(args.base_url, args.token, args.timeout)
    config = service_provider_config(client)
    names = Names("s")
    pool = Pool()
    grower = Grower.from_config(
        config,
        client=client,
        names=names,
        pool=pool,
        threads=args.threads,
        bulk_threads=args.bulk_threads,
        bulk_size=args.bulk_size,
        max_seconds=args.grow_max_seconds,
    )
    if args.no_bulk:
        grower.bulk_supported = False
    log(f"growing the directory with {grower.describe()}")
    baseline_target = args.baseline_users
    if args.users < baseline_target:
        raise BenchmarkAbort(f"--users must be at least {baseline_target}")
    samples = args.samples

    # a) filter latency at the baseline size, then at --users.
    total = count_users(client)
    if total > baseline_target:
        log(
            f"warning: directory already has {total} users (> {baseline_target}); baseline is there"
        )
    grower.grow(baseline_target - total, "grow-baseline")
    baseline_total = count_users(client)
    baseline_names = [name for _, name in pool.users] or list_user_names(client, samples)
    if not baseline_names:
        raise BenchmarkAbort("no users to filter on")
    log(f"measuring filter at {baseline_total} users ({samples} sequential requests) ...")
    filter_small = measure_filter(client, baseline_names, samples, baseline_total, "filter-base")

    grower.grow(args.users - baseline_total, "grow")
    # The group part needs big-group + 10 members + 2 fresh users per measurement.
    small_size = 10
    needed = args.big_group + small_size + 2 * samples
    if len(pool) < needed:
        log(f"need {needed} users of this run for the group part, have {len(pool)}: creating more")
        grower.grow(needed - len(pool), "grow-extra")
    grown_total = count_users(client)
    grown_names = [name for _, name in pool.users]
    log(f"measuring filter at {grown_total} users ...")
    filter_big = measure_filter(client, grown_names, samples, grown_total, "filter-grown")

    # b) add one member to a 10-member group vs a --big-group member group.
    ids = [user_id for user_id, _ in pool.users]
    if len(ids) < needed:
        raise BenchmarkAbort(f"only {len(ids)} users available, the group part needs {needed}")
    big_members = ids[: args.big_group]
    small_members = ids[args.big_group : args.big_group + small_size]
    fresh = ids[args.big_group + small_size : needed]
    tag = names.prefix.rstrip("-")
    small_group = create_group(client, f"{tag}-small", small_members)
    big_group = create_group(client, f"{tag}-big", [])
    chunk = args.member_chunk
    chunks = math.ceil(len(big_members) / chunk)
    log(f"building the {len(big_members)}-member group: {chunks} PATCH requests of <= {chunk} ...")
    build = Stats(name="build-group", planned=chunks)
    build_started = time.perf_counter()
    last_report = build_started
    for number in range(chunks):
        members = big_members[number * chunk : (number + 1) * chunk]
        reply = client.call("PATCH", f"/Groups/{big_group}", add_members_body(members))
        error = check_status(reply, (200, 204))
        if error is None:
            build.latencies.append(reply.seconds)
        else:
            build.errors.append(error)
        now = time.perf_counter()
        if now - last_report >= 3.0:
            last_report = now
            log(f"  build-group: {(number + 1) * chunk}/{len(big_members)} members")
    build.wall = time.perf_counter() - build_started
    grower.phases.append(build)
    built = count_members(client, big_group)
    if built != len(big_members):
        build.errors.append(f"big group has {built} members instead of {len(big_members)}")
    log(f"big group built in {build.wall:.1f}s ({built} members)")

    add_small = Sample(label="add-small", size=small_size)
    add_big = Sample(label="add-big", size=len(big_members))
    removals = not args.no_remove
    removal_errors: list[str] = []
    log(f"measuring member adds ({samples} per group, alternating) ...")
    for number in range(samples):
        for sample, group_id in ((add_small, small_group), (add_big, big_group)):
            member_id = fresh[2 * number + (0 if sample is add_small else 1)]
            reply = client.call("PATCH", f"/Groups/{group_id}", add_members_body([member_id]))
            sample.statuses[reply.status] += 1
            error = check_status(reply, (200, 204))
            if error is None:
                sample.latencies.append(reply.seconds)
            else:
                sample.errors.append(error)
                continue
            if removals:
                # Keep the group at its size; the removal is not measured.
                removal = client.call("PATCH", f"/Groups/{group_id}", remove_member_body(member_id))
                if check_status(removal, (200, 204)) is not None:
                    removal_errors.append(removal.describe())
                    removals = False
                    log(
                        "warning: removing a member failed, the groups will grow during the "
                        f"measurement: {removal.describe()}"
                    )

    filter_ratio = filter_big.median_ms() / filter_small.median_ms()
    group_ratio = add_big.median_ms() / add_small.median_ms()
    print(f"SCIM scale: {client.base_url}  samples={samples} (sequential, median)")
    print(f"directory grown with {grower.describe()}")
    print()
    print(
        f"{'measurement':<24} {'size':>9} {'median ms':>10} {'p95 ms':>9} {'errors':>7}  statuses"
    )
    rows = (
        ("filter userName eq", "users", filter_small),
        ("filter userName eq", "users", filter_big),
        ("group add 1 member", "members", add_small),
        ("group add 1 member", "members", add_big),
    )
    for title, _unit, sample in rows:
        statuses = ",".join(f"{code}x{count}" for code, count in sorted(sample.statuses.items()))
        print(
            f"{title:<24} {sample.size:>9} {fmt(sample.median_ms()):>10} "
            f"{fmt(sample.p95_ms()):>9} {len(sample.errors):>7}  {statuses}"
        )
    print()
    print(f"filter ratio  ({filter_big.size} / {filter_small.size} users): {fmt(filter_ratio)}x")
    print(f"group ratio   ({add_big.size} / {add_small.size} members): {fmt(group_ratio)}x")
    if args.no_remove or removal_errors:
        print("note: measured members were not removed, so both groups grew by one per add")
    everything = [
        *grower.phases,
        filter_small.as_stats(),
        filter_big.as_stats(),
        add_small.as_stats(),
        add_big.as_stats(),
    ]
    print_errors(everything)
    failed = sum(len(stats.errors) for stats in everything)
    if args.json:
        document = {
            "mode": "scale",
            "base_url": client.base_url,
            "samples": samples,
            "bulk": grower.bulk_supported,
            "filter": {
                "baseline_users": filter_small.size,
                "baseline_median_ms": num(filter_small.median_ms(), 3),
                "grown_users": filter_big.size,
                "grown_median_ms": num(filter_big.median_ms(), 3),
                "ratio": num(filter_ratio, 3),
            },
            "group_add": {
                "small_members": add_small.size,
                "small_median_ms": num(add_small.median_ms(), 3),
                "big_members": add_big.size,
                "big_median_ms": num(add_big.median_ms(), 3),
                "ratio": num(group_ratio, 3),
            },
            "errors": failed,
        }
        print(json.dumps(document))
    return 1 if failed else 0


def list_user_names(client: Client, count: int) -> list[str]:
    reply = client.call("GET", f"/Users?startIndex=1&count={count}")
    if check_status(reply, (200,)) is not None:
        return []
    doc = reply.json()
    resources = doc.get("Resources") if isinstance(doc, dict) else None
    if not isinstance(resources, list):
        return []
    return [str(item["userName"]) for item in resources if "userName" in item]


# --------------------------------------------------------------------------- CLI


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url", required=True, help="SCIM base URL, e.g. http://127.0.0.1:8080/scim/v2"
    )
    parser.add_argument("--token", required=True, help="bearer token")
    parser.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="per-request timeout, seconds (default 30)"
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON line of figures")


def build_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    load = argparse.ArgumentParser(
        prog="scim_load.py",
        description="Loopback load benchmark for a SCIM 2.0 server. "
        "Run 'scim_load.py scale --help' for the scale mode.",
    )
    add_common(load)
    load.add_argument(
        "--requests", type=int, default=2000, help="requests per scenario (default 2000)"
    )
    load.add_argument(
        "--processes",
        type=int,
        default=1,
        help="client processes, each with --threads threads, splitting the requests "
        "(default 1; more lets the client use more than one core)",
    )
    load.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help=f"comma-separated, run in this order (default {','.join(ALL_SCENARIOS)})",
    )
    load.add_argument(
        "--max-seconds", type=float, default=60.0, help="time cap per scenario (default 60)"
    )
    load.add_argument(
        "--pool",
        type=int,
        default=500,
        help="users created in setup for get/filter/patch (default 500)",
    )
    load.add_argument(
        "--page-population",
        type=int,
        default=1000,
        help="minimum directory size for page100; startIndex walks over it (default 1000)",
    )
    load.add_argument(
        "--setup-max-seconds", type=float, default=600.0, help="time cap for setup (default 600)"
    )
    load.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="on Linux, also report the CPU time the server (this process and its "
        "descendants, e.g. a gunicorn master and its workers) used per request",
    )

    scale = argparse.ArgumentParser(
        prog="scim_load.py scale",
        description="Scale benchmark: filter latency vs directory size, "
        "group member add latency vs group size.",
    )
    add_common(scale)
    scale.add_argument(
        "--users", type=int, default=100_000, help="directory size to grow to (default 100000)"
    )
    scale.add_argument(
        "--big-group", type=int, default=50_000, help="members of the big group (default 50000)"
    )
    scale.add_argument(
        "--baseline-users", type=int, default=1000, help="baseline directory size (default 1000)"
    )
    scale.add_argument(
        "--samples", type=int, default=300, help="sequential requests per median (default 300)"
    )
    scale.add_argument(
        "--bulk-size", type=int, default=1000, help="operations per bulk request (default 1000)"
    )
    scale.add_argument(
        "--bulk-threads", type=int, default=2, help="concurrent bulk requests (default 2)"
    )
    scale.add_argument(
        "--member-chunk", type=int, default=1000, help="members per PATCH add (default 1000)"
    )
    scale.add_argument(
        "--grow-max-seconds",
        type=float,
        default=7200.0,
        help="time cap for each growth phase (default 7200)",
    )
    scale.add_argument(
        "--no-bulk",
        action="store_true",
        help="grow with parallel POST /Users even when the server supports /Bulk",
    )
    scale.add_argument(
        "--no-remove",
        action="store_true",
        help="do not remove each measured member again (groups then grow during the run)",
    )
    return load, scale


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    load_parser, scale_parser = build_parsers()
    scale_mode = bool(arguments) and arguments[0] == "scale"
    args = (
        scale_parser.parse_args(arguments[1:]) if scale_mode else load_parser.parse_args(arguments)
    )
    positive = (
        "threads",
        "processes",
        "requests",
        "users",
        "big_group",
        "samples",
        "bulk_size",
        "member_chunk",
    )
    for name in positive:
        value = getattr(args, name, 1)
        if value < 1:
            log(f"--{name.replace('_', '-')} must be at least 1")
            return 2
    try:
        return run_scale(args) if scale_mode else run_load(args)
    except BenchmarkAbort as exc:
        log(f"aborted: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
