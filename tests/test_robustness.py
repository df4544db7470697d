"""Malformed input of many shapes is a 4xx in SCIM's error format, never a 500."""

from __future__ import annotations

import itertools
from typing import Any

from tests.conftest import ScimClient

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
VALUES: list[Any] = [None, True, 1.5, "", "x", [], {}, [None], [{"value": 1}], "a\u0000", 10**30]
PATHS: list[Any] = [
    None,
    "userName",
    "emails",
    'emails[type eq "work"].value',
    "name.givenName",
    "members",
    'members[value eq "x"]',
    "id",
    "meta.version",
    f"{ENT}:manager",
    "emails[",
    "x.y.z",
    5,
]


def _assert_clean(response: Any, what: object) -> None:
    assert response.status_code < 500, (what, response.get_json())
    if response.status_code >= 400:
        body = response.get_json()
        assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"], what
        assert body["status"] == str(response.status_code), what


def test_malformed_patch_operations(scim: ScimClient) -> None:
    user = scim.user("base", emails=[{"value": "a@example.com", "type": "work"}])
    group = scim.group("base")
    for (kind, ident), op, path, value in itertools.product(
        (("Users", user["id"]), ("Groups", group["id"])),
        ("add", "remove", "replace", "move", None),
        PATHS,
        VALUES,
    ):
        body = {"schemas": [PATCH], "Operations": [{"op": op, "path": path, "value": value}]}
        _assert_clean(scim.patch(f"/{kind}/{ident}", body), (kind, op, path, value))
    # Whatever succeeded, the resources are still whole and readable.
    assert scim.get(f"/Users/{user['id']}").get_json()["userName"]
    assert scim.get(f"/Groups/{group['id']}").get_json()["displayName"]


def test_malformed_resources(scim: ScimClient) -> None:
    user = scim.user("base")
    for key, value in itertools.product(
        ("userName", "name", "emails", "active", ENT, "groups", "password", "addresses"), VALUES
    ):
        body = {"userName": "candidate", key: value}
        _assert_clean(scim.post("/Users", body), ("POST", key, value))
        _assert_clean(scim.put(f"/Users/{user['id']}", body), ("PUT", key, value))
    for value in VALUES:
        _assert_clean(scim.post("/Groups", {"displayName": value}), ("group", value))
        _assert_clean(scim.post("/Groups", {"displayName": "g", "members": value}), value)


def test_malformed_queries_and_envelopes(scim: ScimClient) -> None:
    for query in (
        "filter=",
        "filter=userName gt true",
        'filter=meta.created gt "x"',
        'filter=active eq "true"',
        "sortBy=members",
        "attributes=,,",
        "count=1e5",
        "startIndex=x",
        'filter=userName eq "' + "a" * 3000 + '"',
    ):
        for kind in ("Users", "Groups"):
            _assert_clean(scim.get(f"/{kind}?{query}"), query)
    for body in (
        [],
        "x",
        {"Operations": None},
        {"Operations": [None]},
        {"Operations": [{"method": "GET", "path": "/Users"}]},
        {"failOnErrors": "x", "Operations": []},
    ):
        _assert_clean(scim.post("/Bulk", body), body)
    for body in ({"filter": 1}, {"attributes": 1}, {"startIndex": []}, {"sortOrder": 5}, []):
        _assert_clean(scim.post("/.search", body), body)
