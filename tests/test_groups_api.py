"""/Groups: membership as rows, PATCH answers, members display (RFC 7644 §3.5.2)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask

from tests.conftest import ScimClient

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _patch(scim: ScimClient, gid: str, *ops: dict, query: str = "") -> object:  # type: ignore[type-arg]
    return scim.patch(f"/Groups/{gid}{query}", {"schemas": [PATCH], "Operations": list(ops)})


def test_create_group_with_members_and_display(scim: ScimClient) -> None:
    a = scim.user("a", displayName="Alice")
    b = scim.user("b")
    group = scim.group("Team", members=[a["id"], b["id"]])
    members = {m["value"]: m for m in group["members"]}
    assert members[a["id"]]["display"] == "Alice"
    assert members[b["id"]]["display"] == "b"  # no displayName: the userName
    assert members[a["id"]]["type"] == "User"
    assert members[a["id"]]["$ref"].endswith(f"/Users/{a['id']}")


def test_group_member_display_follows_current_display_name(scim: ScimClient) -> None:
    a = scim.user("a", displayName="Alice")
    group = scim.group("Team", members=[a["id"]])
    scim.put(f"/Users/{a['id']}", {"userName": "a", "displayName": "Alicia"})
    assert scim.get(f"/Groups/{group['id']}").get_json()["members"][0]["display"] == "Alicia"


def test_patch_group_answers_204_unless_attributes_requested(scim: ScimClient) -> None:
    a = scim.user("a")
    group = scim.group("Team")
    response = _patch(
        scim, group["id"], {"op": "add", "path": "members", "value": [{"value": a["id"]}]}
    )
    assert response.status_code == 204  # type: ignore[attr-defined]
    assert response.headers["ETag"]  # type: ignore[attr-defined]
    b = scim.user("b")
    with_body = _patch(
        scim,
        group["id"],
        {"op": "add", "path": "members", "value": [{"value": b["id"]}]},
        query="?excludedAttributes=members",
    )
    assert with_body.status_code == 200  # type: ignore[attr-defined]
    assert "members" not in with_body.get_json()  # type: ignore[attr-defined]
    assert len(scim.get(f"/Groups/{group['id']}").get_json()["members"]) == 2


def test_remove_member_by_filter_and_replace_members(scim: ScimClient) -> None:
    a, b, c = (scim.user(n) for n in "abc")
    group = scim.group("Team", members=[a["id"], b["id"]])
    _patch(scim, group["id"], {"op": "remove", "path": f'members[value eq "{a["id"]}"]'})
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").get_json()["members"]] == [
        b["id"]
    ]
    _patch(scim, group["id"], {"op": "replace", "path": "members", "value": [{"value": c["id"]}]})
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").get_json()["members"]] == [
        c["id"]
    ]
    _patch(scim, group["id"], {"op": "remove", "path": "members"})
    assert "members" not in scim.get(f"/Groups/{group['id']}").get_json()


def test_adding_unknown_member_is_a_no_op(scim: ScimClient) -> None:
    group = scim.group("Team")
    response = _patch(
        scim, group["id"], {"op": "add", "path": "members", "value": [{"value": "no-such-user"}]}
    )
    assert response.status_code == 204  # type: ignore[attr-defined]
    assert "members" not in scim.get(f"/Groups/{group['id']}").get_json()


def test_group_as_member(scim: ScimClient) -> None:
    inner = scim.group("Inner")
    outer = scim.group("Outer", members=[inner["id"]])
    assert outer["members"][0]["type"] == "Group"
    assert outer["members"][0]["display"] == "Inner"


def test_rename_and_duplicate_name(scim: ScimClient) -> None:
    group = scim.group("Team")
    scim.group("Other")
    _patch(scim, group["id"], {"op": "replace", "path": "displayName", "value": "Squad"})
    assert scim.get(f"/Groups/{group['id']}").get_json()["displayName"] == "Squad"
    clash = _patch(scim, group["id"], {"op": "replace", "path": "displayName", "value": "OTHER"})
    assert clash.status_code == 409  # type: ignore[attr-defined]
    assert scim.post("/Groups", {"displayName": "squad"}).status_code == 409


def test_delete_group_removes_memberships(scim: ScimClient) -> None:
    a = scim.user("a")
    group = scim.group("Team", members=[a["id"]])
    assert scim.delete(f"/Groups/{group['id']}").status_code == 204
    assert "groups" not in scim.get(f"/Users/{a['id']}").get_json()


def test_deleting_user_removes_membership(scim: ScimClient) -> None:
    a = scim.user("a")
    group = scim.group("Team", members=[a["id"]])
    scim.delete(f"/Users/{a['id']}")
    assert "members" not in scim.get(f"/Groups/{group['id']}").get_json()


def test_put_group_replaces_members(scim: ScimClient) -> None:
    a, b = scim.user("a"), scim.user("b")
    group = scim.group("Team", members=[a["id"]])
    response = scim.put(
        f"/Groups/{group['id']}", {"displayName": "Team", "members": [{"value": b["id"]}]}
    )
    assert response.status_code == 200
    assert [m["value"] for m in response.get_json()["members"]] == [b["id"]]


def test_adding_one_member_does_not_load_the_group(scim: ScimClient, app: Flask) -> None:
    """The statements run for one add never select the group's member list."""
    users = [scim.user(f"u{i}") for i in range(30)]
    group = scim.group("Big", members=[u["id"] for u in users[:-1]])
    from scim_server.db import db

    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        response = _patch(
            scim,
            group["id"],
            {"op": "add", "path": "members", "value": [{"value": users[-1]["id"]}]},
        )
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 204  # type: ignore[attr-defined]
    member_reads = [
        s for s in statements if "FROM group_members" in s and s.lstrip().startswith("SELECT")
    ]
    # Only a lookup restricted to the added ids, never the whole member list.
    assert member_reads, statements
    assert all("member_id IN" in s for s in member_reads), member_reads
    assert len(scim.get(f"/Groups/{group['id']}").get_json()["members"]) == 30


def test_member_display_follows_the_members_current_display_name(scim: ScimClient) -> None:
    a = scim.user("a", displayName="Alice")
    b = scim.user("b")  # no displayName
    group = scim.group("Team")
    _patch(
        scim,
        group["id"],
        {
            "op": "add",
            "path": "members",
            "value": [
                {"value": a["id"], "display": "Alice Liddell"},
                {"value": b["id"], "display": "Bob B."},
            ],
        },
    )
    scim.patch(
        f"/Users/{a['id']}",
        {
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "displayName", "value": "Al"}],
        },
    )
    members = {
        m["value"]: m["display"] for m in scim.get(f"/Groups/{group['id']}").get_json()["members"]
    }
    # The member's current displayName wins; without one, the display the client gave.
    assert members == {a["id"]: "Al", b["id"]: "Bob B."}
