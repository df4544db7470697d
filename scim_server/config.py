"""Every setting, read from one named environment variable and checked at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def normalise_database_url(url: str) -> str:
    """`postgresql://…` and `postgres://…` work as written: we ship psycopg 3, so select it."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Settings:
    database_url: str
    max_page_size: int
    default_page_size: int
    bulk_max_operations: int
    bulk_max_payload_size: int
    max_filter_results: int
    max_request_size: int
    token_cache_seconds: int

    def to_flask(self) -> dict[str, Any]:
        return {
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "SCIM_MAX_PAGE_SIZE": self.max_page_size,
            "SCIM_DEFAULT_PAGE_SIZE": self.default_page_size,
            "SCIM_BULK_MAX_OPERATIONS": self.bulk_max_operations,
            "SCIM_BULK_MAX_PAYLOAD_SIZE": self.bulk_max_payload_size,
            # Werkzeug answers a larger body with 413 before it is read.
            "MAX_CONTENT_LENGTH": max(self.max_request_size, self.bulk_max_payload_size),
            "SCIM_TOKEN_CACHE_SECONDS": self.token_cache_seconds,
        }


def load(instance_path: str) -> Settings:
    default_db = "sqlite:///" + str(Path(instance_path) / "scim.sqlite3")
    max_page = _int("SCIM_MAX_PAGE_SIZE", 1000)
    return Settings(
        database_url=normalise_database_url(os.environ.get("DATABASE_URL") or default_db),
        max_page_size=max_page,
        default_page_size=min(_int("SCIM_DEFAULT_PAGE_SIZE", 100), max_page),
        bulk_max_operations=_int("SCIM_BULK_MAX_OPERATIONS", 1000),
        bulk_max_payload_size=_int("SCIM_BULK_MAX_PAYLOAD_SIZE", 4 * 1024 * 1024),
        max_filter_results=max_page,
        max_request_size=_int("SCIM_MAX_REQUEST_SIZE", 16 * 1024 * 1024),
        token_cache_seconds=_int("SCIM_TOKEN_CACHE_SECONDS", 5, minimum=0),
    )
