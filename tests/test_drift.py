"""Drift: changes made in Microsoft 365 behind the directory's back, as an M365 admin makes
them (through the emulator's Graph API), found by a drift round and put right through the
outbox (M365_DRIFT=repair), or only reported (report).

Pages the emulator and the round follow: user-delta, group-delta (members@delta),
directory-deleteditems-restore (learn.microsoft.com/graph/api/…).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, select

from models import M365Link
from scim_server.db import begin, db
from scim_server.drift import rounds, state
from scim_server.drift.rounds import Drift
from scim_server.drift.settings import DriftSettings, Mode
from scim_server.graph.client import GraphClient
from scim_server.sync.worker import Worker
from tests.conftest import ScimClient
from tests.graph_emulator import STRONG_PASSWORD, RunningEmulator, settings_for

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def database(app: Flask) -> Iterator[Engine]:
    with app.app_context():
        engine = db.engine
    yield engine


MakeDrift = Callable[..., Drift]


@pytest.fixture
def make_drift(database: Engine, graph_emulator: RunningEmulator) -> MakeDrift:
    def make(mode: Mode = Mode.REPAIR, **kw: Any) -> Drift:
        settings = DriftSettings(mode=mode, read_rate=1000.0, page_size=50)
        return Drift(
            database,
            GraphClient(settings_for(graph_emulator)),
            "sandbox",
            settings,
            domains=("example.com",),
            **kw,
        )

    return make


class Tenant:
    """A small directory, synced: two users (one with a directory password), a group with
    both, a manager; and the emulator as an M365 admin sees it."""

    def __init__(
        self, scim: ScimClient, worker: Worker, emulator: RunningEmulator, app: Flask
    ) -> None:
        self.scim, self.worker, self.emulator, self.app = scim, worker, emulator, app
        self.boss = scim.user("boss@example.com", title="Chief", active=True)
        self.adele = scim.user(
            "adele@example.com",
            title="Engineer",
            password=STRONG_PASSWORD,
            **{ENTERPRISE: {"department": "R&D", "manager": {"value": self.boss["id"]}}},
        )
        self.group = scim.group("Engineers", members=[self.boss["id"], self.adele["id"]])
        assert worker.drain()

    def object_id(self, resource_id: str) -> str:
        with self.app.app_context():
            row = db.session.scalar(select(M365Link).where(M365Link.resource_id == resource_id))
            assert row is not None and row.object_id
            return str(row.object_id)

    def link(self, resource_id: str) -> M365Link | None:
        with self.app.app_context():
            row = db.session.scalar(select(M365Link).where(M365Link.resource_id == resource_id))
            if row is not None:
                db.session.expunge(row)
            return row

    def m365(self, object_id: str) -> dict[str, Any] | None:
        for obj in self.emulator.state()["objects"]:
            if obj["id"] == object_id:
                return {**obj["props"], "managerId": obj["manager_id"], "members": obj["members"]}
        return None

    def m365_group(self, name: str) -> dict[str, Any] | None:
        found = [
            {**o["props"], "members": o["members"]}
            for o in self.emulator.state()["objects"]
            if o["kind"] == "group" and o["props"]["displayName"] == name
        ]
        assert len(found) <= 1
        return found[0] if found else None

    def admin(self, method: str, path: str, **kw: Any) -> None:
        response = self.emulator.graph(method, path, **kw)
        assert response.status_code < 300, response.text


@pytest.fixture
def tenant(scim: ScimClient, worker: Worker, graph_emulator: RunningEmulator, app: Flask) -> Tenant:
    return Tenant(scim, worker, graph_emulator, app)


def _counts(database: Engine) -> dict[str, dict[str, int]]:
    with begin(write=False, engine=database) as conn:
        return state.counts(conn)


def test_a_synced_directory_has_no_drift_and_a_quiet_round_costs_two_requests(
    tenant: Tenant, make_drift: MakeDrift, database: Engine
) -> None:
    drift = make_drift()
    first = drift.run_if_due(force=True)
    assert first is not None and first.full
    assert first.findings == []
    assert first.users_read == 2 and first.groups_read == 1
    quiet = drift.run_if_due(force=True)
    assert quiet is not None and not quiet.full and quiet.findings == []
    assert quiet.graph_requests == 2  # one users/delta page, one groups/delta page
    # What the sync itself changes in M365 comes in the next delta, and is not drift.
    ops = [{"op": "replace", "path": "title", "value": "Director"}]
    tenant.scim.patch(f"/Users/{tenant.boss['id']}", {"schemas": [PATCH_OP], "Operations": ops})
    tenant.scim.patch(
        f"/Groups/{tenant.group['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "remove", "path": f'members[value eq "{tenant.adele["id"]}"]'}],
        },
    )
    assert tenant.worker.drain()
    synced = drift.run_if_due(force=True)
    assert synced is not None and synced.users_read == 1 and synced.groups_read == 1
    assert synced.findings == []
    assert _counts(database) == {"detected": {}, "repaired": {}}


# Each case: what an M365 admin does, what repair leaves in M365, what report leaves.
def _edit(t: Tenant) -> None:
    t.admin("PATCH", f"/users/{t.object_id(t.adele['id'])}", json={"jobTitle": "Hacker"})


def _edit_repaired(t: Tenant, repaired: bool) -> None:
    m365 = t.m365(t.object_id(t.adele["id"]))
    assert m365 is not None and m365["jobTitle"] == ("Engineer" if repaired else "Hacker")


def _disable(t: Tenant) -> None:
    t.admin("PATCH", f"/users/{t.object_id(t.adele['id'])}", json={"accountEnabled": False})


def _disable_repaired(t: Tenant, repaired: bool) -> None:
    m365 = t.m365(t.object_id(t.adele["id"]))
    assert m365 is not None and m365["accountEnabled"] is repaired


def _manager(t: Tenant) -> None:
    t.admin("DELETE", f"/users/{t.object_id(t.adele['id'])}/manager/$ref")


def _manager_repaired(t: Tenant, repaired: bool) -> None:
    m365 = t.m365(t.object_id(t.adele["id"]))
    assert m365 is not None
    assert m365["managerId"] == (t.object_id(t.boss["id"]) if repaired else None)


def _delete_user(t: Tenant) -> None:
    t.object = t.object_id(t.adele["id"])  # type: ignore[attr-defined]
    t.admin("DELETE", f"/users/{t.object}")  # type: ignore[attr-defined]


def _delete_user_repaired(t: Tenant, repaired: bool) -> None:
    m365 = t.m365(t.object)  # type: ignore[attr-defined]
    # Restored from deletedItems: the same object, its memberships back.
    assert (m365 is not None) is repaired
    group = t.m365_group("Engineers")
    assert group is not None and (t.object in group["members"]) is repaired  # type: ignore[attr-defined]


def _delete_group(t: Tenant) -> None:
    t.admin("DELETE", f"/groups/{t.object_id(t.group['id'])}")


def _delete_group_repaired(t: Tenant, repaired: bool) -> None:
    group = t.m365_group("Engineers")
    assert (group is not None) is repaired
    if group is not None:
        wanted = {t.object_id(t.boss["id"]), t.object_id(t.adele["id"])}
        assert set(group["members"]) == wanted
        assert t.object_id(t.group["id"]) == group["id"]


def _add_stranger(t: Tenant) -> None:
    stranger = t.emulator.create_user("stranger")
    t.stranger = stranger["id"]  # type: ignore[attr-defined]
    group = t.object_id(t.group["id"])
    t.admin("POST", f"/groups/{group}/members/$ref", json=t.emulator.ref(stranger["id"]))


def _add_stranger_repaired(t: Tenant, repaired: bool) -> None:
    group = t.m365_group("Engineers")
    assert group is not None and (t.stranger not in group["members"]) is repaired  # type: ignore[attr-defined]
    assert t.m365(t.stranger) is not None  # type: ignore[attr-defined]  # only the membership


def _remove_member(t: Tenant) -> None:
    group, boss = t.object_id(t.group["id"]), t.object_id(t.boss["id"])
    t.admin("DELETE", f"/groups/{group}/members/{boss}/$ref")


def _remove_member_repaired(t: Tenant, repaired: bool) -> None:
    group = t.m365_group("Engineers")
    assert group is not None and (t.object_id(t.boss["id"]) in group["members"]) is repaired


def _password(t: Tenant) -> None:
    time.sleep(1.1)  # lastPasswordChangeDateTime is in whole seconds
    body = {
        "passwordProfile": {"password": "Other-Pass-123!", "forceChangePasswordNextSignIn": False}
    }
    t.admin("PATCH", f"/users/{t.object_id(t.adele['id'])}", json=body)


def _password_repaired(t: Tenant, repaired: bool) -> None:
    link = t.link(t.adele["id"])
    assert link is not None and link.password_state == ("drifted" if repaired else "synced")


CASES = {
    "attribute": (_edit, _edit_repaired, {"attribute": 1}),
    "disable": (_disable, _disable_repaired, {"account_enabled": 1}),
    "manager": (_manager, _manager_repaired, {"manager": 1}),
    "user_deleted": (_delete_user, _delete_user_repaired, {"user_deleted": 1}),
    "group_deleted": (_delete_group, _delete_group_repaired, {"group_deleted": 1}),
    "member_added": (_add_stranger, _add_stranger_repaired, {"member_added": 1}),
    "member_removed": (_remove_member, _remove_member_repaired, {"member_removed": 1}),
    "password": (_password, _password_repaired, {"password": 1}),
}


@pytest.mark.parametrize("mode", [Mode.REPAIR, Mode.REPORT])
@pytest.mark.parametrize("case", list(CASES))
def test_drift_is_found_and_repaired_or_only_reported(
    case: str,
    mode: Mode,
    tenant: Tenant,
    make_drift: MakeDrift,
    database: Engine,
) -> None:
    change, check, kinds = CASES[case]
    drift = make_drift(mode)
    assert drift.run_if_due(force=True) is not None  # the first round: a full read
    change(tenant)
    result = drift.run_if_due(force=True)
    assert result is not None and result.found() == kinds, result.findings
    assert tenant.worker.drain()
    check(tenant, mode is Mode.REPAIR)
    counts = _counts(database)
    assert counts["detected"] == kinds
    assert counts["repaired"] == (kinds if mode is Mode.REPAIR else {})
    # Once repaired, or once reported, the same drift is not found again.
    again = drift.run_if_due(force=True)
    assert again is not None and again.findings == [], again.findings


def test_a_change_to_an_unmanaged_account_is_ignored(
    tenant: Tenant, make_drift: MakeDrift, graph_emulator: RunningEmulator
) -> None:
    drift = make_drift()
    stranger = graph_emulator.create_user("unmanaged")
    drift.run_if_due(force=True)
    tenant.admin("PATCH", f"/users/{stranger['id']}", json={"jobTitle": "Anything"})
    tenant.admin("DELETE", f"/users/{stranger['id']}")
    result = drift.run_if_due(force=True)
    assert result is not None and result.findings == []


def test_a_change_waiting_in_the_outbox_is_not_drift(
    tenant: Tenant, make_drift: MakeDrift, scim: ScimClient, database: Engine
) -> None:
    drift = make_drift()
    drift.run_if_due(force=True)
    # The directory is about to send a new title, and an admin set one in M365 meanwhile:
    # the directory's wins on delivery, and the M365 edit is not drift. A change to another
    # property of the same user still is.
    ops = [{"op": "replace", "path": "title", "value": "Architect"}]
    scim.patch(f"/Users/{tenant.adele['id']}", {"schemas": [PATCH_OP], "Operations": ops})
    tenant.admin(
        "PATCH",
        f"/users/{tenant.object_id(tenant.adele['id'])}",
        json={"jobTitle": "Hacker", "department": "Sales"},
    )
    result = drift.run_if_due(force=True)
    assert result is not None
    assert [(f.kind.value, f.attribute) for f in result.findings] == [("attribute", "department")]
    assert tenant.worker.drain()
    m365 = tenant.m365(tenant.object_id(tenant.adele["id"]))
    assert m365 is not None and (m365["jobTitle"], m365["department"]) == ("Architect", "R&D")


def test_a_round_runs_only_when_due_and_one_holder_at_a_time(
    tenant: Tenant, make_drift: MakeDrift, database: Engine
) -> None:
    now = [1_000_000.0]
    first = make_drift(clock=lambda: now[0], holder="one")
    second = make_drift(clock=lambda: now[0], holder="two")
    # A new target's first round is due an interval after a worker first looks.
    assert first.run_if_due() is None
    now[0] += first.interval
    assert state.try_lease(database, "sandbox", "one", now[0], 60, first_due=0)
    assert not state.try_lease(database, "sandbox", "two", now[0], 60, first_due=0)
    assert second.run_if_due(force=True) is None  # the lease is one's
    now[0] += 61  # one's lease ran out (a dead worker): two takes over
    assert second.run_if_due() is not None
    assert first.run_if_due() is None  # not due again before an interval
    now[0] += first.interval
    assert first.run_if_due() is not None


def test_two_workers_on_postgresql_never_run_a_round_at_once(
    tenant: Tenant, make_drift: MakeDrift, database: Engine, monkeypatch: Any
) -> None:
    if database.dialect.name != "postgresql":
        pytest.skip("the lease's concurrency is PostgreSQL's row locks: set SCIM_TEST_DATABASE_URL")
    running: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    ran: list[str] = []
    guard = threading.Lock()
    original = rounds.Drift.run_round

    def watched(self: Drift) -> rounds.Result:
        with guard:
            running.append(self.holder)
            if len(running) > 1:
                overlaps.append(tuple(running))
        try:
            time.sleep(0.05)
            return original(self)
        finally:
            with guard:
                running.remove(self.holder)
                ran.append(self.holder)

    monkeypatch.setattr(rounds.Drift, "run_round", watched)
    drifts = [make_drift(holder=f"worker-{i}") for i in range(2)]
    start = threading.Barrier(2)

    def loop(drift: Drift) -> None:
        start.wait()
        for _ in range(15):
            drift.run_if_due(force=True)

    threads = [threading.Thread(target=loop, args=(d,)) for d in drifts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not overlaps
    assert len(ran) >= 2


def test_drift_is_visible_in_status_metrics_logs_and_the_m365_extension(
    tenant: Tenant,
    make_drift: MakeDrift,
    app: Flask,
    scim: ScimClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    drift = make_drift()
    drift.run_if_due(force=True)
    _edit(tenant)
    _password(tenant)
    caplog.set_level("INFO", logger="scim_server.drift")
    drift.run_if_due(force=True)
    assert tenant.worker.drain()
    lines = [r.getMessage() for r in caplog.records if r.name == "scim_server.drift"]
    found = [line for line in lines if line.startswith("drift found")]
    assert len(found) == 2  # one line per drifted attribute, with both values
    assert any("attribute=jobTitle m365='Hacker' directory='Engineer'" in line for line in found)
    assert all(STRONG_PASSWORD not in line and "Other-Pass" not in line for line in lines)

    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'scim_drift_detected_total{kind="attribute"} 1.0' in metrics
    assert 'scim_drift_repaired_total{kind="attribute"} 1.0' in metrics
    assert 'scim_drift_detected_total{kind="password"} 1.0' in metrics

    runner = app.test_cli_runner()
    status = runner.invoke(args=["sync", "status"])
    assert status.exit_code == 0, status.output
    assert "Drift (M365_DRIFT=repair): found 1 attribute, 1 password" in status.output
    assert "Drift repaired: 1 attribute, 1 password" in status.output
    facts = runner.invoke(args=["sync", "status", "--json"])
    drift_facts = json.loads(facts.output)["drift"]
    assert drift_facts["detected"] == {"attribute": 1, "password": 1}
    assert drift_facts["rounds"][0]["last_round"]["found"] == {"attribute": 1, "password": 1}

    m365 = "urn:ietf:params:scim:schemas:extension:m365:2.0:User"
    doc = scim.get(f"/Users/{tenant.adele['id']}?attributes={m365}").get_json()[m365]
    assert doc["lastDriftAt"].endswith("Z") and doc["passwordState"] == "drifted"
    other = scim.get(f"/Users/{tenant.boss['id']}?attributes={m365}").get_json()[m365]
    assert "lastDriftAt" not in other


def test_a_worker_runs_its_first_round_an_interval_after_it_starts(
    tenant: Tenant, make_drift: MakeDrift, database: Engine
) -> None:
    from scim_server.drift.schedule import Scheduler

    drift = make_drift()
    drift.settings = replace(drift.settings, interval_minutes=0.02)  # 1.2 s
    scheduler = Scheduler(drift, check_seconds=0.1)
    stop = threading.Event()
    scheduler.start(stop)
    try:
        time.sleep(0.5)
        assert state.links(database, "sandbox") == state.Links(None, None)  # nothing yet
        deadline = time.monotonic() + 20
        while state.links(database, "sandbox").users is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state.links(database, "sandbox").users is not None
    finally:
        stop.set()
        scheduler.join(5)
    assert scheduler.thread is not None and not scheduler.thread.is_alive()


def _outbox_and_links(database: Engine) -> tuple[int, list[tuple[Any, ...]]]:
    from sqlalchemy import func

    from models import OutboxEvent

    with begin(write=False, engine=database) as conn:
        events = conn.scalar(select(func.count()).select_from(OutboxEvent)) or 0
        links = [
            (r.resource_id, r.object_id, r.state, r.synced, r.updated_at)
            for r in conn.execute(select(M365Link.__table__).order_by(M365Link.resource_id))
        ]
    return events, links


def test_m365_plan_lists_what_the_directory_would_change_and_writes_nothing(
    tenant: Tenant,
    tenant_env: RunningEmulator,
    app: Flask,
    scim: ScimClient,
    database: Engine,
) -> None:
    newcomer = scim.user("newcomer@example.com")  # not delivered yet: a create
    _edit(tenant)
    _disable(tenant)
    _add_stranger(tenant)
    tenant.admin("DELETE", f"/users/{tenant.object_id(tenant.boss['id'])}")
    before = _outbox_and_links(database)
    runner = app.test_cli_runner()
    printed = runner.invoke(args=["m365", "plan"])
    assert printed.exit_code == 0, printed.output
    lines = printed.output.splitlines()
    assert "create user newcomer@example.com" in lines
    assert "update user adele@example.com: jobTitle: 'Hacker' → 'Engineer'" in lines
    assert "update user adele@example.com: accountEnabled: False → True" in lines
    assert "restore user boss@example.com" in lines
    # M365 dropped adele's manager with the account: it is set again.
    boss = tenant.object_id(tenant.boss["id"])
    assert f"update user adele@example.com: manager: None → {boss!r}" in lines
    assert f"remove member {tenant.stranger} from group Engineers" in lines  # type: ignore[attr-defined]
    assert lines[-1] == (
        "Totals: 1 create, 3 update, 0 disable, 1 restore, 0 add member, 1 remove member"
    )
    as_json = json.loads(runner.invoke(args=["m365", "plan", "--json"]).output)
    assert as_json["totals"]["update"] == 3 and as_json["totals"]["restore"] == 1
    assert {c["resource_id"] for c in as_json["changes"] if c["action"] == "create"} == {
        newcomer["id"]
    }
    assert _outbox_and_links(database) == before  # a dry run: nothing written

    # The directory disables a user; M365 still has it enabled: the plan says disable.
    ops = [{"op": "replace", "path": "active", "value": False}]
    scim.patch(f"/Users/{tenant.adele['id']}", {"schemas": [PATCH_OP], "Operations": ops})
    tenant.admin(
        "PATCH", f"/users/{tenant.object_id(tenant.adele['id'])}", json={"accountEnabled": True}
    )
    lines = runner.invoke(args=["m365", "plan"]).output.splitlines()
    assert "disable user adele@example.com" in lines


def test_m365_reconcile_runs_one_round_now(
    tenant: Tenant,
    tenant_env: RunningEmulator,
    app: Flask,
    database: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner = app.test_cli_runner()
    first = runner.invoke(args=["m365", "reconcile"])
    assert first.exit_code == 0, first.output
    assert "Read 2 users and 1 groups" in first.output and "no drift" in first.output
    _edit(tenant)
    second = runner.invoke(args=["m365", "reconcile"])
    assert second.exit_code == 0, second.output
    assert "1 attribute" in second.output and "in the outbox" in second.output
    assert tenant.worker.drain()
    _edit_repaired(tenant, True)
    monkeypatch.setenv("M365_DRIFT", "off")
    assert runner.invoke(args=["m365", "reconcile"]).exit_code == 2


def test_a_user_purged_from_deleted_items_is_created_again_and_bound(
    tenant: Tenant, make_drift: MakeDrift
) -> None:
    drift = make_drift()
    drift.run_if_due(force=True)
    gone = tenant.object_id(tenant.adele["id"])
    tenant.admin("DELETE", f"/users/{gone}")
    tenant.admin("DELETE", f"/directory/deletedItems/{gone}")  # purged: no restore possible
    result = drift.run_if_due(force=True)
    assert result is not None and result.found() == {"user_deleted": 1}
    assert tenant.worker.drain()
    again = tenant.object_id(tenant.adele["id"])
    assert again != gone
    m365 = tenant.m365(again)
    assert m365 is not None and m365["userPrincipalName"] == "adele@example.com"
    assert m365["jobTitle"] == "Engineer" and m365["managerId"] == tenant.object_id(
        tenant.boss["id"]
    )
    group = tenant.m365_group("Engineers")
    assert group is not None and again in group["members"]
    link = tenant.link(tenant.adele["id"])
    assert link is not None and link.state == "synced"


def test_a_repair_that_fails_is_a_dead_letter_with_the_reason(
    tenant: Tenant, make_drift: MakeDrift, graph_emulator: RunningEmulator, app: Flask
) -> None:
    from scim_server.sync import store

    drift = make_drift()
    drift.run_if_due(force=True)
    _delete_user(tenant)
    assert drift.run_if_due(force=True) is not None
    graph_emulator.fault(kind="status", status=403, path="/v1.0/directory/deletedItems", count=20)
    assert tenant.worker.drain()
    with app.app_context():
        assert store.backlog().get("dead") == 1
    link = tenant.link(tenant.adele["id"])
    assert link is not None and link.state == "error" and link.last_error
    runner = app.test_cli_runner()
    status = runner.invoke(args=["sync", "status"]).output
    assert "Dead letters" in status and tenant.adele["id"] in status
    assert "Drift repaired: none" in status  # found, not repaired
