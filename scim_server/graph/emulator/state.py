"""The running emulator's state: options, the tenant, the write budgets, faults, the request
log and the token issuer, behind one lock."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from scim_server.graph.emulator.control import (
    FaultQueue,
    RequestLog,
    SentMail,
    checked_int,
    checked_number,
)
from scim_server.graph.emulator.store import StateFile
from scim_server.graph.emulator.tenant import Domain, Tenant
from scim_server.graph.emulator.throttle import Budgets
from scim_server.graph.emulator.tokens import SigningKeys, TokenIssuer

MAX_REPLICATION_LAG = 86_400.0  # seconds
MAIL_BUDGET = 10_000
MAIL_WINDOW = 600.0  # seconds
MAX_CLOCK_ADVANCE = 366 * 86_400.0  # seconds: a year at a time
MAX_WRITE_WINDOW = 86_400.0  # seconds


@dataclass
class EmulatorOptions:
    domains: list[str] = field(default_factory=lambda: ["example.com"])
    federated_domains: list[str] = field(default_factory=list)
    unverified_domains: list[str] = field(default_factory=list)
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    client_certificate: x509.Certificate | None = None
    replication_lag: float = 0.0
    write_budget: int = 3000  # per app and tenant (Graph's identity write limit)
    write_window: float = 150.0  # seconds
    state_file: Path | None = None
    control: bool = False

    def initial_domain(self) -> str:
        return f"emulator{self.tenant_id.replace('-', '')[:8]}.onmicrosoft.com"


def build_domains(options: EmulatorOptions) -> list[Domain]:
    initial = Domain(options.initial_domain(), isInitial=True, supportedServices=["Email"])
    managed = [Domain(name) for name in options.domains]
    federated = [Domain(name, authenticationType="Federated") for name in options.federated_domains]
    unverified = [Domain(name, isVerified=False) for name in options.unverified_domains]
    (managed or [initial])[0].isDefault = True
    return [initial, *managed, *federated, *unverified]


class Emulator:
    def __init__(self, options: EmulatorOptions) -> None:
        self.options = options
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        # The tenant's clock: the wall clock, plus what a test moved it on by (clock control).
        self.clock_offset = 0.0
        self.tenant = Tenant(
            options.tenant_id,
            build_domains(options),
            replication_lag=options.replication_lag,
            clock=self.now,
        )
        self.budgets = Budgets(options.write_budget, options.write_window)
        # Outlook's own budget, apart from the directory's: 10,000 requests per 10 minutes
        # per app and mailbox (https://learn.microsoft.com/graph/throttling-limits,
        # "Outlook service limits").
        self.mail_budgets = Budgets(MAIL_BUDGET, MAIL_WINDOW)
        self.outbox = SentMail()
        self.faults = FaultQueue()
        self.log = RequestLog()
        self.issuer = TokenIssuer()
        self.signing_keys = SigningKeys()  # RS256, published at the tenant's jwks_uri
        self.base_url = ""  # scheme://host:port, set once the server is bound
        self.store = StateFile(options.state_file) if options.state_file else None
        if self.store:
            saved = self.store.load()
            if saved and saved.get("tenant_id") == options.tenant_id:
                self.tenant.load(saved)
            self.persist()

    def close(self) -> None:
        """Release the state file (the server has stopped serving)."""
        with self.lock:
            store, self.store = self.store, None
        if store:
            store.close()

    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance(self, seconds: float) -> float:
        """Move the tenant's clock on (replication lag ends, password stamps change) without
        waiting; returns how far it is ahead of the wall clock now."""
        with self.lock:
            self.clock_offset += seconds
            return self.clock_offset

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    @property
    def domain_names(self) -> list[str]:
        return [d.id for d in self.tenant.domains.values()]

    def persist(self) -> None:
        with self.lock:
            if self.store is None:
                return
            changes = self.tenant.take_changes()
            if changes is None:  # nothing to write (a read-only start, a no-op)
                return
            try:
                self.store.save(changes)
            except BaseException:
                self.tenant.save_whole_next()  # the file missed these changes: all, next time
                raise

    def reset(self) -> None:
        with self.lock:
            self.tenant.clear()
            self.outbox.clear()
            self.clock_offset = 0.0
            self.tenant.replication_lag = self.options.replication_lag
            self.budgets.configure(self.options.write_budget, self.options.write_window)
            self.mail_budgets.configure(MAIL_BUDGET, MAIL_WINDOW)
            self.faults.clear()
            self.log.clear()
            self.persist()

    def configure(self, data: dict[str, Any]) -> dict[str, Any]:
        """Apply the control endpoint's settings: all are checked (type, finite, range)
        before any is applied, and a bad one is a ValueError (400)."""
        unknown = sorted(set(data) - {"replication_lag", "write_budget", "write_window"})
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        lag = None
        if "replication_lag" in data:
            lag = checked_number(data, "replication_lag", 0.0, MAX_REPLICATION_LAG)
        budget, window = self.budgets.capacity, self.budgets.window
        if "write_budget" in data:
            budget = checked_int(data, "write_budget", 1)
        if "write_window" in data:
            window = checked_number(data, "write_window", 0.0, MAX_WRITE_WINDOW, low_open=True)
        with self.lock:
            if lag is not None:
                self.tenant.replication_lag = lag
            if "write_budget" in data or "write_window" in data:
                self.budgets.configure(budget, window)
            return self.settings()

    def settings(self) -> dict[str, Any]:
        return {
            "replication_lag": self.tenant.replication_lag,
            "write_budget": self.budgets.capacity,
            "write_window": self.budgets.window,
        }

    def snapshot(self) -> dict[str, Any]:
        """The whole state for tests, with password hashes replaced by a flag."""
        with self.lock:
            data = self.tenant.to_dict()
        for obj in [*data["objects"], *data["deleted"]]:
            obj["has_password"] = bool(obj.pop("password_hash"))
        data["settings"] = self.settings()
        data["faults"] = self.faults.pending()
        return data
