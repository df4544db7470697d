"""Which users the sync provisions: the domains of M365_SYNC_DOMAINS, checked against the
tenant's, and which of them are federated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scim_server.graph.client import GraphClient
from scim_server.sync import mapping


class ScopeError(RuntimeError):
    """M365_SYNC_DOMAINS names a domain the tenant cannot take users on."""


@dataclass(frozen=True)
class Scope:
    domains: tuple[str, ...]  # users are provisioned on these
    # Of those, the federated ones: their passwords live with the federation's identity
    # provider, so the directory never sends them (graph.md, "Federated domains").
    federated: frozenset[str] = frozenset()

    def includes(self, properties: dict[str, Any]) -> bool:
        """Whether a user's Graph properties put it on a provisioned domain."""
        return mapping.domain_of(properties.get("userPrincipalName")) in self.domains

    def is_federated(self, properties: dict[str, Any]) -> bool:
        return mapping.domain_of(properties.get("userPrincipalName")) in self.federated


def scope(client: GraphClient, configured: tuple[str, ...]) -> Scope:
    """The domains users are provisioned on, checked against GET /domains: each must be a
    verified domain of the tenant. With none configured, the tenant's default domain."""
    domains = {str(d["id"]).lower(): d for d in client.domains()}
    if not configured:
        default = next((name for name, d in domains.items() if d.get("isDefault")), None)
        if default is None:
            raise ScopeError("The tenant reports no default domain; set M365_SYNC_DOMAINS.")
        configured = (default,)
    problems = []
    federated = set()
    for name in configured:
        found = domains.get(name)
        if found is None:
            problems.append(f"{name} is not a domain of the tenant")
        elif not found.get("isVerified"):
            problems.append(f"{name} is not verified in the tenant")
        elif str(found.get("authenticationType", "Managed")).lower() == "federated":
            federated.add(name)
    if problems:
        raise ScopeError("M365_SYNC_DOMAINS: " + "; ".join(problems) + ".")
    return Scope(configured, frozenset(federated))


def sync_domains(client: GraphClient, configured: tuple[str, ...]) -> tuple[str, ...]:
    return scope(client, configured).domains
