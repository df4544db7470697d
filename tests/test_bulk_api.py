"""/Bulk (RFC 7644 §3.7)."""

from __future__ import annotations

from tests.conftest import ScimClient

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def test_bulk_with_bulkid_member_reference(scim: ScimClient) -> None:
    # The group comes first and names a user created later in the same request.
    response = scim.post(
        "/Bulk",
        {
            "schemas": [BULK],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g1",
                    "data": {
                        "displayName": "Tour Guides",
                        "members": [{"type": "User", "value": "bulkId:u1"}],
                    },
                },
                {"method": "POST", "path": "/Users", "bulkId": "u1", "data": {"userName": "alice"}},
            ],
        },
    )
    assert response.status_code == 200
    ops = response.get_json()["Operations"]
    assert [o["status"] for o in ops] == ["201", "201"]
    group = scim.get(ops[0]["location"].split("/scim/v2")[1]).get_json()
    user_id = ops[1]["location"].rsplit("/", 1)[1]
    assert [m["value"] for m in group["members"]] == [user_id]


def test_bulk_put_patch_delete_and_errors(scim: ScimClient) -> None:
    user = scim.user("alice")
    response = scim.post(
        "/Bulk",
        {
            "schemas": [BULK],
            "Operations": [
                {
                    "method": "PATCH",
                    "path": f"/Users/{user['id']}",
                    "data": {
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "path": "title", "value": "Boss"}],
                    },
                },
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "dup",
                    "data": {"userName": "ALICE"},
                },
                {"method": "DELETE", "path": "/Users/nope"},
                {
                    "method": "PUT",
                    "path": f"/Users/{user['id']}",
                    "version": 'W/"1"',
                    "data": {"userName": "alice"},
                },
            ],
        },
    )
    ops = response.get_json()["Operations"]
    assert [o["status"] for o in ops] == ["200", "409", "404", "412"]
    assert ops[1]["response"]["scimType"] == "uniqueness"
    after = scim.get(f"/Users/{user['id']}").get_json()
    assert after["title"] == "Boss"
    assert ops[0]["version"] == after["meta"]["version"]
    assert ops[0]["location"] == after["meta"]["location"]


def test_fail_on_errors_stops_processing(scim: ScimClient) -> None:
    response = scim.post(
        "/Bulk",
        {
            "schemas": [BULK],
            "failOnErrors": 1,
            "Operations": [
                {"method": "DELETE", "path": "/Users/nope"},
                {"method": "POST", "path": "/Users", "bulkId": "x", "data": {"userName": "never"}},
            ],
        },
    )
    assert [o["status"] for o in response.get_json()["Operations"]] == ["404"]
    assert scim.get("/Users?count=0").get_json()["totalResults"] == 0


def test_max_operations_and_payload_are_enforced(scim: ScimClient) -> None:
    ops = [
        {"method": "POST", "path": "/Users", "bulkId": f"b{i}", "data": {"userName": f"u{i}"}}
        for i in range(51)
    ]
    too_many = scim.post("/Bulk", {"schemas": [BULK], "Operations": ops})
    assert too_many.status_code == 413
    assert too_many.get_json()["status"] == "413"
    big = scim.post(
        "/Bulk",
        {
            "schemas": [BULK],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": "b",
                    "data": {"userName": "x" * 250_000},
                }
            ],
        },
    )
    assert big.status_code == 413
    assert scim.get("/Users?count=0").get_json()["totalResults"] == 0


def test_unresolvable_bulk_id(scim: ScimClient) -> None:
    response = scim.post(
        "/Bulk",
        {
            "schemas": [BULK],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g",
                    "data": {"displayName": "G", "members": [{"value": "bulkId:missing"}]},
                }
            ],
        },
    )
    assert response.get_json()["Operations"][0]["status"] == "409"


def test_bulk_user_writes_after_group_writes(scim: ScimClient) -> None:
    """Group writes go through the ORM session, user writes through db.transaction; on SQLite
    both take the write lock, so a group operation must not leave the session holding it
    (the next user write in the same request would wait for it forever)."""
    user = scim.user("first")
    response = scim.post(
        "/Bulk",
        {
            "schemas": [BULK],
            "Operations": [
                {"method": "POST", "path": "/Groups", "bulkId": "g", "data": {"displayName": "A"}},
                {"method": "POST", "path": "/Users", "bulkId": "u", "data": {"userName": "second"}},
                {
                    "method": "PUT",
                    "path": "/Groups/bulkId:g",
                    "data": {"displayName": "A", "members": [{"value": user["id"]}]},
                },
                {
                    "method": "PATCH",
                    "path": f"/Users/{user['id']}",
                    "data": {
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "replace", "path": "title", "value": "T"}],
                    },
                },
                {"method": "DELETE", "path": "/Groups/bulkId:g"},
                {"method": "POST", "path": "/Users", "bulkId": "v", "data": {"userName": "third"}},
            ],
        },
    )
    assert response.status_code == 200
    assert [o["status"] for o in response.get_json()["Operations"]] == [
        "201",
        "201",
        "200",
        "200",
        "204",
        "201",
    ]
    assert scim.get(f"/Users/{user['id']}").get_json()["title"] == "T"
