"""Sync settings (`M365_*`), from the environment only, checked at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from scim_server.config import ConfigError

DELETE_POLICIES = ("disable", "delete", "ignore")
CONFLICT_POLICIES = ("bind", "fail")


@dataclass(frozen=True)
class SyncSettings:
    # Lower-cased domains; empty means "the tenant's default verified domain".
    sync_domains: tuple[str, ...] = ()
    delete_policy: str = "disable"
    on_conflict: str = "fail"
    usage_location: str | None = None
    write_rate: float = 18.0  # writes per second; Graph allows 3,000 per 150 s (20/s)
    max_attempts: int = 8
    lease_seconds: int = 120
    batch_size: int = 20


def from_env(environ: Mapping[str, str] | None = None) -> SyncSettings:
    env = os.environ if environ is None else environ

    def get(name: str) -> str:
        return env.get(name, "").strip()

    domains = tuple(d.strip().lower() for d in get("M365_SYNC_DOMAINS").split(",") if d.strip())
    delete_policy = get("M365_DELETE_POLICY").lower() or "disable"
    if delete_policy not in DELETE_POLICIES:
        raise ConfigError(f"M365_DELETE_POLICY must be one of {', '.join(DELETE_POLICIES)}")
    on_conflict = get("M365_ON_CONFLICT").lower() or "fail"
    if on_conflict not in CONFLICT_POLICIES:
        raise ConfigError(f"M365_ON_CONFLICT must be one of {', '.join(CONFLICT_POLICIES)}")
    usage = get("M365_USAGE_LOCATION").upper() or None
    if usage is not None and (len(usage) != 2 or not usage.isalpha()):
        raise ConfigError("M365_USAGE_LOCATION must be a two-letter ISO country code, e.g. GB")
    try:
        rate = float(get("M365_WRITE_RATE") or 18.0)
        attempts = int(get("M365_MAX_ATTEMPTS") or 8)
        lease = int(get("M365_LEASE_SECONDS") or 120)
    except ValueError:
        raise ConfigError(
            "M365_WRITE_RATE, M365_MAX_ATTEMPTS and M365_LEASE_SECONDS must be numbers"
        ) from None
    if rate <= 0 or attempts < 1 or lease < 5:
        raise ConfigError(
            "M365_WRITE_RATE must be positive, M365_MAX_ATTEMPTS at least 1 and "
            "M365_LEASE_SECONDS at least 5"
        )
    return SyncSettings(
        sync_domains=domains,
        delete_policy=delete_policy,
        on_conflict=on_conflict,
        usage_location=usage,
        write_rate=rate,
        max_attempts=attempts,
        lease_seconds=lease,
    )
