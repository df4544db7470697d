"""Concurrent writers: no lost updates, no 500s (SQLite takes the write lock up front)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flask import Flask

from tests.conftest import ScimClient

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def test_parallel_creates_and_member_adds(scim: ScimClient, app: Flask) -> None:
    group = scim.group("Crowd")

    def work(i: int) -> tuple[int, int]:
        client = ScimClient(app.test_client(), scim.token)
        created = client.post("/Users", {"userName": f"user{i}"})
        added = client.patch(
            f"/Groups/{group['id']}",
            {
                "schemas": [PATCH],
                "Operations": [
                    {"op": "add", "path": "members", "value": [{"value": created.get_json()["id"]}]}
                ],
            },
        )
        return created.status_code, added.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(40)))
    assert results == [(201, 204)] * 40
    body = scim.get(f"/Groups/{group['id']}").get_json()
    assert len(body["members"]) == 40
    # Every add bumped the version exactly once: nothing was lost between writers.
    assert body["meta"]["version"] == 'W/"41"'


def test_parallel_patches_to_one_user_lose_nothing(scim: ScimClient, app: Flask) -> None:
    user = scim.user("busy")

    def work(i: int) -> int:
        client = ScimClient(app.test_client(), scim.token)
        op = {"op": "add", "path": "emails", "value": [{"value": f"e{i}@example.com"}]}
        response = client.patch(f"/Users/{user['id']}", {"schemas": [PATCH], "Operations": [op]})
        return int(response.status_code)

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(work, range(24)))
    assert statuses == [200] * 24
    body = scim.get(f"/Users/{user['id']}").get_json()
    expected = sorted(f"e{i}@example.com" for i in range(24))
    assert sorted(e["value"] for e in body["emails"]) == expected
    assert body["meta"]["version"] == 'W/"25"'


def test_racing_creates_of_one_name_give_one_201_and_409s(scim: ScimClient, app: Flask) -> None:
    def create(kind_body: tuple[str, dict[str, str]]) -> int:
        kind, body = kind_body
        return int(ScimClient(app.test_client(), scim.token).post(kind, body).status_code)

    jobs = [("/Users", {"userName": "same"})] * 6 + [("/Groups", {"displayName": "same"})] * 6
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(create, jobs))
    assert sorted(statuses[:6]) == [201] + [409] * 5
    assert sorted(statuses[6:]) == [201] + [409] * 5
