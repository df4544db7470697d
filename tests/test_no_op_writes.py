"""Writes that change nothing (issue 11): a PATCH or PUT that leaves a resource as it was
answers success and keeps `meta.version`, the ETag and `lastModified`, and records no outbox
event. And a user created without `active` is stored and returned active."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from models import OutboxEvent
from tests.conftest import ScimClient

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def _ops(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH], "Operations": list(ops)}


def _events(app: Flask, resource_id: str) -> list[str]:
    from scim_server.db import db

    with app.app_context():
        return list(
            db.session.scalars(
                sa.select(OutboxEvent.event)
                .where(OutboxEvent.resource_id == resource_id)
                .order_by(OutboxEvent.id)
            )
        )


def _state(scim: ScimClient, path: str) -> tuple[str, str, str]:
    got = scim.get(path)
    meta = got.get_json()["meta"]
    return got.headers["ETag"], meta["version"], meta["lastModified"]


def test_a_user_created_without_active_is_active(scim: ScimClient, app: Flask) -> None:
    created = scim.post("/Users", {"userName": "noactive@example.com"})
    assert created.status_code == 201
    assert created.get_json()["active"] is True
    assert scim.get(f"/Users/{created.get_json()['id']}").get_json()["active"] is True
    listed = scim.get('/Users?filter=userName eq "noactive@example.com"').get_json()
    assert listed["Resources"][0]["active"] is True
    # null is no value (RFC 7643 §2.5): the same default.
    explicit_null = scim.post("/Users", {"userName": "nullactive@example.com", "active": None})
    assert explicit_null.get_json()["active"] is True
    # A client that says false is heard.
    disabled = scim.post("/Users", {"userName": "off@example.com", "active": False})
    assert disabled.get_json()["active"] is False


def test_a_put_without_active_clears_it_as_rfc_7644_says(scim: ScimClient) -> None:
    user = scim.post("/Users", {"userName": "put@example.com"}).get_json()
    replaced = scim.put(f"/Users/{user['id']}", {"userName": "put@example.com"}).get_json()
    assert "active" not in replaced  # §3.5.1: omitted readWrite attributes may be cleared


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "replace", "path": "title", "value": "Pilot"},  # the value it has
        {"op": "remove", "path": "nickName"},  # an attribute it has not
        {"op": "add", "path": "emails", "value": [{"value": "a@example.com", "type": "work"}]},
        {"op": "remove", "path": 'phoneNumbers[type eq "fax"]'},  # no such value
        {"op": "replace", "value": {"title": "Pilot", "active": True}},  # pathless, same values
        {"op": "replace", "path": f"{ENTERPRISE}:department", "value": "R&D"},
    ],
)
def test_a_user_patch_that_changes_nothing_keeps_the_version(
    scim: ScimClient, app: Flask, operation: dict[str, Any]
) -> None:
    user = scim.post(
        "/Users",
        {
            "userName": "same@example.com",
            "title": "Pilot",
            "emails": [{"value": "a@example.com", "type": "work"}],
            ENTERPRISE: {"department": "R&D"},
        },
    ).get_json()
    path = f"/Users/{user['id']}"
    before = _state(scim, path)
    events = _events(app, user["id"])
    answered = scim.patch(path, _ops(operation))
    assert answered.status_code == 200
    assert answered.headers["ETag"] == before[0]
    assert answered.get_json()["meta"]["version"] == before[1]
    assert _state(scim, path) == before
    assert _events(app, user["id"]) == events == ["created"]


def test_a_user_put_of_the_same_document_keeps_the_version(scim: ScimClient, app: Flask) -> None:
    body = {
        "userName": "put.same@example.com",
        "name": {"givenName": "Ann", "familyName": "Lee"},
        "emails": [{"value": "ann@example.com", "type": "work", "primary": True}],
        "addresses": [{"type": "work", "locality": "Leeds", "country": "GB"}],
        "active": True,
        "password": "Same-Passw0rd!",
    }
    user = scim.post("/Users", body).get_json()
    path = f"/Users/{user['id']}"
    before = _state(scim, path)
    events = _events(app, user["id"])
    # Okta's Sync Password sends the password with every PUT: the same one changes nothing.
    again = scim.put(path, body)
    assert again.status_code == 200
    assert again.headers["ETag"] == before[0]
    assert _state(scim, path) == before
    assert _events(app, user["id"]) == events
    # What a GET returned, sent back as a PUT, changes nothing either.
    shown = scim.get(path).get_json()
    assert scim.put(path, shown).headers["ETag"] == before[0]
    assert _events(app, user["id"]) == events
    # A new password is a change.
    changed = scim.put(path, {**body, "password": "Other-Passw0rd!"})
    assert changed.headers["ETag"] != before[0]
    assert _events(app, user["id"]) == [*events, "replaced", "password"]


def test_a_group_patch_that_changes_nothing_keeps_the_version(scim: ScimClient, app: Flask) -> None:
    member = scim.user("member@example.com")
    stranger = scim.user("stranger@example.com")
    group = scim.group("Same", members=[member["id"]])
    path = f"/Groups/{group['id']}"
    before = _state(scim, path)
    events = _events(app, group["id"])
    for operation in (
        # remove of a member who is not in the group
        {"op": "remove", "path": f'members[value eq "{stranger["id"]}"]'},
        # add of a member who is
        {"op": "add", "path": "members", "value": [{"value": member["id"]}]},
        # add of an id nobody has
        {"op": "add", "path": "members", "value": [{"value": "no-such-id"}]},
        # replace with the same value
        {"op": "replace", "path": "displayName", "value": "Same"},
        {"op": "replace", "path": "members", "value": [{"value": member["id"]}]},
    ):
        answered = scim.patch(path, _ops(operation))
        assert answered.status_code == 204, operation
        assert answered.headers["ETag"] == before[0], operation
        assert _state(scim, path) == before, operation
    assert _events(app, group["id"]) == events == ["created"]
    # A real change still moves the version, once.
    scim.patch(path, _ops({"op": "remove", "path": f'members[value eq "{member["id"]}"]'}))
    assert _state(scim, path)[1] != before[1]
    assert _events(app, group["id"]) == ["created", "patched"]


def test_a_group_put_of_the_same_document_keeps_the_version(scim: ScimClient, app: Flask) -> None:
    member = scim.user("m@example.com")
    group = scim.group("Put Same", members=[member["id"]])
    path = f"/Groups/{group['id']}"
    before = _state(scim, path)
    again = scim.put(path, {"displayName": "Put Same", "members": [{"value": member["id"]}]})
    assert again.status_code == 200
    assert again.headers["ETag"] == before[0]
    assert _state(scim, path) == before
    assert _events(app, group["id"]) == ["created"]
    renamed = scim.put(path, {"displayName": "Renamed", "members": [{"value": member["id"]}]})
    assert renamed.headers["ETag"] != before[0]
    assert _events(app, group["id"]) == ["created", "replaced"]
