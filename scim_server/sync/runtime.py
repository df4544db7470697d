"""Wiring the sync engine for a process: the Graph target (a real tenant, or the sandbox
emulator when asked for with --sandbox or GRAPH_SANDBOX), the checked sync domains, and
worker threads."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import Engine as SAEngine

from models import utcnow
from scim_server import outbox
from scim_server.graph.client import GraphClient, GraphSession, GraphStats, TokenProvider
from scim_server.graph.settings import GraphSettings, choose_target, from_startup_line
from scim_server.sync import heartbeat
from scim_server.sync.budget import DatabaseBudget, SharedPacer
from scim_server.sync.scope import scope
from scim_server.sync.settings import SyncSettings
from scim_server.sync.settings import from_env as sync_from_env
from scim_server.sync.store import Store
from scim_server.sync.worker import Worker

log = logging.getLogger("scim_server.sync")

SANDBOX_DOMAIN = "example.com"


@dataclass
class Target:
    settings: GraphSettings
    sandbox: bool
    emulator: Any = None  # the in-process EmulatorServer of the sandbox

    def describe(self) -> str:
        if self.sandbox:
            return (
                "SANDBOX tenant: the built-in Graph emulator, not Microsoft 365 "
                f"(Graph at {self.settings.graph_url}). Set GRAPH_TENANT_ID to sync a real tenant."
            )
        return (
            f"Microsoft 365 tenant {self.settings.tenant_id} (Graph at {self.settings.graph_url})"
        )


def sandbox_domains(sync: SyncSettings) -> list[str]:
    return list(sync.sync_domains) or [SANDBOX_DOMAIN]


def target(app: Flask, sync: SyncSettings) -> Target:
    """The real tenant from GRAPH_*, else the sandbox emulator, started in this process with
    its tenant kept in the instance folder."""
    settings = choose_target()
    if settings is not None:
        return Target(settings, sandbox=False)
    from scim_server.graph.emulator.server import EmulatorServer
    from scim_server.graph.emulator.state import EmulatorOptions
    from scim_server.graph.emulator.store import saved_tenant_id

    state_file = sandbox_state_file(app)
    options = EmulatorOptions(domains=sandbox_domains(sync), state_file=state_file)
    # The emulator reloads a state file only for the tenant it was saved for: the sandbox
    # takes the saved tenant's id, else each start would begin an empty tenant.
    saved = saved_tenant_id(state_file)
    if saved:
        options = replace(options, tenant_id=saved)
    server = EmulatorServer(options, port=0, use_tls=True).start()
    return Target(from_startup_line(server.info), sandbox=True, emulator=server)


def sandbox_state_file(app: Flask) -> Path:
    """The sandbox tenant lives beside a SQLite directory (a new database, a new tenant),
    else in the instance folder."""
    from sqlalchemy import make_url

    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database + ".sandbox-tenant")
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    return Path(app.instance_path) / "sandbox-tenant.sqlite3"


@dataclass
class Engine:
    """The workers of a process, with its heartbeat and prune threads. None of them needs a
    Flask app context: with `app` (whose settings it reads once) the engine writes the
    process's heartbeat and prunes the outbox through `store`, made from the app unless
    given."""

    target: Target
    workers: list[Worker]
    app: Flask | None = None  # with it, the engine writes the process's heartbeat
    stats: GraphStats = field(default_factory=GraphStats)  # its Graph clients' calls
    store: Store | None = None
    threads: list[threading.Thread] = field(default_factory=list)  # one per worker, in order
    beating: threading.Thread | None = None  # the heartbeat's
    pruning: threading.Thread | None = None  # the outbox prune's
    drift: Any = None  # the drift rounds' scheduler (drift.schedule), unless M365_DRIFT=off
    stop: threading.Event = field(default_factory=threading.Event)
    worker_id: str = field(default_factory=heartbeat.process_id)
    started_at: datetime | None = None
    heartbeat_seconds: float = 5.0
    retention_days: int = 7
    prune_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.store is None and self.workers:
            self.store = self.workers[0].store
        if self.app is not None:
            if self.store is None:
                self.store = Store.of(self.app)
            config = self.app.config
            self.heartbeat_seconds = float(config.get("SYNC_HEARTBEAT_SECONDS", 5))
            self.retention_days = int(config.get("OUTBOX_RETENTION_DAYS", 7))
            self.prune_seconds = float(config.get("OUTBOX_PRUNE_SECONDS", 300))
        if self.started_at is None:
            self.started_at = self.store.clock() if self.store else utcnow()

    def start(self) -> Engine:
        if self.app is not None:
            self.beat()  # at once: /readyz sees a new worker without waiting
            self.beating = threading.Thread(
                target=self._beating, name="sync-heartbeat", daemon=True
            )
            self.beating.start()
            # A thread of its own: a long prune delays neither the beats nor deliveries.
            self.pruning = threading.Thread(target=self._pruning, name="sync-prune", daemon=True)
            self.pruning.start()
        for worker in self.workers:
            thread = threading.Thread(
                target=worker.run, args=(self.stop,), name=f"sync-{worker.name}", daemon=True
            )
            thread.start()
            self.threads.append(thread)
        if self.drift is not None:
            self.drift.start(self.stop)
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop: each thread ends the batch it is delivering (within `timeout` in all), and
        gives back the leases it still holds, so another worker takes its events at once."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(deadline - time.monotonic(), 0))
        if self.beating is not None:
            self.beating.join(max(deadline - time.monotonic(), 0))
        if self.pruning is not None:
            self.pruning.join(max(deadline - time.monotonic(), 0))
        if self.drift is not None:
            self.drift.join(max(deadline - time.monotonic(), 0))
        stopped = [w for w, t in zip(self.workers, self.threads, strict=True) if not t.is_alive()]
        released = sum(worker.store.release(worker.name) for worker in stopped)
        busy = len(self.threads) - len(stopped)
        log.info(
            "sync stopped: %d leases released%s",
            released,
            f", {busy} threads still delivering (their leases expire)" if busy else "",
        )
        if self.app is not None:
            self.beat(retire=True)
        if self.target.emulator is not None:
            self.target.emulator.stop()

    def counters(self) -> dict[str, Any]:
        """This process's counters since it started, as the heartbeat row keeps them."""
        delivered: dict[str, int] = {}
        for worker in self.workers:
            delivered = heartbeat.merge(delivered, dict(worker.counters.delivered_by_kind))
        return {"delivered": delivered, **self.stats.snapshot()}

    def beat(self, retire: bool = False) -> None:
        """Write the heartbeat; fold the rows of workers long dead (or, with `retire`, this
        one's, as it stops) into `retired`. A failure is logged: the workers go on."""
        assert self.store is not None and self.started_at is not None
        try:
            with self.store.transaction() as conn:
                target = "sandbox" if self.target.sandbox else self.target.settings.tenant_id
                heartbeat.beat(conn, self.worker_id, target, self.started_at, self.counters())
                heartbeat.fold(conn, [self.worker_id] if retire else None)
        except Exception:
            log.exception("sync heartbeat of %s failed", self.worker_id)

    def _beating(self) -> None:
        while not self.stop.wait(self.heartbeat_seconds):
            self.beat()

    def prune(self) -> int:
        """Delete the delivered events older than OUTBOX_RETENTION_DAYS (0: none), in small
        batches, stopping between batches when the engine stops. A failure is logged."""
        assert self.store is not None
        days = self.retention_days
        if days <= 0:
            return 0
        before = self.store.clock() - timedelta(days=days)
        try:
            with self.store.engine.connect() as conn:
                deleted = outbox.prune(conn, before, stop=self.stop.is_set)
        except Exception:
            log.exception("outbox prune by %s failed", self.worker_id)
            return 0
        if deleted:
            log.info("outbox pruned: %d delivered events older than %d days", deleted, days)
        return deleted

    def _pruning(self) -> None:
        """Prune at start, then every OUTBOX_PRUNE_SECONDS."""
        while not self.stop.is_set():
            self.prune()
            if self.stop.wait(self.prune_seconds):
                break


def engine(app: Flask, concurrency: int = 1, name: str | None = None) -> Engine:
    """Workers for this process, sharing one msal app (token cache) and one count of Graph
    calls, and with every worker process of the target, one write budget (sync.budget).
    The workers' names hold the lease on the events they claim, so they are unique across
    processes and machines: `host:pid-i` by default."""
    sync = sync_from_env()
    where = target(app, sync)
    tokens = TokenProvider(
        where.settings, GraphSession(where.settings.verify, where.settings.timeout)
    )
    stats = GraphStats()
    probe = GraphClient(where.settings, tokens=tokens, stats=stats)
    found = scope(probe, sync.sync_domains)
    # Graph's write budget is per app and tenant: every worker process shares it (budget).
    budget_key = "sandbox" if where.sandbox else where.settings.tenant_id
    store = Store.of(app)
    budget = DatabaseBudget(store.engine, budget_key, sync.write_rate)
    pacer = SharedPacer(budget, sync.write_rate)
    prefix = name or heartbeat.process_id()[-60:]  # outbox.locked_by holds 64 characters
    workers = [
        Worker(
            store,
            GraphClient(where.settings, tokens=tokens, stats=stats),
            sync,
            found.domains,
            name=f"{prefix}-{i}",
            pacer=pacer,
            federated=found.federated,
            instance_path=app.instance_path,
        )
        for i in range(concurrency)
    ]
    log.warning("%s; provisioning users on %s", where.describe(), ", ".join(found.domains))
    for domain in sorted(found.federated):
        log.warning("%s is federated: its users are synced without passwords", domain)
    drift = drift_scheduler(store.engine, where, tokens, stats, sync, found.domains, prefix)
    return Engine(where, workers, app=app, stats=stats, store=store, drift=drift)


def drift_scheduler(
    database: SAEngine,
    where: Target,
    tokens: TokenProvider,
    stats: GraphStats,
    sync: SyncSettings,
    domains: tuple[str, ...],
    holder: str,
) -> Any:
    """The drift rounds of this process (M365_DRIFT), on their own Graph client and
    connections (no app context); None when M365_DRIFT=off."""
    from scim_server.drift import settings as drift_settings
    from scim_server.drift.rounds import Drift
    from scim_server.drift.schedule import Scheduler

    settings = drift_settings.from_env()
    if settings.mode is drift_settings.Mode.OFF:
        return None
    drift = Drift(
        database,
        GraphClient(where.settings, tokens=tokens, stats=stats),
        "sandbox" if where.sandbox else where.settings.tenant_id,
        settings,
        domains=domains,
        usage_location=sync.usage_location,
        holder=f"{holder}-drift",
    )
    return Scheduler(drift)
