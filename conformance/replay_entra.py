# Microsoft Entra ID provisioning service, both dialects, written from:
#   https://learn.microsoft.com/en-us/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups
#     (Tutorial: Develop and plan provisioning for a SCIM endpoint in Microsoft Entra ID)
#   https://learn.microsoft.com/en-us/entra/identity/app-provisioning/application-provisioning-config-problem-scim-compatibility
#     (Known issues ... with SCIM 2.0 protocol compliance ...; the aadOptscim062020 flag)
#   https://github.com/MicrosoftDocs/azure-docs (older revision of the tutorial: "Example 4", the
#     manager check `filter=id eq ... and manager eq ...&attributes=id`)
#   https://github.com/AzureAD/SCIMReferenceCode/issues/21 (active sent as the string "True")
#   https://github.com/python-scim/scim2-models/issues/39 and
#   https://github.com/Captain-P-Goldfish/SCIM-SDK/issues/301 (capitalised names: UserName, Active)
#   https://github.com/simpleidserver/SimpleIdServer/issues/808 (Add on addresses[type eq "work"].x)
#   https://github.com/Captain-P-Goldfish/SCIM-SDK/issues/686 (manager as a bare string)
#   https://github.com/Captain-P-Goldfish/scim-for-keycloak/issues/26 (flag on the tenant URL)
"""Microsoft Entra ID: the default dialect and the one behind `?aadOptscim062020`."""

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
    random_guid,
    resources,
    work_email,
)

ADSCIM_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
FLAG = "aadOptscim062020"


def _user_body(ctx: Ctx, key: str) -> dict[str, Any]:
    """Create User as in the tutorial's example request."""
    external = random_guid()
    ctx.data[f"{key}.externalId"] = external
    ctx.data[f"{key}.userName"] = ctx.name(f"Test_User_{key}")
    ctx.data[f"{key}.email"] = ctx.email(f"Test_User_{key}")
    return {
        "schemas": [CORE_USER, ENTERPRISE],
        "externalId": external,
        "userName": ctx.data[f"{key}.userName"],
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": ctx.data[f"{key}.email"]}],
        "meta": {"resourceType": "User"},
        "name": {
            "formatted": "givenName familyName",
            "familyName": "familyName",
            "givenName": "givenName",
        },
        "roles": [],
    }


def _get_user(ctx: Ctx, key: str = "user") -> dict[str, Any]:
    body = expect(ctx.get(f"/Users/{ctx.need(key)}"), 200)
    check(isinstance(body, dict), "GET /Users/{id} did not answer a JSON object")
    return dict(body)


def _get_group(ctx: Ctx) -> dict[str, Any]:
    body = expect(ctx.get(f"/Groups/{ctx.need('group')}"), 200)
    return dict(body)


# ------------------------------------------------------------------ steps shared by both dialects


def test_connection(ctx: Ctx) -> str:
    # "queries the SCIM endpoint for a user that doesn't exist, using a random GUID as the
    # matching property"; the expected answer is 200 with an empty ListResponse.
    found = resources(ctx.get("/Users", query=[eq_filter("userName", random_guid())]))
    check(found == [], f"a random GUID matched {len(found)} users")
    return "200, empty ListResponse"


def schema_discovery(ctx: Ctx) -> str:
    found = resources(ctx.get("/Schemas"))
    ids = {s.get("id") for s in found}
    check(CORE_USER in ids and CORE_GROUP in ids, "the User or Group schema is missing")
    return f"{len(found)} schemas"


def match_before_create(ctx: Ctx) -> str:
    ctx.data["user.userName"] = ctx.name("Test_User_user")
    found = resources(ctx.get("/Users", query=[eq_filter("userName", ctx.data["user.userName"])]))
    check(found == [], "a userName not yet created was found")
    return "no match, so Entra creates"


def create_user(ctx: Ctx) -> str:
    body = expect(ctx.post("/Users", _user_body(ctx, "user")), 201)
    ctx.ids["user"] = body["id"]
    check(body.get("userName") == ctx.data["user.userName"], "userName not echoed")
    check(body.get("externalId") == ctx.data["user.externalId"], "externalId not echoed")
    return f"201, id {body['id']}"


def get_user(ctx: Ctx) -> str:
    doc = _get_user(ctx)
    check(doc.get("active") is True, f"active is {doc.get('active')!r}")
    check(work_email(doc) == ctx.data["user.email"], "the work email was not stored")
    return "200"


def get_unknown_user(ctx: Ctx) -> str:
    expect(ctx.get(f"/Users/{random_guid()}"), 404)
    return "404"


def filter_external_id(ctx: Ctx) -> str:
    one(
        ctx.get("/Users", query=[eq_filter("externalId", ctx.data["user.externalId"])]),
        ctx.need("user"),
    )
    return "1 match"


def filter_work_email(ctx: Ctx) -> str:
    flt = f'emails[type eq "work"].value eq "{ctx.data["user.email"]}"'
    one(ctx.get("/Users", query=[("filter", flt)]), ctx.need("user"))
    return "1 match"


def patch_multi_valued(op: str) -> Any:
    def run(ctx: Ctx) -> str:
        new_email = ctx.email("updatedEmail")
        resp = ctx.patch(
            f"/Users/{ctx.need('user')}",
            [
                {"op": op, "path": 'emails[type eq "work"].value', "value": new_email},
                {"op": op, "path": "name.familyName", "value": "updatedFamilyName"},
            ],
        )
        expect(resp, 200, 204)
        doc = _get_user(ctx)
        check(work_email(doc) == new_email, f"work email is {work_email(doc)!r}")
        check(
            (doc.get("name") or {}).get("familyName") == "updatedFamilyName",
            "familyName not replaced",
        )
        ctx.data["user.email"] = new_email
        return "stored"

    return run


def add_single_valued(op: str) -> Any:
    def run(ctx: Ctx) -> str:
        resp = ctx.patch(
            f"/Users/{ctx.need('user')}", [{"op": op, "path": "nickName", "value": "Babs"}]
        )
        expect(resp, 200, 204)
        check(_get_user(ctx).get("nickName") == "Babs", "nickName not stored")
        return "stored"

    return run


def add_work_address_parts(ctx: Ctx) -> str:
    # Entra adds a work address one sub-attribute at a time, on a value path with no match yet.
    parts = {
        "streetAddress": "1 Main St",
        "locality": "Redmond",
        "region": "WA",
        "postalCode": "98052",
        "country": "US",
    }
    ops = [
        {"op": "Add", "path": f'addresses[type eq "work"].{k}', "value": v}
        for k, v in parts.items()
    ]
    expect(ctx.patch(f"/Users/{ctx.need('user')}", ops), 200, 204)
    work = [a for a in _get_user(ctx).get("addresses") or [] if a.get("type") == "work"]
    check(len(work) == 1, f"expected one work address, found {len(work)}")
    missing = [k for k, v in parts.items() if work[0].get(k) != v]
    check(not missing, f"work address lacks {', '.join(missing)}")
    return "one work address"


def create_manager(ctx: Ctx) -> str:
    body = expect(ctx.post("/Users", _user_body(ctx, "manager")), 201)
    ctx.ids["manager"] = body["id"]
    return "201"


def add_manager_reference(ctx: Ctx) -> str:
    # Tutorial, Example 5: "op":"Add","path":"manager", value a list with $ref and value.
    manager = ctx.need("manager")
    ref = f"{ctx.base_url}/Users/{manager}"
    ops = [{"op": "Add", "path": "manager", "value": [{"$ref": ref, "value": manager}]}]
    expect(ctx.patch(f"/Users/{ctx.need('user')}", ops), 200, 204)
    got = (_get_user(ctx).get(ENTERPRISE) or {}).get("manager") or {}
    check(got.get("value") == manager, f"manager is {got!r}")
    return "stored"


def manager_check(ctx: Ctx) -> str:
    # Tutorial (older revision), Example 4: does this user have this manager?
    flt = f'id eq "{ctx.need("user")}" and manager eq "{ctx.need("manager")}"'
    one(ctx.get("/Users", query=[("filter", flt), ("attributes", "id")]), ctx.need("user"))
    return "1 match"


def manager_bare_string(op: str) -> Any:
    def run(ctx: Ctx) -> str:
        manager = ctx.need("manager")
        ops = [{"op": op, "path": f"{ENTERPRISE}:manager", "value": manager}]
        expect(ctx.patch(f"/Users/{ctx.need('user')}", ops), 200, 204)
        got = (_get_user(ctx).get(ENTERPRISE) or {}).get("manager") or {}
        check(got.get("value") == manager, f"manager is {got!r}")
        return "stored"

    return run


def rename_user(op: str) -> Any:
    def run(ctx: Ctx) -> str:
        new = ctx.email("renamed")
        expect(
            ctx.patch(f"/Users/{ctx.need('user')}", [{"op": op, "path": "userName", "value": new}]),
            200,
        )
        one(ctx.get("/Users", query=[eq_filter("userName", new)]), ctx.need("user"))
        ctx.data["user.userName"] = new
        return "renamed and found by the new userName"

    return run


def set_active(op: str, value: Any, expected: bool) -> Any:
    def run(ctx: Ctx) -> str:
        ops = [{"op": op, "path": "active", "value": value}]
        expect(ctx.patch(f"/Users/{ctx.need('user')}", ops), 200, 204)
        check(_get_user(ctx).get("active") is expected, f"active is not {expected}")
        # A soft-deleted user is still returned by a query.
        one(
            ctx.get("/Users", query=[eq_filter("userName", ctx.data["user.userName"])]),
            ctx.need("user"),
        )
        return f"active {expected}, still found"

    return run


def create_group(ctx: Ctx) -> str:
    ctx.data["group.name"] = ctx.name("displayName")
    body = {
        "schemas": [CORE_GROUP, ADSCIM_GROUP],
        "externalId": random_guid(),
        "displayName": ctx.data["group.name"],
        "meta": {"resourceType": "Group"},
    }
    created = expect(ctx.post("/Groups", body), 201)
    ctx.ids["group"] = created["id"]
    return "201"


def get_group_without_members(ctx: Ctx) -> str:
    resp = ctx.get(f"/Groups/{ctx.need('group')}", query=[("excludedAttributes", "members")])
    doc = expect(resp, 200)
    check(doc.get("displayName") == ctx.data["group.name"], "displayName differs")
    check("members" not in doc, "members returned although excluded")
    return "200"


def group_by_display_name(ctx: Ctx) -> str:
    query = [("excludedAttributes", "members"), eq_filter("displayName", ctx.data["group.name"])]
    found = one(ctx.get("/Groups", query=query), ctx.need("group"))
    check("members" not in found, "members returned although excluded")
    return "1 match"


def add_member(op: str) -> Any:
    def run(ctx: Ctx) -> str:
        user = ctx.need("user")
        ops = [{"op": op, "path": "members", "value": [{"$ref": None, "value": user}]}]
        expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 204, 200)
        check(user in members_of(_get_group(ctx)), "the user is not a member")
        return "member"

    return run


def member_check(ctx: Ctx) -> str:
    # "Requests to determine whether a reference attribute has a certain value are requests
    # about the members attribute."
    flt = f'id eq "{ctx.need("group")}" and members eq "{ctx.need("user")}"'
    query = [("excludedAttributes", "members"), ("filter", flt)]
    one(ctx.get("/Groups", query=query), ctx.need("group"))
    return "1 match"


def rename_group(op: str) -> Any:
    def run(ctx: Ctx) -> str:
        new = ctx.name("updatedDisplayName")
        ops = [{"op": op, "path": "displayName", "value": new}]
        expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 204, 200)
        check(_get_group(ctx).get("displayName") == new, "displayName not replaced")
        ctx.data["group.name"] = new
        return "renamed"

    return run


def delete_group(ctx: Ctx) -> str:
    expect(ctx.delete(f"/Groups/{ctx.need('group')}"), 204)
    expect(ctx.get(f"/Groups/{ctx.need('group')}"), 404)
    return "204, then 404"


def delete_users(ctx: Ctx) -> str:
    for key in ("user", "manager", "capitalised"):
        if key in ctx.ids:
            expect(ctx.delete(f"/Users/{ctx.ids[key]}"), 204)
            expect(ctx.get(f"/Users/{ctx.ids[key]}"), 404)
    ctx.need("user")
    return "204, then 404"


# ------------------------------------------------------------------ default dialect only


def create_capitalised(ctx: Ctx) -> str:
    # Entra's SCIM validator posts capitalised attribute names.
    user_name = ctx.name("UserName123")
    body = {
        "UserName": user_name,
        "Active": True,
        "DisplayName": "BobIsAmazing",
        "schemas": [CORE_USER],
        "externalId": random_guid(),
        "name": {"formatted": "Ryan Leenay", "familyName": "Leenay", "givenName": "Ryan"},
        "emails": [
            {"Primary": True, "type": "work", "value": ctx.email("testing")},
            {"Primary": False, "type": "home", "value": ctx.email("testinghome")},
        ],
    }
    created = expect(ctx.post("/Users", body), 201)
    ctx.ids["capitalised"] = created["id"]
    doc = _get_user(ctx, "capitalised")
    check(doc.get("userName") == user_name, "userName not stored")
    check(doc.get("displayName") == "BobIsAmazing", "DisplayName not stored as displayName")
    primary = [e for e in doc.get("emails") or [] if e.get("primary") is True]
    check(len(primary) == 1 and primary[0].get("type") == "work", "Primary not stored as primary")
    return "stored under the canonical names"


def create_with_nulls(ctx: Ctx) -> str:
    # Tutorial, Example 2: unmapped attributes arrive as null, and the enterprise URN is
    # misspelt in "schemas".
    body = _user_body(ctx, "nulls")
    body["schemas"] = [CORE_USER, "urn:ietf:params:scim:schemas:extension:enterprise:2.0User"]
    body["displayName"] = "Joy Young"
    for key in ("addresses", "phoneNumbers", "preferredLanguage", "title", "department", "manager"):
        body[key] = None
    created = expect(ctx.post("/Users", body), 201)
    ctx.ids["nulls"] = created["id"]
    check(_get_user(ctx, "nulls").get("displayName") == "Joy Young", "displayName not stored")
    expect(ctx.delete(f"/Users/{created['id']}"), 204)
    return "201, nulls ignored"


def filter_external_id_unquoted(ctx: Ctx) -> str:
    # Tutorial, Example 1, as printed: GET /Users?filter=externalId eq jyoung (no quotes).
    flt = f"externalId eq {ctx.data['user.externalId']}"
    one(ctx.get("/Users", query=[("filter", flt)]), ctx.need("user"))
    return "1 match"


def create_string_active(ctx: Ctx) -> str:
    # "our service sends it as a string today" (SCIMReferenceCode#21): POST with "active": "True".
    body = _user_body(ctx, "stringy")
    body["active"] = "True"
    created = expect(ctx.post("/Users", body), 201)
    ctx.ids["stringy"] = created["id"]
    check(_get_user(ctx, "stringy").get("active") is True, "active is not the boolean true")
    expect(ctx.delete(f"/Users/{created['id']}"), 204)
    return "stored as true"


def replace_several_default(ctx: Ctx) -> str:
    # Known issues, "Requests to replace multiple attributes", without the flag.
    new_email = ctx.email("TestBcwqnm")
    ops = [
        {"op": "Replace", "path": "displayName", "value": "Pvlo"},
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": new_email},
        {"op": "Replace", "path": "name.givenName", "value": "Gtfd"},
        {"op": "Replace", "path": "name.familyName", "value": "Pkqf"},
        {"op": "Replace", "path": "externalId", "value": ctx.name("Eqpj")},
        {"op": "Replace", "path": f"{ENTERPRISE}:employeeNumber", "value": "Eqpj"},
    ]
    expect(ctx.patch(f"/Users/{ctx.need('user')}", ops), 200, 204)
    doc = _get_user(ctx)
    _check_several(doc, "Pvlo", "Gtfd", "Pkqf", "Eqpj")
    check(work_email(doc) == new_email, "work email not replaced")
    check(doc.get("externalId") == ctx.name("Eqpj"), "externalId not replaced")
    ctx.data["user.email"] = new_email
    return "all six stored"


def _check_several(doc: dict[str, Any], display: str, given: str, family: str, number: str) -> None:
    name = doc.get("name") or {}
    check(doc.get("displayName") == display, f"displayName is {doc.get('displayName')!r}")
    check(name.get("givenName") == given, f"givenName is {name.get('givenName')!r}")
    check(name.get("familyName") == family, f"familyName is {name.get('familyName')!r}")
    got = (doc.get(ENTERPRISE) or {}).get("employeeNumber")
    check(got == number, f"employeeNumber is {got!r}")


def remove_member_by_value(ctx: Ctx) -> str:
    # Known issues, "Requests made to remove a group member", without the flag.
    user = ctx.need("user")
    ops = [{"op": "Remove", "path": "members", "value": [{"value": user}]}]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 204, 200)
    check(user not in members_of(_get_group(ctx)), "the user is still a member")
    return "removed"


# ------------------------------------------------------------------ aadOptscim062020 only


def replace_several_compliant(ctx: Ctx) -> str:
    # Known issues, "Requests to replace multiple attributes", with the flag: a pathless
    # replace whose keys are dotted and URN-qualified.
    new_email = ctx.email("TestMhvaes")
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": new_email},
        {
            "op": "replace",
            "value": {
                "displayName": "Bjfe",
                "name.givenName": "Kkom",
                "name.familyName": "Unua",
                f"{ENTERPRISE}:employeeNumber": "Aklq",
            },
        },
    ]
    expect(ctx.patch(f"/Users/{ctx.need('user')}", ops), 200, 204)
    doc = _get_user(ctx)
    _check_several(doc, "Bjfe", "Kkom", "Unua", "Aklq")
    check(work_email(doc) == new_email, "work email not replaced")
    ctx.data["user.email"] = new_email
    return "all stored"


def remove_member_by_filter(ctx: Ctx) -> str:
    user = ctx.need("user")
    ops = [{"op": "remove", "path": f'members[value eq "{user}"]'}]
    expect(ctx.patch(f"/Groups/{ctx.need('group')}", ops), 204, 200)
    check(user not in members_of(_get_group(ctx)), "the user is still a member")
    return "removed"


# ------------------------------------------------------------------ the two replays


def _common_head() -> list[Step]:
    return [
        Step("test connection: filter userName on a random GUID", test_connection),
        Step("schema discovery: GET /Schemas", schema_discovery),
        Step("match before create: filter userName, no result", match_before_create),
        Step("create user (tutorial body: enterprise URN, meta, roles [])", create_user),
        Step("get user by id", get_user),
        Step("get unknown user: 404", get_unknown_user),
        Step("match by externalId", filter_external_id),
        Step('match by emails[type eq "work"].value', filter_work_email),
    ]


def default_dialect() -> Replay:
    steps = [
        *_common_head(),
        Step(
            "match by externalId, value unquoted (Example 1 as printed)",
            filter_external_id_unquoted,
        ),
        Step("create user with null attributes, misspelt URN (Example 2)", create_with_nulls),
        Step('create user with "active": "True" (string boolean)', create_string_active),
        Step("create user with capitalised names (UserName, Active, Primary)", create_capitalised),
        Step("Replace emails[work].value and name.familyName", patch_multi_valued("Replace")),
        Step(
            "Replace six attributes, one op each (known issues, no flag)", replace_several_default
        ),
        Step("Add nickName (single-valued add)", add_single_valued("Add")),
        Step('Add addresses[type eq "work"].x with no work address yet', add_work_address_parts),
        Step("create a manager user", create_manager),
        Step('Add "manager" with [{"$ref", "value"}] (Example 5)', add_manager_reference),
        Step("manager check: id eq and manager eq, attributes=id", manager_check),
        Step("Add enterprise manager as a bare string", manager_bare_string("Add")),
        Step("Replace userName", rename_user("Replace")),
        Step('disable: Replace active "False" (string)', set_active("Replace", "False", False)),
        Step('enable: Replace active "True" (string)', set_active("Replace", "True", True)),
        Step("create group (ADSCIM schema, externalId, meta)", create_group),
        Step("get group with excludedAttributes=members", get_group_without_members),
        Step("find group by displayName, excludedAttributes=members", group_by_display_name),
        Step('Add members [{"$ref": null, "value"}]', add_member("Add")),
        Step("member check: id eq and members eq", member_check),
        Step("Replace group displayName", rename_group("Replace")),
        Step('Remove members with value [{"value"}] (no flag)', remove_member_by_value),
        Step("delete group", delete_group),
        Step("delete users", delete_users),
    ]
    return Replay("entra", "Microsoft Entra ID, default dialect", steps)


def compliant_dialect() -> Replay:
    steps = [
        *_common_head(),
        Step("Replace emails[work].value and name.familyName", patch_multi_valued("Replace")),
        Step("pathless replace with dotted and URN keys (flag)", replace_several_compliant),
        Step("add nickName (flag)", add_single_valued("add")),
        Step('Add addresses[type eq "work"].x with no work address yet', add_work_address_parts),
        Step("create a manager user", create_manager),
        Step('Add "manager" with [{"$ref", "value"}] (Example 5)', add_manager_reference),
        Step("Replace userName", rename_user("Replace")),
        Step("disable: replace active false (flag)", set_active("replace", False, False)),
        Step("enable: replace active true (flag)", set_active("replace", True, True)),
        Step("create group (ADSCIM schema, externalId, meta)", create_group),
        Step("find group by displayName, excludedAttributes=members", group_by_display_name),
        Step('Add members [{"$ref": null, "value"}]', add_member("Add")),
        Step("Replace group displayName", rename_group("Replace")),
        Step('remove members[value eq "id"] (flag)', remove_member_by_filter),
        Step("delete group", delete_group),
        Step("delete users", delete_users),
    ]
    return Replay(
        "entra-062020",
        "Microsoft Entra ID with ?aadOptscim062020",
        steps,
        flag=FLAG,
    )
