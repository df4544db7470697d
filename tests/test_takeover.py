"""`scim-server m365 import`: existing M365 accounts are matched, bound or created, or skipped
with a reason; after the bind the directory's values overwrite the account (the takeover)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from models import M365Link
from scim_server.db import db
from scim_server.graph.client import GraphClient
from scim_server.sync.pacer import Pacer
from scim_server.sync.policy import Policy
from scim_server.sync.settings import SyncSettings
from scim_server.sync.worker import Worker
from tests.conftest import ScimClient
from tests.graph_emulator import RunningEmulator, settings_for


@pytest.fixture
def tenant(tenant_env: RunningEmulator) -> RunningEmulator:
    em = tenant_env
    em.create_user("adele", givenName="Adele", surname="Vance", mail="adele@example.com")
    em.create_user("Megan", givenName="Megan", mail="megan.b@example.com")
    em.create_user("newbie", givenName="New", surname="Bie")
    em.create_user("off", accountEnabled=False)
    em.create_user("partner", userType="Guest")
    em.create_user("elsewhere", userPrincipalName="elsewhere@contoso.com")
    return em


def _links(app: Flask) -> dict[str, str]:
    with app.app_context():
        rows = db.session.execute(select(M365Link.resource_id, M365Link.object_id)).all()
        db.session.remove()
    return {rid: oid for rid, oid in rows if oid}


def test_import_matches_binds_creates_and_skips_then_takes_over(
    scim: ScimClient, app: Flask, tenant: RunningEmulator
) -> None:
    adele = scim.user("ADELE@example.com", displayName="Adele V. (directory)")
    megan = scim.user(
        "megan", emails=[{"value": "Megan.B@example.com", "type": "work", "primary": True}]
    )
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["m365", "import", "--bind", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    out = dry.output
    assert f"bind    adele@example.com -> directory user {adele['id']}" in out
    assert f"-> directory user {megan['id']}" in out  # matched by primary email, any case
    assert "create  newbie@example.com" in out
    assert "skip    off@example.com: disabled in Microsoft 365" in out
    assert "skip    partner@example.com: a guest account" in out
    assert "skip    elsewhere@contoso.com: out of scope" in out
    assert "2 to bind, 1 to create and bind" in out
    assert _links(app) == {}  # a dry run changes nothing

    done = runner.invoke(args=["m365", "import", "--bind", "--yes"])
    assert done.exit_code == 0, done.output
    links = _links(app)
    assert len(links) == 3
    newbie = scim.get('/Users?filter=userName eq "newbie@example.com"').get_json()["Resources"][0]
    assert newbie["name"] == {"givenName": "New", "familyName": "Bie"}
    assert newbie["emails"][0]["value"] == "newbie@example.com"

    again = runner.invoke(args=["m365", "import", "--bind", "--dry-run"])
    assert "0 to bind, 0 to create and bind" in again.output
    assert "already bound to directory user" in again.output

    worker = Worker(
        app,
        GraphClient(settings_for(tenant)),
        SyncSettings(sync_domains=("example.com",)),
        ("example.com",),
        pacer=Pacer(1000),
        policy=Policy(max_attempts=3, base_seconds=0.02, cap_seconds=0.1),
        rng=random.Random(1),
    )
    assert worker.drain()
    accounts: dict[str, Any] = {
        o["props"]["userPrincipalName"].lower(): o
        for o in tenant.state()["objects"]
        if o["kind"] == "user"
    }
    # The takeover: the directory's values now, and no account created twice.
    assert accounts["adele@example.com"]["props"]["displayName"] == "Adele V. (directory)"
    assert len([u for u in accounts if u.startswith("newbie")]) == 1
    assert accounts["newbie@example.com"]["id"] in links.values()


def test_import_without_a_tenant_says_so(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAPH_TENANT_ID", raising=False)
    result = app.test_cli_runner().invoke(args=["m365", "import", "--dry-run"])
    assert result.exit_code != 0
    assert "GRAPH_TENANT_ID" in str(result.exception) + result.output


def test_import_without_bind_only_creates_directory_users(
    scim: ScimClient, app: Flask, tenant: RunningEmulator
) -> None:
    scim.user("adele@example.com")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["m365", "import", "--yes"])
    assert result.exit_code == 0, result.output
    assert "match   adele@example.com" in result.output
    assert "1 matched (not bound without --bind), 2 to create" in result.output
    assert _links(app) == {}
    found = scim.get('/Users?filter=userName eq "newbie@example.com"').get_json()
    assert found["totalResults"] == 1
