"""Every setting, read from one named environment variable and checked at start-up."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """An integer setting; ConfigError names the variable."""
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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (any case); ConfigError names the variable and the choices."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    if raw.lower() not in (c.lower() for c in choices):
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def normalise_database_url(url: str) -> str:
    """`postgresql://…` and `postgres://…` work as written: we ship psycopg 3, so select it."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


SUPPORTED_DATABASES = ("sqlite:///", "postgresql+psycopg://")


def database_url(raw: str) -> str:
    """DATABASE_URL, normalised; ConfigError for a database this project does not run on.
    The message names the scheme only: the URL may hold a password."""
    url = normalise_database_url(raw.strip())
    if not url.startswith(SUPPORTED_DATABASES):
        scheme = url.partition("://")[0] if "://" in url else url[:20]
        raise ConfigError(
            "DATABASE_URL must be sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB, "
            f"not {scheme!r}"
        )
    return url


def instance_path() -> str | None:
    """SCIM_INSTANCE_PATH as an absolute path (Flask wants one), or None for Flask's own."""
    raw = os.environ.get("SCIM_INSTANCE_PATH", "").strip()
    return str(Path(raw).expanduser().resolve()) if raw else None


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
    public_url: str  # where users reach the portal: the base of activation links
    activation_ttl_hours: int
    portal_user_failures: int  # failed sign-ins of one user name before it is locked
    portal_address_failures: int  # … and of one client address
    portal_lockout_seconds: int  # the window failures are counted in, and the lock
    trusted_proxies: int  # reverse proxies in front: X-Forwarded-* set by them are believed
    auth_address_failures: int  # failed SCIM/OAuth authentications of one address before a lock
    auth_lockout_seconds: int  # the window they are counted in, and the lock
    oauth_token_lifetime_seconds: int  # the access tokens of POST /oauth/token
    entra_tenant_id: str | None  # accept Entra provisioning's own JWTs from this tenant
    log_level: str  # a logging level name: DEBUG, INFO, WARNING, ERROR or CRITICAL
    log_format: str  # text | json (one JSON object a line)
    readyz_max_pending_age_seconds: int  # /readyz: the oldest pending change may be this old
    sync_heartbeat_seconds: int  # how often a sync worker writes its heartbeat
    sync_heartbeat_max_age_seconds: int  # /readyz: the newest heartbeat may be this old
    outbox_retention_days: int  # delivered events are deleted this old; 0: kept for ever
    outbox_prune_seconds: int  # how often a sync worker process prunes the outbox
    # /metrics: the SHA-256 of METRICS_TOKEN, or None (open); the token itself is not kept.
    metrics_token_sha256: str | None

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
            "SCIM_PUBLIC_URL": self.public_url,
            "ACTIVATION_TTL_HOURS": self.activation_ttl_hours,
            "PORTAL_USER_FAILURES": self.portal_user_failures,
            "PORTAL_ADDRESS_FAILURES": self.portal_address_failures,
            "PORTAL_LOCKOUT_SECONDS": self.portal_lockout_seconds,
            "SCIM_TRUSTED_PROXIES": self.trusted_proxies,
            "SCIM_AUTH_ADDRESS_FAILURES": self.auth_address_failures,
            "SCIM_AUTH_LOCKOUT_SECONDS": self.auth_lockout_seconds,
            "SCIM_OAUTH_TOKEN_LIFETIME_SECONDS": self.oauth_token_lifetime_seconds,
            "SCIM_ENTRA_TENANT_ID": self.entra_tenant_id,
            "LOG_LEVEL": self.log_level,
            "LOG_FORMAT": self.log_format,
            "READYZ_MAX_PENDING_AGE_SECONDS": self.readyz_max_pending_age_seconds,
            "SYNC_HEARTBEAT_SECONDS": self.sync_heartbeat_seconds,
            "SYNC_HEARTBEAT_MAX_AGE_SECONDS": self.sync_heartbeat_max_age_seconds,
            "OUTBOX_RETENTION_DAYS": self.outbox_retention_days,
            "OUTBOX_PRUNE_SECONDS": self.outbox_prune_seconds,
            "METRICS_TOKEN_SHA256": self.metrics_token_sha256,
        }


MAX_RETENTION_DAYS = 36500  # a century: beyond it, "for ever" is 0


def load(instance_path: str) -> Settings:
    default_db = "sqlite:///" + str(Path(instance_path) / "scim.sqlite3")
    max_page = env_int("SCIM_MAX_PAGE_SIZE", 1000)
    heartbeat = env_int("SYNC_HEARTBEAT_SECONDS", 5)
    heartbeat_max_age = env_int("SYNC_HEARTBEAT_MAX_AGE_SECONDS", 60)
    if heartbeat_max_age < 2 * heartbeat:
        # One late beat must not make the service look unready.
        raise ConfigError(
            f"SYNC_HEARTBEAT_MAX_AGE_SECONDS must be at least twice SYNC_HEARTBEAT_SECONDS "
            f"({2 * heartbeat}), got {heartbeat_max_age}"
        )
    retention = env_int("OUTBOX_RETENTION_DAYS", 7, minimum=0)
    if retention > MAX_RETENTION_DAYS:
        raise ConfigError(
            f"OUTBOX_RETENTION_DAYS must be at most {MAX_RETENTION_DAYS} (0 keeps delivered "
            f"events for ever), got {retention}"
        )
    return Settings(
        database_url=database_url(os.environ.get("DATABASE_URL") or default_db),
        max_page_size=max_page,
        default_page_size=min(env_int("SCIM_DEFAULT_PAGE_SIZE", 100), max_page),
        bulk_max_operations=env_int("SCIM_BULK_MAX_OPERATIONS", 1000),
        bulk_max_payload_size=env_int("SCIM_BULK_MAX_PAYLOAD_SIZE", 4 * 1024 * 1024),
        max_filter_results=max_page,
        max_request_size=env_int("SCIM_MAX_REQUEST_SIZE", 16 * 1024 * 1024),
        token_cache_seconds=env_int("SCIM_TOKEN_CACHE_SECONDS", 5, minimum=0),
        public_url=_url("SCIM_PUBLIC_URL", "http://127.0.0.1:8080"),
        activation_ttl_hours=env_int("ACTIVATION_TTL_HOURS", 72),
        portal_user_failures=env_int("PORTAL_USER_FAILURES", 5),
        portal_address_failures=env_int("PORTAL_ADDRESS_FAILURES", 20),
        portal_lockout_seconds=env_int("PORTAL_LOCKOUT_SECONDS", 900),
        trusted_proxies=env_int("SCIM_TRUSTED_PROXIES", 0, minimum=0),
        auth_address_failures=env_int("SCIM_AUTH_ADDRESS_FAILURES", 20),
        auth_lockout_seconds=env_int("SCIM_AUTH_LOCKOUT_SECONDS", 900),
        oauth_token_lifetime_seconds=_lifetime("SCIM_OAUTH_TOKEN_LIFETIME_SECONDS", 3600),
        entra_tenant_id=_tenant_id("SCIM_ENTRA_TENANT_ID"),
        log_level=env_choice("LOG_LEVEL", "INFO", LOG_LEVELS).upper(),
        log_format=env_choice("LOG_FORMAT", "text", LOG_FORMATS).lower(),
        readyz_max_pending_age_seconds=env_int("READYZ_MAX_PENDING_AGE_SECONDS", 900),
        sync_heartbeat_seconds=heartbeat,
        sync_heartbeat_max_age_seconds=heartbeat_max_age,
        outbox_retention_days=retention,
        outbox_prune_seconds=env_int("OUTBOX_PRUNE_SECONDS", 300),
        metrics_token_sha256=_secret_sha256("METRICS_TOKEN"),
    )


def _lifetime(name: str, default: int) -> int:
    value = env_int(name, default, minimum=60)
    if value > 86400:
        raise ConfigError(f"{name} must be at most 86400 (a day): access tokens are short-lived")
    return value


_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _tenant_id(name: str) -> str | None:
    """A directory (tenant) id: a GUID, as the token's issuer URL carries it."""
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return None
    if not _GUID.fullmatch(raw):
        raise ConfigError(f"{name} must be the tenant's directory id (a GUID), got {raw!r}")
    return raw.lower()


def _secret_sha256(name: str) -> str | None:
    """A secret setting kept only as its SHA-256, for constant-time comparison."""
    raw = os.environ.get(name) or ""
    if not raw:
        return None
    if len(raw) < 16:
        raise ConfigError(f"{name} must be at least 16 characters long")
    return hashlib.sha256(raw.encode()).hexdigest()


def _url(name: str, default: str) -> str:
    raw = (os.environ.get(name) or default).strip().rstrip("/")
    if not raw.startswith(("http://", "https://")) or "://" not in raw or raw.endswith("://"):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {raw!r}")
    return raw
