"""Graph connection settings, from the environment only (`GRAPH_*`).

Pointing the client at the emulator changes these settings, never a code path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scim_server.config import ConfigError

MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
MICROSOFT_GRAPH = "https://graph.microsoft.com/v1.0"
# Authority hosts msal knows; any other host needs instance discovery off (graph.md, msal).
KNOWN_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.microsoftonline.de",
        "login.windows.net",
        "login.microsoft.com",
        "sts.windows.net",
    }
)


@dataclass(frozen=True)
class GraphSettings:
    tenant_id: str
    client_id: str
    client_secret: str | None = None
    cert_path: str | None = None
    cert_passphrase: str | None = None
    authority_host: str = MICROSOFT_AUTHORITY
    graph_url: str = MICROSOFT_GRAPH
    ca_bundle: str | None = None
    timeout: float = 30.0

    def __repr__(self) -> str:  # never show the secret or the passphrase
        return (
            f"GraphSettings(tenant_id={self.tenant_id!r}, client_id={self.client_id!r}, "
            f"authority_host={self.authority_host!r}, graph_url={self.graph_url!r})"
        )

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    @property
    def scope(self) -> str:
        """`https://graph.microsoft.com/.default`: the Graph origin's default scope."""
        parts = urlsplit(self.graph_url)
        return f"{parts.scheme}://{parts.netloc}/.default"

    @property
    def instance_discovery(self) -> bool:
        return (urlsplit(self.authority_host).hostname or "") in KNOWN_AUTHORITY_HOSTS

    @property
    def verify(self) -> str | bool:
        return self.ca_bundle or True


def from_env(environ: Mapping[str, str] | None = None) -> GraphSettings | None:
    """The settings, or None when `GRAPH_TENANT_ID` is unset (Graph sync is off)."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    tenant = get("GRAPH_TENANT_ID")
    if tenant is None:
        return None
    client_id = get("GRAPH_CLIENT_ID")
    if client_id is None:
        raise ConfigError("GRAPH_CLIENT_ID is required when GRAPH_TENANT_ID is set")
    secret, cert = get("GRAPH_CLIENT_SECRET"), get("GRAPH_CLIENT_CERT_PATH")
    if (secret is None) == (cert is None):
        raise ConfigError("Set exactly one of GRAPH_CLIENT_SECRET and GRAPH_CLIENT_CERT_PATH")
    if cert is not None and not Path(cert).is_file():
        raise ConfigError(f"GRAPH_CLIENT_CERT_PATH is not a file: {cert}")
    authority_host, ca_bundle, timeout = identity_endpoint(env)
    graph_url = (get("GRAPH_URL") or MICROSOFT_GRAPH).rstrip("/")
    if urlsplit(graph_url).scheme not in ("https", "http"):
        raise ConfigError(f"GRAPH_URL must be an http(s) URL, got {graph_url!r}")
    return GraphSettings(
        tenant_id=tenant,
        client_id=client_id,
        client_secret=secret,
        cert_path=cert,
        cert_passphrase=get("GRAPH_CLIENT_CERT_PASSPHRASE"),
        authority_host=authority_host,
        graph_url=graph_url,
        ca_bundle=ca_bundle,
        timeout=timeout,
    )


def identity_endpoint(environ: Mapping[str, str] | None = None) -> tuple[str, str | None, float]:
    """GRAPH_AUTHORITY_HOST, GRAPH_CA_BUNDLE and GRAPH_TIMEOUT_SECONDS, checked: where Entra's
    sign-in endpoints are (msal's authority, and the OpenID configuration and signing keys
    that scim_server/entra.py reads), the CA to trust there, and the timeout of each call."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    authority_host = get("GRAPH_AUTHORITY_HOST") or MICROSOFT_AUTHORITY
    # msal accepts only https authorities; say so now rather than at the first token.
    if urlsplit(authority_host).scheme != "https":
        raise ConfigError(f"GRAPH_AUTHORITY_HOST must be an https URL, got {authority_host!r}")
    ca_bundle = get("GRAPH_CA_BUNDLE")
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise ConfigError(f"GRAPH_CA_BUNDLE is not a file: {ca_bundle}")
    timeout_raw = get("GRAPH_TIMEOUT_SECONDS") or "30"
    try:
        timeout = float(timeout_raw)
    except ValueError:
        raise ConfigError(f"GRAPH_TIMEOUT_SECONDS must be a number, got {timeout_raw!r}") from None
    if timeout <= 0:
        raise ConfigError("GRAPH_TIMEOUT_SECONDS must be positive")
    return authority_host.rstrip("/"), ca_bundle, timeout


def from_startup_line(info: Mapping[str, Any]) -> GraphSettings:
    """The settings an emulator's start-up line gives (`scim-server graph-emulator`)."""
    return GraphSettings(
        tenant_id=str(info["tenant_id"]),
        client_id=str(info["client_id"]),
        client_secret=str(info["client_secret"]),
        authority_host=str(info["authority_host"]),
        graph_url=str(info["graph_url"]),
        ca_bundle=info.get("ca_bundle"),
    )


TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


def sandbox_requested(environ: Mapping[str, str] | None = None) -> bool:
    """GRAPH_SANDBOX: deliver to the built-in emulator (`--sandbox` sets it)."""
    env = os.environ if environ is None else environ
    raw = env.get("GRAPH_SANDBOX", "").strip().lower()
    if raw not in TRUE + FALSE:
        raise ConfigError(f"GRAPH_SANDBOX must be true or false, got {raw!r}")
    return raw in TRUE


def choose_target(environ: Mapping[str, str] | None = None) -> GraphSettings | None:
    """Where the sync delivers: a tenant's settings, or None for the sandbox. The sandbox is
    never a fallback: with neither a tenant nor the sandbox asked for, ConfigError."""
    settings = from_env(environ)
    sandbox = sandbox_requested(environ)
    if settings is not None and sandbox:
        raise ConfigError(
            "GRAPH_TENANT_ID is set and so is GRAPH_SANDBOX (or --sandbox): choose one target"
        )
    if settings is None and not sandbox:
        raise ConfigError(
            "no Microsoft 365 target: set GRAPH_TENANT_ID (with GRAPH_CLIENT_ID and a "
            "credential), or run with --sandbox (GRAPH_SANDBOX=1) to deliver to the built-in "
            "emulator"
        )
    return settings
