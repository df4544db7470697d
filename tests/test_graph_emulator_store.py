"""The emulator's state file (the sandbox tenant lives in one): every change is kept across a
restart, a save writes only what changed, and a file of the earlier format (one JSON
snapshot of the whole tenant) is converted."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from scim_server.graph.emulator.store import StateFile, saved_tenant_id
from scim_server.graph.emulator.tenant import Domain, Tenant
from tests.graph_emulator import STRONG_PASSWORD, RunningEmulator, run_emulator

NEW_PASSWORD = "An0ther-Str0ng!"


def _options(tmp_path: Path) -> dict[str, Any]:
    return {
        "state_file": tmp_path / "tenant.sqlite3",
        "tenant_id": str(uuid.uuid4()),
        "client_id": "app",
        "client_secret": "s3cret-value",
        "control": True,
    }


def _tenant_state(em: RunningEmulator) -> dict[str, Any]:
    """The control endpoint's snapshot, less what is not the tenant's (settings, faults)."""
    state = em.state()
    del state["settings"], state["faults"]
    return state


def _saved(em: RunningEmulator, path: Path) -> Any:
    """What the file holds now (read on a connection of its own), beside the tenant in
    memory, both as the control endpoint's JSON would carry them."""
    store = StateFile(path)
    try:
        saved = store.load()
    finally:
        store.close()
    with em.server.emulator.lock:
        current = em.server.emulator.tenant.to_dict()
    return json.loads(json.dumps(saved)), json.loads(json.dumps(current))


def test_every_kind_of_change_is_saved_as_it_happens_and_outlives_a_restart(
    tmp_path: Path,
) -> None:
    options = _options(tmp_path)
    path = options["state_file"]
    with run_emulator(**options) as first:
        adele, brian, carol, dora = (
            first.create_user(n) for n in ("adele", "brian", "carol", "dora")
        )
        sales, staff = first.create_group("sales"), first.create_group("staff")
        manager = {"@odata.id": f"{first.graph_url}/users/{carol['id']}"}
        password = {"password": NEW_PASSWORD, "forceChangePasswordNextSignIn": False}
        steps = [
            ("POST", f"/groups/{sales['id']}/members/$ref", first.ref(adele["id"])),
            ("POST", f"/groups/{sales['id']}/members/$ref", first.ref(brian["id"])),
            ("DELETE", f"/groups/{sales['id']}/members/{brian['id']}/$ref", None),
            ("PATCH", f"/groups/{sales['id']}", {"description": "Sells"}),
            ("PATCH", f"/users/{adele['id']}", {"jobTitle": "Buyer"}),
            ("PATCH", f"/users/{adele['id']}", {"passwordProfile": password}),
            ("POST", f"/users/{adele['id']}/revokeSignInSessions", None),
            ("PUT", f"/users/{adele['id']}/manager/$ref", manager),
            ("PUT", f"/users/{brian['id']}/manager/$ref", manager),
            ("DELETE", f"/users/{brian['id']}/manager/$ref", None),
            ("DELETE", f"/users/{brian['id']}", None),  # soft: into deletedItems
            ("DELETE", f"/users/{dora['id']}", None),
            ("POST", f"/directory/deletedItems/{dora['id']}/restore", None),
            ("DELETE", f"/users/{carol['id']}", None),  # adele's manager: she has none now
            ("DELETE", f"/directory/deletedItems/{carol['id']}", None),  # for good
            ("DELETE", f"/groups/{staff['id']}", None),  # a group goes for good at once
        ]
        for method, url, body in steps:
            first.advance(61)  # timestamps (kept to the second) differ from step to step
            response = first.graph(method, url, json=body)
            assert response.status_code < 300, (method, url, response.text)
            saved, current = _saved(first, path)
            assert saved == current, (method, url)
        before = _tenant_state(first)
    assert {o["id"] for o in before["objects"]} == {adele["id"], dora["id"], sales["id"]}
    assert [o["id"] for o in before["deleted"]] == [brian["id"]]

    with run_emulator(**options) as second:
        assert _tenant_state(second) == before
        tenant = second.server.emulator.tenant
        assert tenant.sign_in("adele@example.com", NEW_PASSWORD).id == adele["id"]
        assert tenant.sign_in("dora@example.com", STRONG_PASSWORD).id == dora["id"]


def test_a_reset_tenant_stays_empty_after_a_restart(tmp_path: Path) -> None:
    options = _options(tmp_path)
    with run_emulator(**options) as first:
        first.create_user("adele")
        first.reset()
        first.create_user("brian")
    with run_emulator(**options) as second:
        names = [o["props"]["mailNickname"] for o in _tenant_state(second)["objects"]]
        assert names == ["brian"]
        assert [seq for seq, _ in _tenant_state(second)["changes"]] == [1]


def _user(tenant: Tenant, nickname: str) -> str:
    body = {
        "accountEnabled": True,
        "displayName": nickname,
        "mailNickname": nickname,
        "userPrincipalName": f"{nickname}@example.com",
        "passwordProfile": {"password": STRONG_PASSWORD, "forceChangePasswordNextSignIn": False},
    }
    return tenant.create_user(body).id


def test_a_save_holds_only_what_changed_since_the_last() -> None:
    tenant = Tenant(str(uuid.uuid4()), [Domain("example.com")])
    ids = [_user(tenant, f"user{i}") for i in range(50)]
    first = tenant.take_changes()
    assert (
        first is not None and first.whole and len(first.objects) == 50 and len(first.changes) == 50
    )

    tenant.update_user(ids[7], {"jobTitle": "Buyer"})
    changes = tenant.take_changes()
    assert changes is not None and not changes.whole
    assert [o["id"] for o in changes.objects] == [ids[7]]
    assert changes.objects[0]["props"]["jobTitle"] == "Buyer"
    assert changes.deleted == [] and changes.gone == []
    assert changes.changes == [(51, ids[7])] and changes.seq == 51

    tenant.delete_object(ids[3])
    tenant.purge(ids[3])
    changes = tenant.take_changes()
    assert (
        changes is not None
        and changes.objects == []
        and changes.deleted == []
        and changes.gone == [ids[3]]
    )

    assert tenant.take_changes() is None  # nothing since: nothing to write

    tenant.clear()
    cleared = tenant.take_changes()
    assert cleared is not None and cleared.whole


def test_a_state_file_of_the_earlier_format_is_converted(tmp_path: Path) -> None:
    """Before this format the file held one JSON snapshot, in a table `state`."""
    tenant_id = str(uuid.uuid4())
    tenant = Tenant(tenant_id, [Domain("example.com")])
    kept = _user(tenant, "kept")
    path = tmp_path / "tenant.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE state (id INTEGER PRIMARY KEY, data TEXT)")
        conn.execute("INSERT INTO state VALUES (1, ?)", (json.dumps(tenant.to_dict()),))
    conn.close()

    assert saved_tenant_id(path) == tenant_id
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "state" not in tables and {"tenant", "objects", "log"} <= tables

    options = {**_options(tmp_path), "tenant_id": tenant_id}
    with run_emulator(**options) as em:
        assert [o["id"] for o in _tenant_state(em)["objects"]] == [kept]
        assert em.graph("GET", f"/users/{kept}").status_code == 200
        added = em.create_user("added")
    store = StateFile(path)
    try:
        saved = store.load()
    finally:
        store.close()
    assert saved is not None
    assert [o["id"] for o in saved["objects"]] == [kept, added["id"]]
    assert saved["changes"] == [(1, kept), (2, added["id"])]


def test_no_file_no_tenant(tmp_path: Path) -> None:
    assert saved_tenant_id(tmp_path / "absent.sqlite3") is None
    assert not (tmp_path / "absent.sqlite3").exists()


def test_after_a_failed_save_the_next_one_writes_the_whole_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scim_server.graph.emulator.state import Emulator, EmulatorOptions

    em = Emulator(EmulatorOptions(state_file=tmp_path / "tenant.sqlite3"))
    try:
        assert em.store is not None
        first = _user(em.tenant, "first")
        em.persist()

        def disk_full(_changes: Any) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(em.store, "save", disk_full)
        em.tenant.update_user(first, {"jobTitle": "Lost?"})
        with pytest.raises(sqlite3.OperationalError):
            em.persist()
        monkeypatch.undo()

        _user(em.tenant, "second")
        em.persist()
        saved = em.store.load()
        assert json.loads(json.dumps(saved)) == json.loads(json.dumps(em.tenant.to_dict()))
    finally:
        em.close()
