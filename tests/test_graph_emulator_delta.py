"""The emulator's delta queries: /users/delta and /groups/delta with members@delta report
the changes made through its Graph API, as an admin or the sync makes them.

Pages followed:
- https://learn.microsoft.com/en-us/graph/api/user-delta (`@removed`, `$select`, the id
  always returned, `manager@delta`)
- https://learn.microsoft.com/en-us/graph/api/group-delta (`members@delta`, a removed
  member with `"@removed": {"reason": "deleted"}`, `$deltatoken`, `$skiptoken`)
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from scim_server.graph.client import GraphClient
from tests.graph_emulator import RunningEmulator, run_emulator, settings_for


def _round(emulator: RunningEmulator, url: str, **kw: Any) -> tuple[list[dict[str, Any]], str]:
    """Every page of a delta round: (items, the deltaLink)."""
    items: list[dict[str, Any]] = []
    response = emulator.graph("GET", url, **kw)
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["value"]
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body
            return items, body["@odata.deltaLink"]
        response = emulator.graph("GET", body["@odata.nextLink"], headers=kw.get("headers", {}))


def test_group_delta_lists_members_then_only_changes(graph_emulator: RunningEmulator) -> None:
    a, b, c = (graph_emulator.create_user(n) for n in ("gda", "gdb", "gdc"))
    group = graph_emulator.create_group("deltas")
    quiet = graph_emulator.create_group("quiet")
    for user in (a, b):
        ref = graph_emulator.ref(user["id"])
        assert graph_emulator.graph("POST", f"/groups/{group['id']}/members/$ref", json=ref)
    first, link = _round(graph_emulator, "/groups/delta", params={"$select": "displayName,members"})
    by_id = {g["id"]: g for g in first}
    assert set(by_id) == {group["id"], quiet["id"]}
    assert {m["id"] for m in by_id[group["id"]]["members@delta"]} == {a["id"], b["id"]}
    assert by_id[group["id"]]["members@delta"][0]["@odata.type"] == "#microsoft.graph.user"
    assert "select=displayName%2Cmembers" in link  # the first request's $select is kept

    # nothing changed: nothing in the next round
    assert _round(graph_emulator, link)[0] == []

    gid = group["id"]
    assert graph_emulator.graph("DELETE", f"/groups/{gid}/members/{a['id']}/$ref").ok
    graph_emulator.graph("POST", f"/groups/{gid}/members/$ref", json=graph_emulator.ref(c["id"]))
    changes, link = _round(graph_emulator, link)
    assert [g["id"] for g in changes] == [gid]
    members = {m["id"]: m for m in changes[0]["members@delta"]}
    assert members[a["id"]]["@removed"] == {"reason": "deleted"}
    assert "@removed" not in members[c["id"]]
    assert b["id"] not in members  # unchanged members are not repeated
    assert changes[0]["displayName"] == "Deltas"  # the selected properties come too

    graph_emulator.graph("PATCH", f"/groups/{quiet['id']}", json={"displayName": "Loud"})
    graph_emulator.graph("DELETE", f"/groups/{gid}")
    changes, _ = _round(graph_emulator, link)
    by_id = {g["id"]: g for g in changes}
    assert by_id[quiet["id"]]["displayName"] == "Loud"
    # A security group is deleted for good (not restorable): "deleted".
    assert by_id[gid] == {"id": gid, "@removed": {"reason": "deleted"}}


def test_group_delta_pages_with_skiptokens(graph_emulator: RunningEmulator) -> None:
    for i in range(5):
        graph_emulator.create_group(f"paged{i}")
    prefer = {"Prefer": "odata.maxpagesize=2"}
    response = graph_emulator.graph("GET", "/groups/delta", headers=prefer)
    body = response.json()
    assert len(body["value"]) == 2 and "skiptoken=" in body["@odata.nextLink"]
    items, link = _round(graph_emulator, "/groups/delta", headers=prefer)
    assert len({g["id"] for g in items}) == 5 and "deltatoken=" in link


def test_user_delta_reports_deletes_restores_and_managers(
    graph_emulator: RunningEmulator,
) -> None:
    boss, worker = graph_emulator.create_user("boss"), graph_emulator.create_user("worker")
    select = {"$select": "displayName,accountEnabled,manager"}
    _, link = _round(graph_emulator, "/users/delta", params=select)
    ref = {"@odata.id": f"{graph_emulator.graph_url}/users/{boss['id']}"}
    graph_emulator.graph("PUT", f"/users/{worker['id']}/manager/$ref", json=ref)
    graph_emulator.graph("PATCH", f"/users/{boss['id']}", json={"accountEnabled": False})
    changes, link = _round(graph_emulator, link)
    by_id = {u["id"]: u for u in changes}
    assert by_id[worker["id"]]["manager@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": boss["id"]}
    ]
    assert by_id[boss["id"]]["accountEnabled"] is False
    assert by_id[boss["id"]]["manager@delta"] == []

    graph_emulator.graph("DELETE", f"/users/{worker['id']}")
    changes, link = _round(graph_emulator, link)
    # Soft-deleted, so restorable: "changed" (user-delta).
    assert changes == [{"id": worker["id"], "@removed": {"reason": "changed"}}]
    graph_emulator.graph("POST", f"/directory/deletedItems/{worker['id']}/restore")
    changes, _ = _round(graph_emulator, link)
    assert [u["id"] for u in changes] == [worker["id"]] and "@removed" not in changes[0]


def test_a_deleted_member_leaves_its_groups_in_the_delta(graph_emulator: RunningEmulator) -> None:
    user = graph_emulator.create_user("leaver")
    group = graph_emulator.create_group(
        "left",
        **{"members@odata.bind": [f"{graph_emulator.graph_url}/directoryObjects/{user['id']}"]},
    )
    _, link = _round(graph_emulator, "/groups/delta")
    graph_emulator.graph("DELETE", f"/users/{user['id']}")
    changes, link = _round(graph_emulator, link)
    assert changes[0]["id"] == group["id"]
    assert changes[0]["members@delta"][0]["@removed"] == {"reason": "deleted"}
    graph_emulator.graph("POST", f"/directory/deletedItems/{user['id']}/restore")
    changes, _ = _round(graph_emulator, link)
    assert changes[0]["members@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": user["id"]}
    ]


def test_the_client_follows_group_delta_rounds(graph_emulator: RunningEmulator) -> None:
    client = GraphClient(settings_for(graph_emulator))
    user = graph_emulator.create_user("clienty")
    group = graph_emulator.create_group("clienty")
    paced: list[int] = []
    first = client.groups_delta(pace=lambda: paced.append(1), page_size=1)
    assert [g["id"] for g in first.items] == [group["id"]] and paced == [1]
    client.add_member(group["id"], user["id"])
    later = client.groups_delta(first.delta_link)
    assert later.items[0]["members@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": user["id"]}
    ]


def test_a_delta_link_outlives_a_restart_of_the_sandbox(tmp_path: Path) -> None:
    """The sandbox keeps its tenant in a file: the change logs behind both delta queries
    are kept with it, so a worker's saved delta links still work after a restart."""
    options: dict[str, Any] = {
        "state_file": tmp_path / "tenant.sqlite3",
        "tenant_id": str(uuid.uuid4()),
        "client_id": "app",
        "client_secret": "s3cret-value",
    }
    with run_emulator(**options) as first:
        user = first.create_user("kept")
        group = first.create_group("kept")
        _, users_link = _round(first, "/users/delta")
        _, groups_link = _round(first, "/groups/delta")
        first.graph("POST", f"/groups/{group['id']}/members/$ref", json=first.ref(user["id"]))
        first.graph("PATCH", f"/users/{user['id']}", json={"jobTitle": "Kept"})
    with run_emulator(**options) as second:
        base = first.graph_url
        users, _ = _round(second, users_link.replace(base, second.graph_url))
        groups, _ = _round(second, groups_link.replace(base, second.graph_url))
    assert [u["jobTitle"] for u in users] == ["Kept"]
    assert groups[0]["members@delta"] == [
        {"@odata.type": "#microsoft.graph.user", "id": user["id"]}
    ]
