"""/Users end to end through the HTTP layer (RFC 7644 §3.3 to §3.6, §3.14)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.conftest import ScimClient

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def test_create_returns_201_location_etag_and_full_resource(scim: ScimClient) -> None:
    response = scim.post(
        "/Users",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENT],
            "userName": "bjensen@example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
            "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
            "addresses": [
                {
                    "type": "work",
                    "streetAddress": "100 Universal City Plaza",
                    "locality": "Hollywood",
                    "country": "US",
                }
            ],
            ENT: {"employeeNumber": "701984", "department": "Tour Operations"},
            "password": "t1meMa$heen",
        },
    )
    assert response.status_code == 201
    assert response.content_type == "application/scim+json"
    body = response.get_json()
    assert response.headers["Location"] == body["meta"]["location"]
    assert response.headers["ETag"] == body["meta"]["version"]
    assert body["meta"]["resourceType"] == "User"
    assert body["name"] == {"givenName": "Barbara", "familyName": "Jensen"}
    assert body["emails"] == [{"value": "bjensen@example.com", "type": "work", "primary": True}]
    assert body["addresses"][0]["locality"] == "Hollywood"
    assert body[ENT]["employeeNumber"] == "701984"
    assert ENT in body["schemas"]
    assert "password" not in body  # returned: never


def test_password_is_stored_as_argon2_hash(scim: ScimClient, app) -> None:  # type: ignore[no-untyped-def]
    user = scim.user("pw", password="S3cret-pass!")
    from scim_server.db import db

    with app.app_context():
        stored = db.session.execute(
            sa.text("SELECT password_hash FROM users WHERE id = :id"), {"id": user["id"]}
        ).scalar_one()
    assert stored.startswith("$argon2id$")
    assert "S3cret-pass!" not in stored


def test_username_unique_without_regard_to_case(scim: ScimClient) -> None:
    scim.user("Alice")
    response = scim.post("/Users", {"userName": "ALICE"})
    assert response.status_code == 409
    body = response.get_json()
    assert body["scimType"] == "uniqueness"
    assert body["status"] == "409"
    assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_missing_username_is_400_invalid_value(scim: ScimClient) -> None:
    response = scim.post("/Users", {"displayName": "x"})
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidValue"


def test_wrong_type_is_400_and_nothing_stored(scim: ScimClient) -> None:
    response = scim.post("/Users", {"userName": "x", "active": "maybe"})
    assert response.status_code == 400
    assert scim.get("/Users?count=0").get_json()["totalResults"] == 0


def test_malformed_json_is_400_invalid_syntax(scim: ScimClient) -> None:
    response = scim.client.post(
        "/scim/v2/Users",
        data="{not json",
        headers={"Authorization": f"Bearer {scim.token}", "Content-Type": "application/scim+json"},
    )
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidSyntax"


def test_get_by_id_and_404(scim: ScimClient) -> None:
    user = scim.user()
    response = scim.get(f"/Users/{user['id']}")
    assert response.status_code == 200
    assert response.get_json()["userName"] == "bjensen"
    missing = scim.get("/Users/does-not-exist")
    assert missing.status_code == 404
    assert missing.get_json()["status"] == "404"


def test_put_replaces_everything_and_bumps_version(scim: ScimClient) -> None:
    user = scim.user(
        displayName="Babs", title="Tour Guide", emails=[{"value": "a@example.com", "type": "work"}]
    )
    response = scim.put(f"/Users/{user['id']}", {"userName": "bjensen", "nickName": "B"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["nickName"] == "B"
    assert "displayName" not in body and "title" not in body and "emails" not in body
    assert body["meta"]["version"] != user["meta"]["version"]
    assert body["meta"]["created"] == user["meta"]["created"]


def test_patch_answers_200_with_the_resource(scim: ScimClient) -> None:
    user = scim.user()
    response = scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {
                    "op": "add",
                    "path": "emails",
                    "value": [{"value": "b@example.com", "type": "work", "primary": True}],
                },
                {"op": "replace", "path": "name.givenName", "value": "Barbara"},
            ],
        },
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["emails"][0]["value"] == "b@example.com"
    assert body["name"]["givenName"] == "Barbara"
    assert response.headers["ETag"] == body["meta"]["version"]


def test_patch_is_atomic(scim: ScimClient) -> None:
    user = scim.user(displayName="Before")
    response = scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "replace", "path": "displayName", "value": "After"},
                {"op": "replace", "path": 'emails[type eq "work"].value', "value": "x@example.com"},
            ],
        },
    )
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "noTarget"
    assert scim.get(f"/Users/{user['id']}").get_json()["displayName"] == "Before"


def test_patch_without_operations_is_400(scim: ScimClient) -> None:
    user = scim.user()
    response = scim.patch(
        f"/Users/{user['id']}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}
    )
    assert response.status_code == 400
    assert response.get_json()["scimType"] == "invalidSyntax"


def test_delete_then_404(scim: ScimClient) -> None:
    user = scim.user()
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    assert scim.get(f"/Users/{user['id']}").status_code == 404
    assert scim.delete(f"/Users/{user['id']}").status_code == 404


def test_if_match_stale_is_412_and_current_succeeds(scim: ScimClient) -> None:
    user = scim.user()
    etag = user["meta"]["version"]
    ok = scim.put(
        f"/Users/{user['id']}", {"userName": "bjensen", "title": "A"}, headers={"If-Match": etag}
    )
    assert ok.status_code == 200
    stale = scim.put(
        f"/Users/{user['id']}", {"userName": "bjensen", "title": "B"}, headers={"If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.get_json()["status"] == "412"
    stale_patch = scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": "C"}],
        },
        headers={"If-Match": etag},
    )
    assert stale_patch.status_code == 412
    assert scim.delete(f"/Users/{user['id']}", headers={"If-Match": etag}).status_code == 412
    assert scim.get(f"/Users/{user['id']}").get_json()["title"] == "A"


def test_if_none_match_is_304(scim: ScimClient) -> None:
    user = scim.user()
    response = scim.get(f"/Users/{user['id']}", headers={"If-None-Match": user["meta"]["version"]})
    assert response.status_code == 304
    strong = user["meta"]["version"].removeprefix("W/")
    assert scim.get(f"/Users/{user['id']}", headers={"If-None-Match": strong}).status_code == 304
    changed = scim.get(f"/Users/{user['id']}", headers={"If-None-Match": 'W/"999"'})
    assert changed.status_code == 200


def test_groups_attribute_is_computed_and_read_only(scim: ScimClient) -> None:
    user = scim.user()
    group = scim.group("Staff", members=[user["id"]])
    body = scim.get(f"/Users/{user['id']}").get_json()
    assert body["groups"] == [
        {
            "value": group["id"],
            "$ref": f"http://localhost/scim/v2/Groups/{group['id']}",
            "display": "Staff",
            "type": "direct",
        }
    ]
    # readOnly values sent by a client are ignored (RFC 7643 §2.2).
    scim.put(f"/Users/{user['id']}", {"userName": "bjensen", "groups": []})
    assert len(scim.get(f"/Users/{user['id']}").get_json()["groups"]) == 1


def test_manager_display_name_comes_from_the_manager_on_request(scim: ScimClient) -> None:
    boss = scim.user("boss", displayName="The Boss")
    user = scim.user("worker", **{ENT: {"manager": {"value": boss["id"], "displayName": "x"}}})
    # returned: "request" — a client reads back what it wrote, unless it asks for more.
    default = scim.get(f"/Users/{user['id']}").get_json()[ENT]["manager"]
    assert set(default) == {"value", "$ref"}
    manager = scim.get(
        f"/Users/{user['id']}?attributes={ENT}:manager.displayName,{ENT}:manager.value"
    ).get_json()[ENT]["manager"]
    assert manager["value"] == boss["id"]
    assert manager["displayName"] == "The Boss"
    assert default["$ref"].endswith(f"/Users/{boss['id']}")


def test_unknown_attributes_are_ignored(scim: ScimClient) -> None:
    response = scim.post("/Users", {"userName": "x", "favouriteColour": "blue"})
    assert response.status_code == 201
    assert "favouriteColour" not in response.get_json()


def test_attributes_and_excluded_attributes_on_get(scim: ScimClient) -> None:
    user = scim.user(
        displayName="B",
        name={"givenName": "Bar", "familyName": "J"},
        emails=[{"value": "a@example.com", "type": "work"}],
    )
    only = scim.get(f"/Users/{user['id']}?attributes=userName,name.givenName").get_json()
    assert set(only) == {"schemas", "id", "userName", "name"}
    assert only["name"] == {"givenName": "Bar"}
    excluded = scim.get(f"/Users/{user['id']}?excludedAttributes=emails,name.familyName").get_json()
    assert "emails" not in excluded
    assert excluded["name"] == {"givenName": "Bar"}
    assert excluded["id"] == user["id"]  # returned: always
    sub = scim.get(f"/Users/{user['id']}?attributes=emails.value").get_json()
    assert sub["emails"] == [{"value": "a@example.com"}]


def test_password_never_returned_even_when_asked(scim: ScimClient) -> None:
    user = scim.user(password="Xyzzy-123456")
    body = scim.get(f"/Users/{user['id']}?attributes=password,userName").get_json()
    assert "password" not in body


def test_entra_test_connection_filter_on_random_guid(scim: ScimClient) -> None:
    response = scim.get(
        '/Users?filter=userName eq "3f4c2a8e-0bd5-4c9b-9d8e-2f1a3b4c5d6e"&aadOptscim062020'
    )
    assert response.status_code == 200
    assert response.get_json()["totalResults"] == 0
    assert response.get_json()["Resources"] == []


def test_too_long_values_are_400_on_every_database(scim: ScimClient) -> None:
    long = "x" * 300
    for body in (
        {"userName": long},
        {"userName": "ok", "title": long},
        {"userName": "ok", "emails": [{"value": "a@b.c", "type": long}]},
    ):
        response = scim.post("/Users", body)
        assert response.status_code == 400, body
        assert response.get_json()["scimType"] == "invalidValue"
    assert scim.post("/Groups", {"displayName": long}).status_code == 400
    assert scim.get("/Users?count=0").get_json()["totalResults"] == 0


def test_nul_characters_are_400_on_every_database(scim: ScimClient) -> None:
    assert scim.post("/Users", {"userName": "a\u0000b"}).status_code == 400
    user = scim.user("ok")
    response = scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": "x\u0000"}],
        },
    )
    assert response.status_code == 400
    assert scim.get('/Users?filter=userName eq "a\\u0000"').status_code == 400


def test_attributes_keeps_a_false_boolean(scim: ScimClient) -> None:
    user = scim.user("inactive", active=False)
    got = scim.get(f"/Users/{user['id']}?attributes=active").get_json()
    assert got["active"] is False
    listed = scim.get("/Users?attributes=active,userName").get_json()["Resources"]
    assert [(u["userName"], u["active"]) for u in listed] == [("inactive", False)]


def test_a_user_is_read_in_one_statement(scim: ScimClient, app: Flask) -> None:
    """GET, the `userName eq` lookup and an update's snapshot read the user, its values,
    groups, manager and sync state in one statement; the update writes the row and its
    outbox event in two."""
    manager = scim.user("boss", displayName="The Boss")
    user = scim.user(
        "bjensen",
        emails=[{"value": "b@example.com", "type": "work", "primary": True}],
        phoneNumbers=[{"value": "555-555-8377", "type": "work"}],
        **{ENT: {"manager": {"value": manager["id"]}}},
    )
    scim.group("Staff", members=[user["id"]])
    from scim_server.db import db

    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    with app.app_context():
        engine = db.engine

    def directory_statements(request: Callable[[], Any]) -> list[str]:
        statements.clear()
        sa.event.listen(engine, "before_cursor_execute", record)
        try:
            response = request()
        finally:
            sa.event.remove(engine, "before_cursor_execute", record)
        assert response.status_code == 200, response.get_json()
        # Credentials' statements (the token cache may look one up) are not the directory's.
        return [s for s in statements if "api_tokens" not in s and "oauth_" not in s]

    got = directory_statements(lambda: scim.get(f"/Users/{user['id']}"))
    assert len(got) == 1, got
    asked = f"/Users/{user['id']}?attributes=emails,groups,{ENT}:manager.displayName"
    got = directory_statements(lambda: scim.get(asked))
    assert len(got) == 1, got
    body = scim.get(asked).get_json()
    assert [e["value"] for e in body["emails"]] == ["b@example.com"]
    assert [g["display"] for g in body["groups"]] == ["Staff"]
    assert body[ENT]["manager"]["displayName"] == "The Boss"
    got = directory_statements(lambda: scim.get('/Users?filter=userName eq "BJensen"'))
    assert len(got) == 1, got
    patch = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "Boss's report"}],
    }
    got = directory_statements(lambda: scim.patch(f"/Users/{user['id']}", patch))
    assert [s.split()[0] for s in got] == ["SELECT", "UPDATE", "INSERT"], got


@pytest.mark.parametrize("resource", ["Users", "Groups"])
@pytest.mark.parametrize("query", ["attributes=displayName", "excludedAttributes=meta"])
def test_a_create_that_asks_for_attributes_without_meta_still_says_where(
    scim: ScimClient, resource: str, query: str
) -> None:
    """RFC 7644 §3.9 lets a POST ask for some attributes only; `meta` may then be left out
    of the body, but the 201's Location still names the new resource (it was once a 500)."""
    schema = "User" if resource == "Users" else "Group"
    body = {"schemas": [f"urn:ietf:params:scim:schemas:core:2.0:{schema}"], "displayName": "D"}
    if resource == "Users":
        body["userName"] = "located"
    response = scim.post(f"/{resource}?{query}", body)
    assert response.status_code == 201, response.get_json()
    doc = response.get_json()
    assert "meta" not in doc
    assert response.headers["Location"].endswith(f"/scim/v2/{resource}/{doc['id']}")
    assert scim.get(response.headers["Location"].split("/scim/v2", 1)[1]).status_code == 200
