"""End to end: SCIM requests in, the outbox worker delivers, and the emulator's tenant ends up
as the directory says. The production Graph client talks to the emulator over HTTPS."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, has_app_context
from sqlalchemy import func, select

from models import M365Link, OutboxEvent
from scim_server.config import normalise_database_url
from scim_server.db import db
from scim_server.graph.client import GraphClient
from scim_server.sync import store
from scim_server.sync.pacer import Pacer
from scim_server.sync.policy import Policy
from scim_server.sync.settings import SyncSettings
from scim_server.sync.store import Store
from scim_server.sync.worker import Scope, ScopeError, Worker, scope, sync_domains
from tests.conftest import ScimClient
from tests.graph_emulator import RunningEmulator, settings_for
from tests.helpers import patch_ops

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

MakeWorker = Callable[..., Worker]


@pytest.fixture
def worker(make_worker: MakeWorker) -> Worker:
    return make_worker()


def _objects(emulator: RunningEmulator, kind: str) -> list[dict[str, Any]]:
    """The emulator tenant's live objects of a kind, as Graph properties plus `managerId`
    and `members`."""
    return [
        {**o["props"], "managerId": o["manager_id"], "members": o["members"]}
        for o in emulator.state()["objects"]
        if o["kind"] == kind and not o["deleted_at"]
    ]


def _m365_user(emulator: RunningEmulator, upn: str) -> dict[str, Any] | None:
    found = [u for u in _objects(emulator, "user") if u["userPrincipalName"].lower() == upn.lower()]
    assert len(found) <= 1, found  # never a duplicate
    return found[0] if found else None


def _m365_group(emulator: RunningEmulator, name: str) -> dict[str, Any] | None:
    return next((g for g in _objects(emulator, "group") if g["displayName"] == name), None)


def _link(app: Flask, rid: str) -> M365Link | None:
    with app.app_context():
        row = db.session.scalar(select(M365Link).where(M365Link.resource_id == rid))
        if row is not None:
            db.session.expunge(row)
        return row


def _graph_calls(emulator: RunningEmulator, method: str, fragment: str) -> int:
    return sum(1 for r in emulator.request_log() if r["method"] == method and fragment in r["path"])


def test_a_scim_user_appears_in_m365(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    user = scim.user(
        "adele@example.com",
        name={"givenName": "Adele", "familyName": "Vance"},
        title="Engineer",
        **{ENTERPRISE: {"department": "R&D", "employeeNumber": "42"}},
    )
    assert worker.drain()
    m365 = _m365_user(graph_emulator, "adele@example.com")
    assert m365 is not None
    assert (m365["givenName"], m365["surname"], m365["jobTitle"]) == ("Adele", "Vance", "Engineer")
    assert (m365["department"], m365["employeeId"], m365["accountEnabled"]) == ("R&D", "42", True)
    link = _link(app, user["id"])
    assert link is not None and link.state == "synced" and link.object_id == m365["id"]


def test_ten_patches_waiting_become_one_graph_patch(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    user = scim.user("coalesce@example.com")
    assert worker.drain()
    for i in range(10):
        scim.patch(
            f"/Users/{user['id']}", patch_ops({"op": "replace", "path": "title", "value": f"T{i}"})
        )
    before = _graph_calls(graph_emulator, "PATCH", "/users/")
    assert worker.drain()
    assert _graph_calls(graph_emulator, "PATCH", "/users/") - before == 1
    m365 = _m365_user(graph_emulator, "coalesce@example.com")
    assert m365 is not None and m365["jobTitle"] == "T9"


def test_disable_revokes_sessions_and_delete_follows_the_policy(
    scim: ScimClient, make_worker: MakeWorker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    worker = make_worker()
    kept = scim.user("kept@example.com")
    gone = scim.user("gone@example.com")
    assert worker.drain()
    scim.patch(
        f"/Users/{kept['id']}", patch_ops({"op": "replace", "path": "active", "value": False})
    )
    assert worker.drain()
    m365 = _m365_user(graph_emulator, "kept@example.com")
    assert m365 is not None and m365["accountEnabled"] is False
    assert _graph_calls(graph_emulator, "POST", "/revokeSignInSessions") == 1

    # Default policy: disable, never destroy the mailbox by surprise.
    assert scim.delete(f"/Users/{gone['id']}").status_code == 204
    assert worker.drain()
    m365 = _m365_user(graph_emulator, "gone@example.com")
    assert m365 is not None and m365["accountEnabled"] is False
    assert _link(app, gone["id"]) is None

    deleting = make_worker(delete_policy="delete")
    assert scim.delete(f"/Users/{kept['id']}").status_code == 204
    assert deleting.drain()
    assert _m365_user(graph_emulator, "kept@example.com") is None


def test_out_of_scope_users_stay_in_the_directory_then_join_when_their_email_does(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    user = scim.user("outsider@elsewhere.example")
    assert worker.drain()
    assert _m365_user(graph_emulator, "outsider@elsewhere.example") is None
    link = _link(app, user["id"])
    assert link is not None and link.state == "out_of_scope"

    scim.patch(
        f"/Users/{user['id']}",
        patch_ops({"op": "replace", "path": "userName", "value": "insider@example.com"}),
    )
    assert worker.drain()
    assert _m365_user(graph_emulator, "insider@example.com") is not None
    # And out again: the delete policy (disable).
    scim.patch(
        f"/Users/{user['id']}",
        patch_ops({"op": "replace", "path": "userName", "value": "outsider@elsewhere.example"}),
    )
    assert worker.drain()
    m365 = _m365_user(graph_emulator, "insider@example.com")
    assert m365 is not None and m365["accountEnabled"] is False


def test_an_existing_account_is_reported_or_bound_never_duplicated(
    scim: ScimClient, make_worker: MakeWorker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    existing = graph_emulator.create_user("taken", jobTitle="Old")
    user = scim.user("taken@example.com", title="New")
    assert make_worker().drain()
    link = _link(app, user["id"])
    assert link is not None and link.state == "conflict" and link.object_id is None
    assert "already exists" in (link.last_error or "")

    scim.patch(
        f"/Users/{user['id']}", patch_ops({"op": "replace", "path": "title", "value": "Newer"})
    )
    assert make_worker(on_conflict="bind").drain()
    link = _link(app, user["id"])
    assert link is not None and (link.state, link.object_id) == ("synced", existing["id"])
    m365 = _m365_user(graph_emulator, "taken@example.com")
    assert m365 is not None and m365["jobTitle"] == "Newer"


def test_manager(scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator) -> None:
    boss = scim.user("boss@example.com")
    report = scim.user("report@example.com", **{ENTERPRISE: {"manager": {"value": boss["id"]}}})
    assert worker.drain()
    m365_boss = _m365_user(graph_emulator, "boss@example.com")
    m365_report = _m365_user(graph_emulator, "report@example.com")
    assert m365_boss and m365_report
    assert m365_report.get("managerId") == m365_boss["id"]
    scim.patch(
        f"/Users/{report['id']}", patch_ops({"op": "remove", "path": f"{ENTERPRISE}:manager"})
    )
    assert worker.drain()
    m365_report = _m365_user(graph_emulator, "report@example.com")
    assert m365_report is not None and not m365_report.get("managerId")


def test_groups_and_memberships(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    a, b, c = (scim.user(f"{n}@example.com") for n in ("ga", "gb", "gc"))
    outsider = scim.user("gx@elsewhere.example")
    group = scim.group("Sales", members=[a["id"], b["id"], outsider["id"]])
    assert worker.drain()

    def members() -> set[str]:
        m365 = _m365_group(graph_emulator, "Sales")
        assert m365 is not None and m365["securityEnabled"] and not m365["mailEnabled"]
        ids = {u["id"]: u["userPrincipalName"] for u in _objects(graph_emulator, "user")}
        return {ids[m] for m in m365["members"]}

    assert members() == {"ga@example.com", "gb@example.com"}
    scim.patch(
        f"/Groups/{group['id']}",
        patch_ops(
            {"op": "add", "path": "members", "value": [{"value": c["id"]}]},
            {"op": "remove", "path": f'members[value eq "{a["id"]}"]'},
        ),
    )
    assert worker.drain()
    assert members() == {"gb@example.com", "gc@example.com"}
    scim.patch(
        f"/Groups/{group['id']}",
        patch_ops({"op": "replace", "path": "displayName", "value": "Sales EMEA"}),
    )
    assert worker.drain()
    assert _m365_group(graph_emulator, "Sales EMEA") is not None
    assert scim.delete(f"/Groups/{group['id']}").status_code == 204
    assert worker.drain()
    assert _m365_group(graph_emulator, "Sales EMEA") is None


def test_graph_down_in_the_middle_of_a_burst_of_1000_changes(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    users = [scim.user(f"burst{i:03}@example.com") for i in range(500)]
    # Enough patience for the outage below; a shorter one would dead-letter changes.
    worker.policy = Policy(max_attempts=60, base_seconds=0.02, cap_seconds=0.1)
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop, 0.02))
    running.start()
    try:
        for i, user in enumerate(users):
            scim.patch(
                f"/Users/{user['id']}",
                patch_ops({"op": "replace", "path": "title", "value": f"v{i}"}),
            )
            if i == 150:  # Graph goes down for a while, mid-burst
                graph_emulator.fault(kind="status", status=503, count=40, path="/v1.0/")
    finally:
        stop.set()
        running.join()
    assert worker.drain(timeout=120)  # and then whatever is left
    assert worker.counters.graph_errors.get("Transient", 0) > 0
    m365 = {u["userPrincipalName"]: u for u in _objects(graph_emulator, "user")}
    assert len(m365) == 500  # nothing lost, nothing twice
    assert all(m365[u["userName"]]["jobTitle"] == f"v{i}" for i, u in enumerate(users))
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(OutboxEvent.status != "done")) == 0


def test_replication_lag_is_retried(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    graph_emulator.configure(replication_lag=0.3)
    boss = scim.user("lagboss@example.com")
    scim.user("lagreport@example.com", **{ENTERPRISE: {"manager": {"value": boss["id"]}}})
    assert worker.drain(timeout=30)
    report = _m365_user(graph_emulator, "lagreport@example.com")
    m365_boss = _m365_user(graph_emulator, "lagboss@example.com")
    assert report and m365_boss and report.get("managerId") == m365_boss["id"]


def test_a_change_graph_refuses_goes_to_the_dead_letters(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    user = scim.user("zoë@example.com")  # Graph allows no accents in a UPN
    assert worker.drain()
    with app.app_context():
        dead = db.session.scalars(select(OutboxEvent).where(OutboxEvent.status == "dead")).all()
        assert [e.resource_id for e in dead] == [user["id"]]
        assert "userPrincipalName" in (dead[0].last_error or "")
    link = _link(app, user["id"])
    assert link is not None and link.state == "error"
    # Fixed in the directory: the new state is delivered and covers the dead letter.
    scim.patch(
        f"/Users/{user['id']}",
        patch_ops({"op": "replace", "path": "userName", "value": "zoe@example.com"}),
    )
    assert worker.drain()
    link = _link(app, user["id"])
    assert link is not None and link.state == "synced" and link.last_error is None
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(OutboxEvent.status == "dead")) == 0


def test_sync_domains_are_checked_against_the_tenant(
    graph_emulator: RunningEmulator,
) -> None:
    client = GraphClient(settings_for(graph_emulator))
    assert sync_domains(client, ()) == ("example.com",)
    assert sync_domains(client, ("contoso.com",)) == ("contoso.com",)
    # A federated domain is in scope; its users are synced without passwords.
    both = scope(client, ("contoso.com", "federated.example"))
    assert both == Scope(("contoso.com", "federated.example"), frozenset({"federated.example"}))
    with pytest.raises(ScopeError, match="not verified"):
        sync_domains(client, ("unverified.example",))
    with pytest.raises(ScopeError, match="not a domain"):
        sync_domains(client, ("nowhere.example",))


M365 = "urn:ietf:params:scim:schemas:extension:m365:2.0:User"
M365_GROUP = "urn:ietf:params:scim:schemas:extension:m365:2.0:Group"


def test_the_m365_state_shows_in_scim(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    user = scim.user("shown@example.com", **{M365: {"usageLocation": "gb"}})
    assert user[M365] == {"schemas": [M365], "usageLocation": "GB"}  # no sync state yet
    outsider = scim.user("hidden@elsewhere.example")
    group = scim.group("Shown", members=[user["id"]])
    assert worker.drain()
    # Server-set, so returned only on request: a default read shows what the client wrote.
    assert scim.get(f"/Users/{user['id']}").get_json()[M365] == {"usageLocation": "GB"}
    assert M365_GROUP not in scim.get(f"/Groups/{group['id']}").get_json()
    got = scim.get(f"/Users/{user['id']}?attributes={M365}").get_json()
    m365 = _m365_user(graph_emulator, "shown@example.com")
    assert m365 is not None and m365["usageLocation"] == "GB"
    assert got[M365]["objectId"] == m365["id"]
    assert got[M365]["syncState"] == "synced"
    assert got[M365]["lastSyncedAt"].endswith("Z")
    assert M365 in got["schemas"]
    outside = scim.get(f"/Users/{outsider['id']}?attributes={M365}:syncState").get_json()
    assert outside[M365] == {"syncState": "out_of_scope"}
    shown = scim.get(f"/Groups/{group['id']}?attributes={M365_GROUP}").get_json()[M365_GROUP]
    assert shown["syncState"] == "synced" and shown["objectId"]
    # The sync state is read-only: a PATCH aimed at it is refused (RFC 7644 §3.5.2 mutability).
    refused = scim.patch(
        f"/Users/{user['id']}",
        patch_ops({"op": "replace", "path": f"{M365}:syncState", "value": "error"}),
    )
    assert (refused.status_code, refused.get_json()["scimType"]) == (400, "mutability")
    again = scim.get(f"/Users/{user['id']}?attributes={M365}").get_json()
    assert again[M365]["syncState"] == "synced"


@pytest.mark.parametrize("bad", ["XX", "England", "G"])
def test_usage_location_must_be_an_iso_country_code(scim: ScimClient, bad: str) -> None:
    response = scim.post(
        "/Users",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", M365],
            "userName": "where@example.com",
            M365: {"usageLocation": bad},
        },
    )
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidValue"
    assert "usageLocation" in response.get_json()["detail"]


def test_group_mail_nickname_from_the_m365_extension(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    group = scim.group("Named Group", **{M365_GROUP: {"mailNickname": "named-grp"}})
    assert group[M365_GROUP]["mailNickname"] == "named-grp"
    assert worker.drain()
    m365 = _m365_group(graph_emulator, "Named Group")
    assert m365 is not None and m365["mailNickname"] == "named-grp"
    scim.patch(
        f"/Groups/{group['id']}",
        patch_ops({"op": "replace", "path": f"{M365_GROUP}:mailNickname", "value": "renamed-grp"}),
    )
    assert worker.drain()
    m365 = _m365_group(graph_emulator, "Named Group")
    assert m365 is not None and m365["mailNickname"] == "renamed-grp"
    bad = scim.post(
        "/Groups", {"displayName": "Bad", M365_GROUP: {"mailNickname": "no spaces allowed"}}
    )
    assert (bad.status_code, bad.get_json()["scimType"]) == (400, "invalidValue")


def test_an_extension_urn_in_attributes_selects_the_whole_extension(
    scim: ScimClient, worker: Worker
) -> None:
    user = scim.user(
        "urn@example.com",
        title="Kept out",
        **{ENTERPRISE: {"department": "R&D"}, M365: {"usageLocation": "FR"}},
    )
    assert worker.drain()
    only = scim.get(f"/Users/{user['id']}?attributes={M365}").get_json()
    assert set(only) == {"schemas", "id", M365}
    assert only[M365]["usageLocation"] == "FR" and only[M365]["syncState"] == "synced"
    without = scim.get(f"/Users/{user['id']}?excludedAttributes={M365}").get_json()
    assert M365 not in without and M365 not in without["schemas"]
    assert without[ENTERPRISE]["department"] == "R&D" and without["title"] == "Kept out"


def test_a_backlog_goes_in_json_batches(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    users = [scim.user(f"batch{i:02}@example.com") for i in range(30)]
    bad = scim.user("bätch@example.com")  # Graph refuses it: only that one fails
    assert worker.drain()
    for user in users:
        assert _m365_user(graph_emulator, user["userName"]) is not None
    log = graph_emulator.request_log()
    # Parts of a $batch are logged with the batch's request id: every create went in one.
    creates = [r for r in log if r["method"] == "POST" and r["path"] == "/v1.0/users"]
    assert len(creates) == 31 and all(r.get("batch_request_id") for r in creates)
    assert sum(1 for r in log if r["path"] == "/v1.0/$batch") <= 6  # 31 lookups + 31 creates
    link = _link(app, bad["id"])
    assert link is not None and link.state == "error"
    for i, user in enumerate(users):
        scim.patch(
            f"/Users/{user['id']}", patch_ops({"op": "replace", "path": "title", "value": f"T{i}"})
        )
    before = len(graph_emulator.request_log())
    assert worker.drain()
    after = graph_emulator.request_log()[before:]
    patches = [r for r in after if r["method"] == "PATCH"]
    assert len(patches) == 30 and all(r.get("batch_request_id") for r in patches)
    assert sum(1 for r in after if not r.get("batch_request_id")) <= 3  # two batches
    assert _m365_user(graph_emulator, "batch29@example.com")["jobTitle"] == "T29"  # type: ignore[index]


def test_unbind_releases_the_account_and_suspend_disables_it_first(
    scim: ScimClient, app: Flask, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    kept = scim.user("released@example.com", title="Before")
    gone = scim.user("suspended@example.com")
    assert worker.drain()
    runner = app.test_cli_runner()
    assert runner.invoke(args=["m365", "unbind", "released@example.com"]).exit_code == 0
    done = runner.invoke(args=["m365", "unbind", gone["id"], "--suspend"])
    assert done.exit_code == 0 and "disables and releases" in done.output
    assert runner.invoke(args=["m365", "unbind", "nobody@example.com"]).exit_code == 1
    assert worker.drain()
    suspended = _m365_user(graph_emulator, "suspended@example.com")
    released = _m365_user(graph_emulator, "released@example.com")
    assert suspended is not None and suspended["accountEnabled"] is False
    assert released is not None and released["accountEnabled"] is True
    # Released: the directory's later changes no longer reach the account.
    scim.patch(
        f"/Users/{kept['id']}", patch_ops({"op": "replace", "path": "title", "value": "After"})
    )
    assert worker.drain()
    released = _m365_user(graph_emulator, "released@example.com")
    assert released is not None and released["jobTitle"] == "Before"
    state = scim.get(f"/Users/{kept['id']}?attributes={M365}").get_json()[M365]
    assert state["syncState"] == "unbound" and "objectId" not in state


def test_a_manager_reaching_m365_after_its_reports_becomes_their_manager(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    boss = scim.user("late-boss@elsewhere.example")  # out of scope: directory-only
    scim.user("early@example.com", **{ENTERPRISE: {"manager": {"value": boss["id"]}}})
    assert worker.drain()
    early = _m365_user(graph_emulator, "early@example.com")
    assert early is not None and not early.get("managerId")
    scim.patch(
        f"/Users/{boss['id']}",
        patch_ops({"op": "replace", "path": "userName", "value": "late-boss@example.com"}),
    )
    assert worker.drain()
    early = _m365_user(graph_emulator, "early@example.com")
    late = _m365_user(graph_emulator, "late-boss@example.com")
    assert early is not None and late is not None and early["managerId"] == late["id"]


def _member_upns(emulator: RunningEmulator, group_name: str) -> set[str]:
    group = _m365_group(emulator, group_name)
    assert group is not None
    upns = {u["id"]: u["userPrincipalName"] for u in _objects(emulator, "user")}
    return {upns[m] for m in group["members"]}


def test_a_join_that_fails_after_the_create_is_retried_not_lost(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    group = scim.group("Joiners")
    assert worker.drain()
    # The create fails once, so the group's member event goes first and skips the user (not
    # in M365 yet): the user's own delivery must join it, and that join fails once too.
    graph_emulator.fault(kind="status", status=503, method="POST", path="/v1.0/users")
    graph_emulator.fault(kind="status", status=503, method="POST", path="/v1.0/groups/")
    user = scim.user("joiner@example.com")
    scim.patch(
        f"/Groups/{group['id']}",
        patch_ops({"op": "add", "path": "members", "value": [{"value": user["id"]}]}),
    )
    assert worker.drain()
    assert graph_emulator.state()["faults"] == []  # both faults were met
    assert _member_upns(graph_emulator, "Joiners") == {"joiner@example.com"}
    link = _link(app, user["id"])
    assert link is not None and link.state == "synced"


def _join(scim: ScimClient, group: dict[str, Any], *users: dict[str, Any]) -> None:
    members = [{"value": u["id"]} for u in users]
    response = scim.patch(
        f"/Groups/{group['id']}", patch_ops({"op": "add", "path": "members", "value": members})
    )
    assert response.status_code in (200, 204)


def _parts(emulator: RunningEmulator, since: int = 0) -> list[dict[str, Any]]:
    """The $batch parts in the request log from entry `since` on."""
    return [r for r in emulator.request_log()[since:] if r.get("batch_request_id")]


def _adds(parts: list[dict[str, Any]], group_id: str) -> list[dict[str, Any]]:
    return [r for r in parts if r["path"] == f"/v1.0/groups/{group_id}/members/$ref"]


def test_a_new_user_joins_its_groups_in_its_create_batch_with_depends_on(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    alpha, beta = scim.group("Alpha"), scim.group("Beta")
    assert worker.drain()
    alpha_id = _m365_group(graph_emulator, "Alpha")["id"]  # type: ignore[index]
    beta_id = _m365_group(graph_emulator, "Beta")["id"]  # type: ignore[index]
    joiners = [scim.user(f"joiner{i}@example.com") for i in range(4)]
    loners = [scim.user(f"loner{i}@example.com") for i in range(3)]
    _join(scim, alpha, *joiners)
    _join(scim, beta, *joiners[:2])
    before = len(graph_emulator.request_log())
    assert worker.drain()

    parts = _parts(graph_emulator, before)
    creates = {
        r["part_id"]: r for r in parts if (r["method"], r["path"]) == ("POST", "/v1.0/users")
    }
    assert len(creates) == 7 and all(r["status"] == 201 for r in creates.values())
    adds = _adds(parts, alpha_id) + _adds(parts, beta_id)
    assert len(adds) == 6 and all(r["status"] == 204 for r in adds)
    for add in adds:  # each add went in its create's $batch, after it, dependsOn it
        create = creates[add["depends_on"][0]]
        assert create["batch_request_id"] == add["batch_request_id"]
        assert parts.index(create) < parts.index(add)
    # One root per $batch (Graph's "same" shape), so one joiner per $batch, and the loners'
    # creates fill those batches instead of batches of their own.
    roots = {(a["batch_request_id"], a["depends_on"][0]) for a in adds}
    assert len(roots) == 4 and len({b for b, _root in roots}) == 4
    assert len({r["batch_request_id"] for r in creates.values()}) == 4
    assert _member_upns(graph_emulator, "Alpha") == {u["userName"] for u in joiners}
    assert _member_upns(graph_emulator, "Beta") == {u["userName"] for u in joiners[:2]}
    for user in joiners + loners:
        link = _link(app, user["id"])
        assert link is not None and link.state == "synced"


def test_a_failed_create_answers_424_for_its_adds_and_they_are_retried(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    group = scim.group("Retried")
    assert worker.drain()
    group_id = _m365_group(graph_emulator, "Retried")["id"]  # type: ignore[index]
    joiner, loner = scim.user("retried@example.com"), scim.user("alone@example.com")
    _join(scim, group, joiner)
    # The joiner's create leads the first $batch: it fails, and its add never runs.
    graph_emulator.fault(kind="status", status=503, method="POST", path="/v1.0/users")
    before = len(graph_emulator.request_log())
    assert worker.drain()
    parts = _parts(graph_emulator, before)
    failed = [
        r for r in parts if (r["method"], r["path"], r["status"]) == ("POST", "/v1.0/users", 503)
    ]
    assert len(failed) == 1
    skipped = _adds(parts, group_id)
    assert [(r["status"], r["depends_on"]) for r in skipped] == [(424, [failed[0]["part_id"]])]
    assert skipped[0]["batch_request_id"] == failed[0]["batch_request_id"]
    # Retried, not dropped: the tenant ends as the directory says, with no dead letter.
    assert _member_upns(graph_emulator, "Retried") == {"retried@example.com"}
    assert _m365_user(graph_emulator, "alone@example.com") is not None
    for user in (joiner, loner):
        link = _link(app, user["id"])
        assert link is not None and link.state == "synced"
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(OutboxEvent.status == "dead")) == 0


def test_replication_lag_on_the_add_after_the_create_is_retried(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    group = scim.group("Lagging")
    assert worker.drain()
    group_id = _m365_group(graph_emulator, "Lagging")["id"]  # type: ignore[index]
    worker.policy = Policy(max_attempts=30, base_seconds=0.05, cap_seconds=0.2)
    graph_emulator.configure(replication_lag=0.5)  # the group is older than that
    joiners = [scim.user(f"lag{i}@example.com") for i in range(3)]
    _join(scim, group, *joiners)
    before = len(graph_emulator.request_log())
    assert worker.drain(timeout=30)
    adds = _adds(_parts(graph_emulator, before), group_id)
    # Right after the create, Graph does not know the UPN yet: a 404, treated as lag.
    assert adds and all(r["status"] == 404 and r["depends_on"] for r in adds)
    assert _member_upns(graph_emulator, "Lagging") == {u["userName"] for u in joiners}
    for user in joiners:
        link = _link(app, user["id"])
        assert link is not None and link.state == "synced"
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(OutboxEvent.status == "dead")) == 0


def test_batched_joins_keep_coalescing_order_and_the_creating_mark(
    scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask
) -> None:
    group = scim.group("Ordered")
    assert worker.drain()
    # Waiting together: a user patched three times, one deleted before delivery, and one
    # whose account a killed worker created in M365 before it could save the object id.
    patched = scim.user("patched@example.com", title="v0")
    for i in range(1, 4):
        scim.patch(
            f"/Users/{patched['id']}",
            patch_ops({"op": "replace", "path": "title", "value": f"v{i}"}),
        )
    other = scim.user("other@example.com")
    deleted = scim.user("deleted@example.com")
    crashed = scim.user("crashed@example.com")
    _join(scim, group, patched, other, deleted, crashed)
    assert scim.delete(f"/Users/{deleted['id']}").status_code == 204
    orphan = graph_emulator.create_user("crashed")
    with app.app_context():
        upn = orphan["userPrincipalName"]
        store.save_link("User", crashed["id"], state="creating", synced={"userPrincipalName": upn})
        db.session.remove()
    before = len(graph_emulator.request_log())
    assert worker.drain()
    log = graph_emulator.request_log()[before:]
    creates = [r for r in log if (r["method"], r["path"]) == ("POST", "/v1.0/users")]
    # Two creates, each once, in a $batch with its add; the patched user's in its last state.
    assert len(creates) == 2 and all(r.get("batch_request_id") for r in creates)
    m365 = _m365_user(graph_emulator, "patched@example.com")
    assert m365 is not None and m365["jobTitle"] == "v3"
    assert _m365_user(graph_emulator, "deleted@example.com") is None
    found = _m365_user(graph_emulator, "crashed@example.com")
    assert found is not None and found["id"] == orphan["id"]  # ours, bound: no duplicate
    assert _member_upns(graph_emulator, "Ordered") == {
        "patched@example.com",
        "other@example.com",
        "crashed@example.com",
    }
    for user in (patched, other, crashed):
        link = _link(app, user["id"])
        assert link is not None and link.state == "synced"


def test_a_membership_committed_while_its_user_is_created_is_not_lost(
    scim: ScimClient, app: Flask, worker: Worker, graph_emulator: RunningEmulator
) -> None:
    """Two workers: one reads a new user's document and creates the account; meanwhile the
    user joins a group, and another worker delivers that group event, skipping the member,
    who has no M365 object yet. The first worker must join the group from what the directory
    holds after the create, not from the document it read before."""
    group = scim.group("Late Joiners")
    user = scim.user("late@example.com")
    assert worker.drain()
    stale = scim.get(f"/Users/{user['id']}").get_json()  # read before the membership
    assert "groups" not in stale
    scim.patch(
        f"/Groups/{group['id']}",
        patch_ops({"op": "add", "path": "members", "value": [{"value": user["id"]}]}),
    )
    link = _link(app, user["id"])
    assert link is not None and link.object_id
    with app.app_context():
        worker.after_create(user["id"], stale, link.object_id)
    m365 = _m365_group(graph_emulator, "Late Joiners")
    assert m365 is not None and link.object_id in m365["members"]


def test_a_patch_answers_with_the_m365_state_a_get_shows(scim: ScimClient, worker: Worker) -> None:
    user = scim.user("state@example.com")
    assert worker.drain()
    asked = f"attributes=title,{M365}"
    patched = scim.patch(
        f"/Users/{user['id']}?{asked}",
        patch_ops({"op": "replace", "path": "title", "value": "Pilot"}),
    ).get_json()
    shown = scim.get(f"/Users/{user['id']}?{asked}").get_json()
    assert patched[M365]["syncState"] == "synced" and patched[M365]["objectId"]
    assert patched == shown
    with_password = scim.patch(
        f"/Users/{user['id']}?{asked}",
        patch_ops({"op": "replace", "path": "password", "value": "Pil0t-Password!"}),
    ).get_json()
    assert with_password[M365]["passwordState"] == "pending"
    assert with_password == scim.get(f"/Users/{user['id']}?{asked}").get_json()
    # Without asking, neither shows the server-set state.
    plain = scim.patch(
        f"/Users/{user['id']}", patch_ops({"op": "replace", "path": "title", "value": "Captain"})
    ).get_json()
    assert M365 not in plain and plain == scim.get(f"/Users/{user['id']}").get_json()


def test_a_user_the_sync_has_not_seen_shows_no_sync_state(scim: ScimClient) -> None:
    """Not even after a password set (scim2-tester compares extension objects whole)."""
    user = scim.post("/Users", {"userName": "unseen@example.com", "password": "Uns33n-Pass!"})
    patched = scim.patch(
        f"/Users/{user.get_json()['id']}",
        patch_ops({"op": "replace", "path": "password", "value": "Uns33n-Pass!2"}),
    ).get_json()
    assert M365 not in patched
    assert M365 not in scim.get(f"/Users/{patched['id']}").get_json()


def test_a_worker_stands_on_its_own_with_a_session_factory_and_a_clock(
    app: Flask, scim: ScimClient, graph_emulator: RunningEmulator, database_url: str
) -> None:
    """No Flask app context: the worker is given a session factory (on an engine of its
    own) and a clock, and every time it writes is the clock's."""
    user = scim.user("alone@example.com")
    group = scim.group("Alone", members=[user["id"]])
    moment = datetime(2031, 5, 6, 7, 8, 9)
    engine = sa.create_engine(normalise_database_url(database_url))
    sync = SyncSettings(sync_domains=("example.com",))
    alone = Worker(
        Store(engine, clock=lambda: moment),
        GraphClient(settings_for(graph_emulator)),
        sync,
        sync.sync_domains,
        name="standalone",
        pacer=Pacer(1000),
        instance_path=app.instance_path,
    )
    try:
        assert not has_app_context()
        assert alone.drain(timeout=30)
    finally:
        engine.dispose()
    assert _m365_user(graph_emulator, "alone@example.com") is not None
    with app.app_context():
        for rtype, rid in (("User", user["id"]), ("Group", group["id"])):
            link = db.session.get(M365Link, (rtype, rid))
            assert link is not None and link.state == "synced", rtype
            assert link.last_synced_at == moment
        completed = set(db.session.scalars(select(OutboxEvent.completed_at)))
        db.session.remove()
    assert completed == {moment}
