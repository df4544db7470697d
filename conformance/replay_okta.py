# Okta Lifecycle Management (OIN SCIM 2.0 integrations), written from:
#   https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20/
#     (SCIM 2.0 protocol reference; markdown in github.com/okta/okta-developer-docs,
#      packages/@okta/vuepress-site/docs/reference/scim/scim-20/index.md)
#   https://developer.okta.com/docs/guides/scim-provisioning-integration-prepare/main/
#     (Build your SCIM API service: the spec test's variables, e.g. randomUsernameCaps and
#      UserIdThatDoesNotExist; behaviour only, nothing of the test file is used)
#   https://developer.okta.com/docs/guides/build-provisioning-integration/test-scim-app/
#     (CRUD test: create, update, deactivate, reactivate; Okta never deletes users)
#   https://github.com/Captain-P-Goldfish/SCIM-SDK/issues/757 ("Push now" on an empty group)
#   https://github.com/coder/coder/issues/15828 (AIW integrations deactivate with PUT)
#   https://github.com/medplum/medplum/issues/5679 (PATCH for activate, deactivate, password sync)
"""Okta: existence check, create, PUT updates, pathless PATCH (active, password), Group Push."""

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

HEADERS = {
    "User-Agent": "Okta SCIM Client 1.0.0",
    "Accept": "application/scim+json",
    "Content-Type": "application/scim+json; charset=utf-8",
}
PAGE = [("startIndex", "1"), ("count", "100")]
# The spec test's id for a user that does not exist.
MISSING_ID = "010101001010101011001010101011"


def _user_body(ctx: Ctx, key: str) -> dict[str, Any]:
    user_name = ctx.email(f"test.{key}")
    ctx.data[f"{key}.userName"] = user_name
    return {
        "schemas": [CORE_USER],
        "userName": user_name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": ctx.name("00ujl29u0le5T6Aj10h7"),
        "groups": [],
        # Okta's example password is "1mz050nq"; the directory applies Microsoft 365's
        # password policy (three of four character classes), so the replay sends one that
        # meets it, as an Okta tenant with a matching policy would.
        "password": "1mz050nQ!",
        "active": True,
    }


def _get(ctx: Ctx, kind: str, key: str) -> dict[str, Any]:
    return dict(expect(ctx.get(f"/{kind}/{ctx.need(key)}"), 200))


def first_page(ctx: Ctx) -> str:
    # The spec test starts by reading one user, with integers for the paging numbers.
    resp = ctx.get("/Users", query=[("count", "1"), ("startIndex", "1")])
    found = resources(resp)
    body = resp.json
    check(len(found) <= 1, f"count=1 answered {len(found)} users")
    for key in ("startIndex", "itemsPerPage"):
        check(isinstance(body.get(key), int), f"{key} is not an integer")
    return f"{body['totalResults']} users in all"


def exists_before_create(ctx: Ctx) -> str:
    ctx.data["user.userName"] = ctx.email("test.user")
    query = [eq_filter("userName", ctx.data["user.userName"]), *PAGE]
    check(resources(ctx.get("/Users", query=query)) == [], "a user not yet created was found")
    return "no match, so Okta creates"


def unknown_user_name(ctx: Ctx) -> str:
    query = [eq_filter("userName", "abcdefgh@example.com"), *PAGE]
    check(resources(ctx.get("/Users", query=query)) == [], "abcdefgh@example.com matched a user")
    return "0 results"


def create_user(key: str) -> Any:
    def run(ctx: Ctx) -> str:
        body = expect(ctx.post("/Users", _user_body(ctx, key)), 201)
        ctx.ids[key] = body["id"]
        check("password" not in body, "the password was returned")
        check(body.get("active") is True, "active is not true")
        return f"201, id {body['id']}"

    return run


def duplicate_create(ctx: Ctx) -> str:
    body = _user_body(ctx, "user")
    expect(ctx.post("/Users", body), 409)
    return "409"


def filter_in_capitals(ctx: Ctx) -> str:
    query = [eq_filter("userName", ctx.data["user.userName"].upper()), *PAGE]
    one(ctx.get("/Users", query=query), ctx.need("user"))
    return "found"


def missing_user(ctx: Ctx) -> str:
    expect(ctx.get(f"/Users/{MISSING_ID}"), 404)
    return "404"


def get_user(ctx: Ctx) -> str:
    doc = _get(ctx, "Users", "user")
    check(doc.get("userName") == ctx.data["user.userName"], "userName differs")
    check("password" not in doc, "the password was returned")
    return "200"


def put_update(ctx: Ctx) -> str:
    # Okta reads the user, changes what changed, and PUTs the whole object back.
    doc = _get(ctx, "Users", "user")
    user_name = ctx.data["user.userName"]
    body = {
        "schemas": [CORE_USER],
        "id": ctx.need("user"),
        "userName": user_name,
        "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
        "emails": [{"primary": True, "value": user_name, "type": "work", "display": user_name}],
        "active": True,
        "groups": [],
        "meta": {"resourceType": "User"},
    }
    check(doc.get("id") == body["id"], "GET answered another id")
    expect(ctx.put(f"/Users/{ctx.need('user')}", body), 200)
    name = _get(ctx, "Users", "user").get("name") or {}
    check(
        name.get("middleName") == "Excited" and name.get("givenName") == "Another",
        f"name is {name}",
    )
    return "stored"


def set_active(value: bool) -> Any:
    def run(ctx: Ctx) -> str:
        resp = ctx.patch(
            f"/Users/{ctx.need('user')}", [{"op": "replace", "value": {"active": value}}]
        )
        body = expect(resp, 200, 204)
        if resp.status == 200:
            check(body.get("active") is value, f"the answer says active {body.get('active')!r}")
        check(_get(ctx, "Users", "user").get("active") is value, f"active is not {value}")
        query = [eq_filter("userName", ctx.data["user.userName"]), *PAGE]
        one(ctx.get("/Users", query=query), ctx.need("user"))
        return f"active {value}, still found"

    return run


def password_sync(ctx: Ctx) -> str:
    ops = [{"op": "replace", "value": {"password": "t1meMa$heen"}}]
    body = expect(ctx.patch(f"/Users/{ctx.need('user')}", ops), 200, 204)
    check(not (isinstance(body, dict) and "password" in body), "the password was returned")
    return "accepted"


def import_users(ctx: Ctx) -> str:
    resp = ctx.get("/Users", query=PAGE)
    found = resources(resp)
    body = resp.json
    check(len(found) <= 100, f"count=100 answered {len(found)}")
    check(body.get("startIndex") == 1, "startIndex is not 1")
    if body["totalResults"] > 100:
        nxt = ctx.get("/Users", query=[("startIndex", "101"), ("count", "100")])
        resources(nxt)
        check(nxt.json.get("startIndex") == 101, "the second page does not start at 101")
    return f"{body['totalResults']} users"


def create_group(ctx: Ctx) -> str:
    ctx.data["group.name"] = ctx.name("Test SCIMv2")
    body = {"schemas": [CORE_GROUP], "displayName": ctx.data["group.name"], "members": []}
    created = expect(ctx.post("/Groups", body), 201)
    ctx.ids["group"] = created["id"]
    check(created.get("displayName") == ctx.data["group.name"], "displayName not echoed")
    return "201"


def get_group(ctx: Ctx) -> str:
    check(_get(ctx, "Groups", "group").get("displayName") == ctx.data["group.name"], "wrong group")
    return "200"


def rename_group(ctx: Ctx) -> str:
    # Sent before every membership update too; `id` rides inside the pathless value.
    new = ctx.name("Test SCIMv20")
    ops = [{"op": "replace", "value": {"id": ctx.need("group"), "displayName": new}}]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 200, 204)
    check(_get(ctx, "Groups", "group").get("displayName") == new, "displayName not replaced")
    ctx.data["group.name"] = new
    return "renamed"


def push_full_membership(ctx: Ctx) -> str:
    user, other = ctx.need("user"), ctx.need("other")
    value = [
        {"value": user, "display": ctx.data["user.userName"]},
        {"value": other, "display": ctx.data["other.userName"]},
    ]
    ops = [{"op": "replace", "path": "members", "value": value}]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 200, 204)
    got = members_of(_get(ctx, "Groups", "group"))
    check(got == {user, other}, f"members are {sorted(got)}")
    return "both members"


def remove_and_add(ctx: Ctx) -> str:
    # The reference's membership update: remove one by filter, add one with display, one request.
    user, other = ctx.need("user"), ctx.need("other")
    ops: list[dict[str, Any]] = [
        {"op": "remove", "path": f'members[value eq "{other}"]'},
        {
            "op": "add",
            "path": "members",
            "value": [{"value": user, "display": ctx.data["user.userName"]}],
        },
    ]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 200, 204)
    got = members_of(_get(ctx, "Groups", "group"))
    check(got == {user}, f"members are {sorted(got)}")
    return "one member left"


def push_empty_group(ctx: Ctx) -> str:
    ops = [{"op": "replace", "path": "members", "value": []}]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 200, 204)
    got = members_of(_get(ctx, "Groups", "group"))
    check(not got, f"members are {sorted(got)}")
    return "no members"


def import_groups(ctx: Ctx) -> str:
    found = resources(ctx.get("/Groups", query=PAGE))
    check(len(found) <= 100, f"count=100 answered {len(found)}")
    return f"{len(found)} on the first page"


def put_deactivate(ctx: Ctx) -> str:
    # App Integration Wizard apps deactivate with a PUT of the whole user.
    doc = _get(ctx, "Users", "other")
    body = {k: v for k, v in doc.items() if k not in ("meta",)}
    body["active"] = False
    body["meta"] = {"resourceType": "User"}
    expect(ctx.put(f"/Users/{ctx.need('other')}", body), 200)
    check(_get(ctx, "Users", "other").get("active") is False, "active is not false")
    return "deactivated"


def unlink_group(ctx: Ctx) -> str:
    expect(ctx.delete(f"/Groups/{ctx.need('group')}"), 204)
    expect(ctx.get(f"/Groups/{ctx.need('group')}"), 404)
    return "204, then 404 (Okta never deletes users: they stay deactivated)"


def replay() -> Replay:
    steps = [
        Step("spec test: GET /Users?count=1&startIndex=1", first_page),
        Step("existence check: filter userName, startIndex=1&count=100", exists_before_create),
        Step("unknown userName: 0 results", unknown_user_name),
        Step("create user (password, groups [], locale, externalId)", create_user("user")),
        Step("create the same user again: 409", duplicate_create),
        Step("filter userName in capitals", filter_in_capitals),
        Step("GET a user that does not exist: 404", missing_user),
        Step("GET user by id", get_user),
        Step("update: GET, then PUT the whole user", put_update),
        Step('deactivate: pathless replace {"active": false}', set_active(False)),
        Step('reactivate: pathless replace {"active": true}', set_active(True)),
        Step('password sync: pathless replace {"password"}', password_sync),
        Step("import users: startIndex=1&count=100", import_users),
        Step("create a second user", create_user("other")),
        Step('Group Push: create group with "members": []', create_group),
        Step("GET group by id", get_group),
        Step('rename: pathless replace {"id", "displayName"}', rename_group),
        Step("full push: replace members with two", push_full_membership),
        Step('remove members[value eq "id"] and add one, one request', remove_and_add),
        Step("push an empty group: replace members []", push_empty_group),
        Step("import groups: startIndex=1&count=100", import_groups),
        Step("AIW deactivate: PUT with active false", put_deactivate),
        Step("unlink pushed group, delete in app", unlink_group),
    ]
    return Replay("okta", "Okta (OIN SCIM 2.0)", steps, HEADERS)
