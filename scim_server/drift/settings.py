"""Drift settings (`M365_DRIFT*`), from the environment only, checked at start-up by
preflight like every other setting."""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass

from scim_server.config import ConfigError


class Mode(enum.StrEnum):
    REPAIR = "repair"  # the directory is the source: put M365 back as it says
    REPORT = "report"  # only record and show what differs
    OFF = "off"  # no drift rounds


@dataclass(frozen=True)
class DriftSettings:
    mode: Mode = Mode.REPAIR
    interval_minutes: float = 30.0
    # Delta requests per second. Graph's identity read budget is 3,500-8,000 resource units
    # per 10 s per app and tenant (graph.md, "Identity and access budget"); a delta page
    # costs a few units, so 5 pages a second stays far below it, beside the sync's reads.
    read_rate: float = 5.0
    page_size: int = 999  # Prefer: odata.maxpagesize (delta-query-overview)
    lease_seconds: float = 300.0  # renewed at every page: a dead worker's lease runs out


def from_env(environ: Mapping[str, str] | None = None) -> DriftSettings:
    env = os.environ if environ is None else environ

    def get(name: str) -> str:
        return env.get(name, "").strip()

    raw = get("M365_DRIFT").lower() or Mode.REPAIR.value
    try:
        mode = Mode(raw)
    except ValueError:
        raise ConfigError(f"M365_DRIFT must be one of {', '.join(m.value for m in Mode)}") from None
    try:
        interval = float(get("M365_DRIFT_INTERVAL_MINUTES") or 30)
        rate = float(get("M365_DRIFT_READ_RATE") or 5)
    except ValueError:
        raise ConfigError(
            "M365_DRIFT_INTERVAL_MINUTES and M365_DRIFT_READ_RATE must be numbers"
        ) from None
    if not interval > 0 or interval != interval or interval == float("inf"):
        raise ConfigError("M365_DRIFT_INTERVAL_MINUTES must be a positive number of minutes")
    if not 0 < rate < float("inf"):
        raise ConfigError("M365_DRIFT_READ_RATE must be a positive number of requests per second")
    return DriftSettings(mode=mode, interval_minutes=interval, read_rate=rate)
