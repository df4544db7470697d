"""`/metrics`: Prometheus text, through prometheus-client.

Series:
- `scim_http_requests_total{method,route,status}` and the histogram
  `scim_http_request_duration_seconds{method,route}`: counted by every HTTP worker process.
  `route` is the Flask rule (`/scim/v2/Users/<id>`), `unmatched` when none matched; a
  method outside HTTP's usual ones is `other`. Nothing a client sends becomes a label as is.
- read from the database at scrape time (`DatabaseCollector`), so they are right whichever
  process is scraped and wherever the sync workers run: `scim_outbox_events{state}`
  (pending, dead), `scim_outbox_oldest_pending_seconds`, `scim_dead_letters`,
  `scim_sync_worker_heartbeat_age_seconds` (+Inf when no worker ever beat), and the sync
  workers' counters from their heartbeat rows (sync/heartbeat.py): `scim_sync_delivered_total
  {kind}`, `scim_graph_requests_total{status}`, `scim_graph_throttled_total`; and the
  drift counts (drift/state.py): `scim_drift_detected_total{kind}`,
  `scim_drift_repaired_total{kind}`.

The HTTP server runs several processes: each keeps its counts in prometheus-client's
multiprocess files in PROMETHEUS_MULTIPROC_DIR, and a scrape of any of them sums them all.
`prepare_multiprocess_dir()` makes that directory before the processes start. prometheus-
client chooses between in-memory and file-backed values when it is first imported, so this
module imports it only when a metric is first needed, after the directory is set.

METRICS_TOKEN, when set, is the bearer token /metrics requires (kept as its SHA-256,
compared in constant time). A token of its own, not a SCIM one: whoever scrapes metrics
needs no access to the directory's users.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import hmac
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from sqlalchemy import func, select

from models import EventStatus, OutboxEvent, utcnow
from scim_server.db import begin

log = logging.getLogger("scim_server.metrics")
bp = Blueprint("metrics", __name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
OUTBOX_STATES = (
    EventStatus.PENDING,
    EventStatus.DEAD,
)  # `done` grows for ever: scim_sync_delivered_total counts it


def prepare_multiprocess_dir() -> str:
    """Make PROMETHEUS_MULTIPROC_DIR ready for the HTTP worker processes about to start, and
    return it. Unset: a fresh temporary directory, set in the environment (the workers
    inherit it) and removed when this process exits. Set: created if missing, and emptied of
    the files of an earlier run, as prometheus-client asks. Call it before the workers
    start, in the process that starts them."""
    given = os.environ.get(ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # prometheus-client's files: counter_<pid>.db, …
            stale.unlink(missing_ok=True)
        return str(path)
    made = tempfile.mkdtemp(prefix="scim-metrics-")
    os.environ[ENV] = made
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not in a forked worker, which inherits this hook
            shutil.rmtree(made, ignore_errors=True)

    atexit.register(remove)
    return made


class _Http:
    """The HTTP series of this process, and whether they live in multiprocess files."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.multiprocess = ENV in os.environ
        self.requests = Counter(
            "scim_http_requests_total",
            "HTTP requests answered, by method, Flask route and status.",
            ["method", "route", "status"],
            registry=None,
        )
        self.duration = Histogram(
            "scim_http_request_duration_seconds",
            "Time from the request's start to its response, by method and Flask route.",
            ["method", "route"],
            registry=None,
        )
        self._counts: dict[tuple[str, str, str], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        count = self._counts.get(key)
        if count is None:
            count = self._counts[key] = self.requests.labels(*key)
        count.inc()
        timing = self._durations.get(key[:2])
        if timing is None:
            timing = self._durations[key[:2]] = self.duration.labels(method, route)
        timing.observe(seconds)


@functools.cache
def _http() -> _Http:
    return _Http()


def register(app: Flask) -> None:
    """The /metrics view, and the hooks that time and count every request. Register before
    the other before_request hooks: one that answers (a 401) skips those after it."""
    app.register_blueprint(bp)

    @app.before_request
    def _started() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            method = request.method if request.method in METHODS else "other"
            _http().observe(method, route(), response.status_code, time.perf_counter() - started)
        return response


_ARGUMENT = re.compile(r"<(?:(?P<converter>[A-Za-z_]\w*)(?:\([^)]*\))?:)?(?P<name>[A-Za-z_]\w*)>")


@functools.lru_cache(maxsize=256)
def _label(rule: str, chosen: tuple[tuple[str, str], ...]) -> str:
    values = dict(chosen)

    def name(found: re.Match[str]) -> str:
        arg = found.group("name")
        return values.get(arg) or f"<{arg}>"

    return _ARGUMENT.sub(name, rule)


def route() -> str:
    """The request's route label: its Flask rule, with the value of an `any(...)` argument
    (one of a fixed few: `Users` or `Groups`) and the name of every other argument:
    `/scim/v2/Users/<ident>`. `unmatched` when no rule matched."""
    rule = request.url_rule
    if rule is None:
        return UNMATCHED
    bounded = _bounded(rule.rule)
    view_args = request.view_args or {}
    chosen = tuple((arg, str(view_args.get(arg))) for arg in bounded)
    return _label(rule.rule, chosen)


@functools.lru_cache(maxsize=256)
def _bounded(rule: str) -> tuple[str, ...]:
    """The arguments of a rule whose values are a fixed few (the `any` converter)."""
    return tuple(m.group("name") for m in _ARGUMENT.finditer(rule) if m.group("converter") == "any")


@bp.get("/metrics")
def metrics() -> Response:
    expected = current_app.config.get("METRICS_TOKEN_SHA256")
    if expected and not _authorised(request.headers.get("Authorization"), expected):
        response = Response("A valid bearer token is required.\n", 401, mimetype="text/plain")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    http = _http()
    registry = CollectorRegistry()
    if http.multiprocess:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(http.requests)
        registry.register(http.duration)
    registry.register(DatabaseCollector())
    response = Response(generate_latest(registry), 200)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    response.headers["Cache-Control"] = "no-store"
    return response


def _authorised(header: str | None, expected_sha256: str) -> bool:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    return hmac.compare_digest(digest, expected_sha256)


# Pending and dead only: an index range each, not a count of the delivered events.
_BY_STATE = (
    select(OutboxEvent.status, func.count())
    .where(OutboxEvent.status.in_(OUTBOX_STATES))
    .group_by(OutboxEvent.status)
)


class DatabaseCollector:
    """The series read from the database at each scrape, with queries whose cost follows
    the pending and dead events (an index range each), not the size of the outbox. When the
    database cannot answer, they are left out (and the failure logged): the HTTP series
    still come."""

    def describe(self) -> list[Any]:
        return []  # nothing to query at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from scim_server.drift import state as drift_state
        from scim_server.outbox import oldest_pending_seconds
        from scim_server.sync import heartbeat

        max_age = timedelta(seconds=current_app.config["SYNC_HEARTBEAT_MAX_AGE_SECONDS"])
        try:
            with begin(write=False) as conn:
                by_state: dict[str, int] = dict.fromkeys(OUTBOX_STATES, 0)
                by_state.update(conn.execute(_BY_STATE).all())
                oldest = oldest_pending_seconds(conn)
                workers = heartbeat.summary(conn, max_age)
                drift = drift_state.counts(conn)
        except Exception:
            log.warning("metrics: the database did not answer", exc_info=True)
            return
        events = GaugeMetricFamily(
            "scim_outbox_events", "Outbox events by state (pending, dead).", labels=["state"]
        )
        for state, count in sorted(by_state.items()):
            events.add_metric([state], float(count))
        yield events
        yield GaugeMetricFamily(
            "scim_outbox_oldest_pending_seconds",
            "Age of the oldest pending outbox event (0 when none is pending).",
            value=oldest or 0.0,
        )
        yield GaugeMetricFamily(
            "scim_dead_letters",
            "Outbox events given up on (`scim-server sync retry` queues them again).",
            value=float(by_state[EventStatus.DEAD]),
        )
        age = workers.age_seconds(utcnow())
        yield GaugeMetricFamily(
            "scim_sync_worker_heartbeat_age_seconds",
            "Seconds since the newest sync worker heartbeat (+Inf: none ever).",
            value=float("inf") if age is None else age,
        )
        counters = workers.counters
        delivered = CounterMetricFamily(
            "scim_sync_delivered",
            "Deliveries to Microsoft 365 by the sync workers, by kind (user, group).",
            labels=["kind"],
        )
        for kind, count in sorted((counters.get("delivered") or {}).items()):
            delivered.add_metric([kind], float(count))
        yield delivered
        graph = CounterMetricFamily(
            "scim_graph_requests",
            "Graph calls made by the sync workers, by HTTP status (`error`: none came).",
            labels=["status"],
        )
        for status, count in sorted((counters.get("graph_requests") or {}).items()):
            graph.add_metric([status], float(count))
        yield graph
        # Written in the transactions that find and repair drift, whichever process that
        # is (a worker, `m365 reconcile`): the database's counts are the sums.
        for column, about in (
            ("detected", "Drift found in Microsoft 365 by the drift rounds, by kind."),
            ("repaired", "Drift put right (delivered through the outbox), by kind."),
        ):
            family = CounterMetricFamily(f"scim_drift_{column}", about, labels=["kind"])
            for kind, count in sorted(drift[column].items()):
                family.add_metric([kind], float(count))
            yield family
        yield CounterMetricFamily(
            "scim_graph_throttled",
            "Graph 429 answers to the sync workers (calls and $batch parts).",
            value=float(counters.get("graph_throttled") or 0),
        )
