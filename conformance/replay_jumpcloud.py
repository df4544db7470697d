# JumpCloud "Custom SCIM" Identity Management connector, written from:
#   https://jumpcloud.com/support/provision-and-manage-users-and-groups-in-apps-using-custom-scim-identity-management-integration
#     (Test Connection creates a test user and a test group, then deletes them)
#   https://jumpcloud.com/support (connector articles, "Group Management Considerations": empty
#     groups are not created, existing groups are taken over by name, renames, deletes;
#     attribute mapping username/firstname/lastname/name -> userName/name.*/displayName)
#   https://jumpcloud.com/support (SCIM DI events: user_deprovision sets the user inactive)
#   https://boxyhq.com/docs/directory-sync/providers/jumpcloud (Test User Email, Test Connection)
#   https://app.uni-moni.com/en/kb/sso-setup-jumpcloud (member PATCH in the Azure style:
#     value=[{value: uid}] without a filter)
# Request bodies beyond these (one replace per attribute with a path, minimal member objects)
# follow public third-party notes; see the report for how sure each shape is.
"""JumpCloud: test user and group at Test Connection, lookups by name, PATCH per attribute."""

from __future__ import annotations

from typing import Any

from conformance.runner import (
    CORE_GROUP,
    CORE_USER,
    Ctx,
    Replay,
    Step,
    check,
    eq_filter,
    expect,
    members_of,
    one,
    resources,
)

HEADERS: dict[str, str] = {}


def _user_body(ctx: Ctx, key: str, given: str, family: str) -> dict[str, Any]:
    email = ctx.email(f"jc.{key}")
    ctx.data[f"{key}.userName"] = email
    return {
        "schemas": [CORE_USER],
        "userName": email,
        "name": {"givenName": given, "familyName": family},
        "displayName": f"{given} {family}",
        "emails": [{"value": email, "type": "work", "primary": True}],
        "active": True,
    }


def _get(ctx: Ctx, kind: str, key: str) -> dict[str, Any]:
    return dict(expect(ctx.get(f"/{kind}/{ctx.need(key)}"), 200))


def activate(ctx: Ctx) -> str:
    found = resources(ctx.get("/Users"))
    return f"200, {len(found)} users on the first page"


def test_connection(ctx: Ctx) -> str:
    # A test user (the admin's Test User Email) and a test group, then both deleted.
    user = expect(ctx.post("/Users", _user_body(ctx, "test", "Test", "User")), 201)
    group_body = {
        "schemas": [CORE_GROUP],
        "displayName": ctx.name("JumpCloud Test Group"),
        "members": [{"value": user["id"]}],
    }
    group = expect(ctx.post("/Groups", group_body), 201)
    expect(ctx.delete(f"/Groups/{group['id']}"), 204)
    expect(ctx.delete(f"/Users/{user['id']}"), 204)
    expect(ctx.get(f"/Users/{user['id']}"), 404)
    expect(ctx.get(f"/Groups/{group['id']}"), 404)
    return "created and deleted a test user and group"


def lookup_before_create(ctx: Ctx) -> str:
    query = [eq_filter("userName", ctx.email("jc.user"))]
    check(resources(ctx.get("/Users", query=query)) == [], "a user not yet created was found")
    return "no match, so JumpCloud creates"


def create_user(key: str, given: str, family: str) -> Any:
    def run(ctx: Ctx) -> str:
        created = expect(ctx.post("/Users", _user_body(ctx, key, given, family)), 201)
        ctx.ids[key] = created["id"]
        query = [eq_filter("userName", ctx.data[f"{key}.userName"])]
        one(ctx.get("/Users", query=query), created["id"])
        return "201, found by userName"

    return run


def update_per_attribute(ctx: Ctx) -> str:
    ops = [
        {"op": "replace", "path": "name.givenName", "value": "John"},
        {"op": "replace", "path": "name.familyName", "value": "Smith"},
        {"op": "replace", "path": "displayName", "value": "John Smith"},
    ]
    expect(ctx.patch(f"/Users/{ctx.need('user')}", ops), 200, 204)
    doc = _get(ctx, "Users", "user")
    name = doc.get("name") or {}
    check(name.get("givenName") == "John" and name.get("familyName") == "Smith", f"name is {name}")
    check(doc.get("displayName") == "John Smith", "displayName not replaced")
    return "stored"


def lookup_group(ctx: Ctx) -> str:
    # Before creating, JumpCloud looks for a group of the same name to take over.
    ctx.data["group.name"] = ctx.name("JumpCloud Engineering")
    query = [eq_filter("displayName", ctx.data["group.name"])]
    check(resources(ctx.get("/Groups", query=query)) == [], "a group not yet created was found")
    return "no match, so JumpCloud creates"


def create_group(ctx: Ctx) -> str:
    # Empty groups are not created: the first push carries the first member.
    body = {
        "schemas": [CORE_GROUP],
        "displayName": ctx.data.get("group.name") or ctx.name("JumpCloud Engineering"),
        "members": [{"value": ctx.need("user")}],
    }
    created = expect(ctx.post("/Groups", body), 201)
    ctx.ids["group"] = created["id"]
    check(members_of(_get(ctx, "Groups", "group")) == {ctx.need("user")}, "the member is missing")
    return "201 with its member"


def add_member(ctx: Ctx) -> str:
    other = ctx.need("other")
    ops = [{"op": "add", "path": "members", "value": [{"value": other}]}]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 200, 204)
    got = members_of(_get(ctx, "Groups", "group"))
    check(got == {ctx.need("user"), other}, f"members are {sorted(got)}")
    return "two members"


def remove_member(ctx: Ctx) -> str:
    other = ctx.need("other")
    ops = [{"op": "remove", "path": "members", "value": [{"value": other}]}]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 200, 204)
    got = members_of(_get(ctx, "Groups", "group"))
    check(got == {ctx.need("user")}, f"members are {sorted(got)}")
    return "one member left"


def rename_group(ctx: Ctx) -> str:
    new = ctx.name("JumpCloud Platform")
    ops = [{"op": "replace", "path": "displayName", "value": new}]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 200, 204)
    check(_get(ctx, "Groups", "group").get("displayName") == new, "displayName not replaced")
    one(ctx.get("/Groups", query=[eq_filter("displayName", new)]), ctx.need("group"))
    return "renamed"


def deprovision(ctx: Ctx) -> str:
    ops = [{"op": "replace", "path": "active", "value": False}]
    expect(ctx.patch(f"/Users/{ctx.need('other')}", ops), 200, 204)
    check(_get(ctx, "Users", "other").get("active") is False, "active is not false")
    return "inactive"


def delete_group(ctx: Ctx) -> str:
    expect(ctx.delete(f"/Groups/{ctx.need('group')}"), 204)
    expect(ctx.get(f"/Groups/{ctx.need('group')}"), 404)
    return "204, then 404"


def delete_users(ctx: Ctx) -> str:
    for key in ("user", "other"):
        expect(ctx.delete(f"/Users/{ctx.need(key)}"), 204)
        expect(ctx.get(f"/Users/{ctx.need(key)}"), 404)
    return "204, then 404"


def replay() -> Replay:
    steps = [
        Step("activate: GET /Users", activate),
        Step("test connection: create and delete a test user and group", test_connection),
        Step("lookup by userName before create", lookup_before_create),
        Step("create user", create_user("user", "Jane", "Cloud")),
        Step("update: one replace per attribute, with a path", update_per_attribute),
        Step("create a second user", create_user("other", "Sam", "Jump")),
        Step("lookup group by displayName before create", lookup_group),
        Step("create group with its first member (no empty groups)", create_group),
        Step('add member {"value"} only', add_member),
        Step("remove member with a value list, no filter", remove_member),
        Step("rename group", rename_group),
        Step("deprovision: replace active false, with a path", deprovision),
        Step("delete group", delete_group),
        Step("delete users", delete_users),
    ]
    return Replay("jumpcloud", "JumpCloud Custom SCIM connector", steps, HEADERS)
