# OneLogin "SCIM Provisioner with SAML (SCIM v2 Enterprise)" connector, written from:
#   https://developers.onelogin.com/scim/implement-scim-api
#     (the calls OneLogin makes and the example flow: initial connection, lookup, create, ...)
#   https://developers.onelogin.com/scim/create-app (groups: Refresh Entitlements, rules)
#   https://onelogin.service-now.com/kb?id=kb_article_view&sysparm_article=KB0013904
#     (custom SCIM connector: the body is the admin's SCIM JSON Template)
#   https://doc.keepnetlabs.com/next-generation-product/platform/company/company-settings/scim-settings/onelogin-scim-integration
#     (a template with "active": "{$user.active}", "id": null, meta, manager.managerId)
#   https://support.templafy.com/hc/en-us/articles/360000981638-How-to-setup-SCIM-for-OneLogin
#     (a template with empty custom fields, address "city", misspelt "prefferedLanguage")
#   https://www.livingsecurity.com/migration/support/configuring-scim-for-onelogin
#     (a template with manager {"value", "displayName"} and addresses without type)
# The update method and the group PATCH body are not in the stored documents; the replay uses a
# PUT of the whole template and members add/remove with a value list (see the report).
"""OneLogin: template-driven bodies, lookup by userName, PUT updates, group PATCH, DELETE."""

from __future__ import annotations

from typing import Any

from conformance.runner import (
    CORE_GROUP,
    CORE_USER,
    ENTERPRISE,
    Ctx,
    Replay,
    Step,
    check,
    eq_filter,
    expect,
    members_of,
    one,
    resources,
    work_email,
)

# OneLogin's documentation asks for application/json answers; the replay sends JSON so too. The
# answer's content type is not checked: RFC 7644 servers answer application/scim+json.
HEADERS = {"Content-Type": "application/json"}


def _template(ctx: Ctx, key: str, *, title: str) -> dict[str, Any]:
    """The Templafy-style template with the user's values substituted. A user without a
    mobile, a fax or an organization gets empty strings where the template names them."""
    email = ctx.email(f"ol.{key}")
    ctx.data[f"{key}.userName"] = email
    return {
        "schemas": [CORE_USER, ENTERPRISE],
        "userName": email,
        "externalId": email,
        "name": {"givenName": "Olga", "familyName": "Login", "formatted": "Olga Login"},
        "displayName": "Olga Login",
        "addresses": [
            {
                "type": "work",
                "streetAddress": "1 Market St",
                "locality": "San Francisco",
                "postalCode": "94105",
                "city": "San Francisco",
                "region": "CA",
            }
        ],
        "prefferedLanguage": "en-US",
        "title": title,
        "phoneNumbers": [
            {"value": "+1 415 555 0100", "type": "work"},
            {"value": "", "type": "mobile"},
            {"value": "", "type": "fax"},
        ],
        ENTERPRISE: {"department": "Sales", "organization": ""},
    }


def _keepnet_template(ctx: Ctx, key: str, active: str) -> dict[str, Any]:
    """The Keepnet-style template: active as a string, "id": null, meta, manager.managerId."""
    email = ctx.email(f"ol.{key}")
    ctx.data[f"{key}.userName"] = email
    return {
        ENTERPRISE: {
            "department": "Security",
            "manager": {"managerId": "", "displayName": " "},
        },
        "active": active,
        "emails": [{"value": email, "type": "work", "primary": True}],
        "meta": {"resourceType": "User"},
        "name": {"familyName": "Login", "givenName": "Keep", "formatted": "Keep Login"},
        "userName": email,
        "id": None,
        "schemas": [CORE_USER],
    }


def _get_user(ctx: Ctx, key: str) -> dict[str, Any]:
    return dict(expect(ctx.get(f"/Users/{ctx.need(key)}"), 200))


def _lookup(ctx: Ctx, user_name: str) -> list[dict[str, Any]]:
    return resources(ctx.get("/Users", query=[eq_filter("userName", user_name)]))


def initial_connection(ctx: Ctx) -> str:
    # A userName OneLogin knows does not exist; an empty list or 404 both confirm the endpoint.
    resp = ctx.get("/Users", query=[eq_filter("userName", ctx.email("no-such-user"))])
    if resp.status == 404:
        return "404"
    check(resources(resp) == [], "a non-existent userName matched")
    return "200, empty"


def lookup_before_create(ctx: Ctx) -> str:
    check(_lookup(ctx, ctx.email("ol.user")) == [], "a user not yet created was found")
    return "no match, so OneLogin creates"


def create_user(ctx: Ctx) -> str:
    body = expect(ctx.post("/Users", _template(ctx, "user", title="Account Executive")), 201)
    ctx.ids["user"] = body["id"]
    doc = _get_user(ctx, "user")
    check(doc.get("title") == "Account Executive", "title not stored")
    phones = {p.get("type"): p.get("value") for p in doc.get("phoneNumbers") or []}
    check(phones.get("work") == "+1 415 555 0100", "the work phone was not stored")
    check((doc.get(ENTERPRISE) or {}).get("department") == "Sales", "department not stored")
    work = [a for a in doc.get("addresses") or [] if a.get("type") == "work"]
    check(len(work) == 1 and work[0].get("locality") == "San Francisco", "work address not stored")
    return "201, template stored (empty fields and unknown keys ignored)"


def create_string_active(ctx: Ctx) -> str:
    body = expect(ctx.post("/Users", _keepnet_template(ctx, "keep", "true")), 201)
    ctx.ids["keep"] = body["id"]
    doc = _get_user(ctx, "keep")
    check(doc.get("active") is True, f"active is {doc.get('active')!r}, not true")
    check((doc.get(ENTERPRISE) or {}).get("department") == "Security", "department not stored")
    return '201, "true" stored as true'


def create_with_manager(ctx: Ctx) -> str:
    # Living Security-style template: manager is OneLogin's own id for the manager (not a SCIM
    # id on this server) and addresses carry no type.
    email = ctx.email("ol.managed")
    body = {
        "schemas": [CORE_USER, ENTERPRISE],
        "userName": email,
        "name": {"familyName": "Login", "givenName": "Managed"},
        "title": "Analyst",
        "userType": "Employee",
        "timezone": "America/Los_Angeles",
        "emails": [{"value": email, "type": "work", "primary": True}],
        "addresses": [{"locality": "Austin", "region": "TX", "country": "US"}],
        ENTERPRISE: {
            "organization": "Acme",
            "division": "",
            "department": "Research",
            "manager": {"value": "48230716", "displayName": "Max Manager"},
        },
    }
    created = expect(ctx.post("/Users", body), 201)
    ctx.ids["managed"] = created["id"]
    doc = _get_user(ctx, "managed")
    check((doc.get(ENTERPRISE) or {}).get("department") == "Research", "department not stored")
    return "201"


def get_user(ctx: Ctx) -> str:
    one(
        ctx.get("/Users", query=[eq_filter("userName", ctx.data["user.userName"])]),
        ctx.need("user"),
    )
    check(_get_user(ctx, "user").get("userName") == ctx.data["user.userName"], "userName differs")
    return "found by userName and by id"


def put_update(ctx: Ctx) -> str:
    body = _template(ctx, "user", title="Sales Director")
    expect(ctx.put(f"/Users/{ctx.need('user')}", body), 200)
    check(_get_user(ctx, "user").get("title") == "Sales Director", "title not replaced")
    return "stored"


def put_emails_object(ctx: Ctx) -> str:
    # OneLogin has been seen sending `emails` as one object rather than a list.
    body = _template(ctx, "user", title="Sales Director")
    new_email = ctx.email("ol.user.new")
    body["emails"] = {"value": new_email, "type": "work", "primary": True}
    expect(ctx.put(f"/Users/{ctx.need('user')}", body), 200)
    check(work_email(_get_user(ctx, "user")) == new_email, "the work email was not stored")
    return "stored as a one-item list"


def create_peer(ctx: Ctx) -> str:
    created = expect(ctx.post("/Users", _template(ctx, "peer", title="")), 201)
    ctx.ids["peer"] = created["id"]
    return '201 (an empty "title")'


def suspend(ctx: Ctx) -> str:
    body = _keepnet_template(ctx, "keep", "false")
    expect(ctx.put(f"/Users/{ctx.need('keep')}", body), 200)
    check(_get_user(ctx, "keep").get("active") is False, "active is not false")
    check(len(_lookup(ctx, ctx.data["keep.userName"])) == 1, "a suspended user is not found")
    return "active false, still found"


def refresh_entitlements(ctx: Ctx) -> str:
    found = resources(ctx.get("/Groups"))
    return f"{len(found)} groups listed"


def create_group(ctx: Ctx) -> str:
    ctx.data["group.name"] = ctx.name("OneLogin Sales")
    body = {"schemas": [CORE_GROUP], "displayName": ctx.data["group.name"]}
    created = expect(ctx.post("/Groups", body), 201)
    ctx.ids["group"] = created["id"]
    return "201"


def add_members(ctx: Ctx) -> str:
    user, peer = ctx.need("user"), ctx.need("peer")
    ops = [{"op": "add", "path": "members", "value": [{"value": user}, {"value": peer}]}]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 200, 204)
    got = members_of(dict(expect(ctx.get(f"/Groups/{ctx.need('group')}"), 200)))
    check(got == {user, peer}, f"members are {sorted(got)}")
    return "two members"


def remove_member(ctx: Ctx) -> str:
    peer = ctx.need("peer")
    ops = [{"op": "remove", "path": "members", "value": [{"value": peer}]}]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 200, 204)
    got = members_of(dict(expect(ctx.get(f"/Groups/{ctx.need('group')}"), 200)))
    check(got == {ctx.need("user")}, f"members are {sorted(got)}")
    return "one member left"


def delete_users(ctx: Ctx) -> str:
    ctx.need("user")
    for key in ("user", "peer", "keep", "managed"):
        if key in ctx.ids:
            expect(ctx.delete(f"/Users/{ctx.ids[key]}"), 204)
            expect(ctx.get(f"/Users/{ctx.ids[key]}"), 404)
    group = dict(expect(ctx.get(f"/Groups/{ctx.need('group')}"), 200))
    check(not members_of(group), "deleted users are still members")
    return "204, then 404; the group is left, as OneLogin has no Delete Group call"


def replay() -> Replay:
    steps = [
        Step("initial connection: filter a userName known not to exist", initial_connection),
        Step("lookup by userName before create", lookup_before_create),
        Step("create user from the template (empty strings, unknown keys)", create_user),
        Step(
            'create user with "active": "true", "id": null, meta, managerId', create_string_active
        ),
        Step(
            "create user with manager {OneLogin id, displayName}, untyped address",
            create_with_manager,
        ),
        Step("get user by userName filter and by id", get_user),
        Step("update user: PUT the whole template", put_update),
        Step("update user with emails as an object, not a list", put_emails_object),
        Step('suspend: PUT with "active": "false"', suspend),
        Step("create a second user from the template", create_peer),
        Step("Refresh Entitlements: GET /Groups", refresh_entitlements),
        Step("create group", create_group),
        Step("patch group: add members", add_members),
        Step("patch group: remove a member with a value list", remove_member),
        Step("delete users", delete_users),
    ]
    return Replay("onelogin", "OneLogin SCIM v2 Enterprise connector", steps, HEADERS)
