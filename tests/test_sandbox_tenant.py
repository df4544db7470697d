"""The sandbox tenant (`serve --sandbox`) outlives a restart of the sync worker."""

from __future__ import annotations

from flask import Flask

from scim_server.graph.client import GraphClient
from scim_server.sync import runtime
from scim_server.sync.settings import SyncSettings


def test_the_sandbox_keeps_its_tenant_across_restarts(app: Flask) -> None:
    sync = SyncSettings(sync_domains=("example.com",))
    first = runtime.target(app, sync)
    try:
        created = GraphClient(first.settings).create_user(
            {
                "accountEnabled": True,
                "displayName": "Kept",
                "mailNickname": "kept",
                "userPrincipalName": "kept@example.com",
                "passwordProfile": {
                    "password": "Kept-Pa55word!",
                    "forceChangePasswordNextSignIn": True,
                },
            }
        )
    finally:
        first.emulator.stop()
    second = runtime.target(app, sync)
    try:
        assert second.settings.tenant_id == first.settings.tenant_id
        kept = GraphClient(second.settings).get_user(created["id"], ["userPrincipalName"])
        assert kept["userPrincipalName"] == "kept@example.com"
    finally:
        second.emulator.stop()
