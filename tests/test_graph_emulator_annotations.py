"""Instance annotations in request bodies: ignored at every depth, as Graph ignores them, while
unknown properties are still refused with Graph's message.

- OData JSON Format 4.01, section 20 "Instance Annotations" (`@namespace.term`,
  `property@namespace.term`, optionally `#qualifier`) and section 22 "Extensibility" ("the
  receiving party MUST ignore unknown annotations"); section 8.5 "Bind Operation"
  (`members@odata.bind`), which has a meaning and is not ignored.
- Graph's docs send `"@odata.type": "#microsoft.graph.user"` in POST /users
  (api-reference/v1.0/api/intune-mam-user-create.md); Microsoft's SDKs send it in every create
  and update, nested objects included (tests/test_msgraph_sdk.py drives the real SDK).
"""

from __future__ import annotations

from typing import Any

import pytest

from scim_server.graph.emulator import odata
from tests.graph_emulator import STRONG_PASSWORD, RunningEmulator

UNDECLARED = "Property '{}' does not exist as a declared property or extension property."

# What Microsoft's SDKs and other OData clients put in a body: control information, a custom
# term, a property annotation and a qualified one.
ANNOTATIONS: dict[str, Any] = {
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
    "@com.contoso.origin": {"system": "hr", "tags": ["a", "b"]},
    "displayName@com.contoso.display.style": {"bold": True},
    "@com.contoso.display.highlight#simple": True,
}


def _user(alias: str = "adele", **props: Any) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.user",
        **ANNOTATIONS,
        "accountEnabled": True,
        "displayName": alias.title(),
        "mailNickname": alias,
        "userPrincipalName": f"{alias}@example.com",
        "passwordProfile": {
            "@odata.type": "#microsoft.graph.passwordProfile",
            "password@com.contoso.note": "generated",
            "password": STRONG_PASSWORD,
            "forceChangePasswordNextSignIn": False,
        },
        **props,
    }


def _group(alias: str = "sales", **props: Any) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.group",
        **ANNOTATIONS,
        "displayName": alias.title(),
        "mailEnabled": False,
        "mailNickname": alias,
        "securityEnabled": True,
        "groupTypes": [],
        **props,
    }


def _refused(response: Any, name: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "Request_BadRequest"
    assert error["message"] == UNDECLARED.format(name)
    assert error["details"] == [{"target": name, "code": "InvalidValue"}]


def _stored(em: RunningEmulator, object_id: str) -> dict[str, Any]:
    return next(o for o in em.state()["objects"] if o["id"] == object_id)


def _names(value: Any) -> set[str]:
    """Every key at every depth of a JSON value."""
    if isinstance(value, list):
        return set().union(*(_names(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set(value).union(*(_names(v) for v in value.values()))
    return set()


# ---------------------------------------------------------------------- the rule, pure


@pytest.mark.parametrize(
    "name",
    [
        "@odata.type",
        "@odata.context",
        "@odata.id",
        "@com.contoso.term",
        "@com.contoso.term#qualifier",
        "displayName@odata.type",
        "members@odata.bind",
        "displayName@com.contoso.display.style",
    ],
)
def test_annotation_names(name: str) -> None:
    assert odata.is_annotation(name)


@pytest.mark.parametrize(
    "name",
    [
        "displayName",
        "@removed",
        "foo@bar",
        "@",
        "@odata.",
        "@odata..type",
        "a b@c.d",
        "x@y@z.w",
        "",
    ],
)
def test_property_names_are_not_annotations(name: str) -> None:
    # A term is namespace-qualified: "@removed" and "foo@bar" are names, never annotations.
    assert not odata.is_annotation(name)


def test_split_removes_annotations_at_every_depth_and_keeps_bindings() -> None:
    body = {
        "@odata.type": "#microsoft.graph.group",
        "@odata.id": "https://graph.microsoft.com/v1.0/groups/1",
        "displayName": "Sales",
        "displayName@com.contoso.style": "bold",
        "members@odata.bind": ["https://graph.microsoft.com/v1.0/directoryObjects/2"],
        "nested": {"@odata.type": "#x.y", "deeper": [{"@a.b": 1, "keep": 2}, "text", 3]},
        "unknown": 1,
    }
    properties, top = odata.split_annotations(body)
    assert properties == {
        "displayName": "Sales",
        "members@odata.bind": ["https://graph.microsoft.com/v1.0/directoryObjects/2"],
        "nested": {"deeper": [{"keep": 2}, "text", 3]},
        "unknown": 1,  # not an annotation: left for the handler to refuse
    }
    assert top == {
        "@odata.type": "#microsoft.graph.group",
        "@odata.id": "https://graph.microsoft.com/v1.0/groups/1",
        "displayName@com.contoso.style": "bold",
    }
    assert body["@odata.type"] == "#microsoft.graph.group"  # the input is left as it was
    assert odata.split_annotations(None) == (None, {})
    assert odata.split_annotations([{"@a.b": 1}]) == ([{}], {})


# ---------------------------------------------------------------------- over HTTP


def test_users_accept_annotations_at_every_depth(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    created = em.graph("POST", "/users", json=_user())
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["displayName"] == "Adele"
    # The password in the annotated passwordProfile was set: the user can sign in with it.
    assert _stored(em, user["id"])["has_password"] is True
    patch = {
        "@odata.type": "#microsoft.graph.user",
        "jobTitle@com.contoso.source": "hr",
        "jobTitle": "Lead",
        "passwordProfile": {
            "@odata.type": "#microsoft.graph.passwordProfile",
            "password": "An0ther-Strong!",
            "forceChangePasswordNextSignIn": True,
        },
    }
    updated = em.graph("PATCH", f"/users/{user['id']}", json=patch)
    assert updated.status_code == 204, updated.text
    stored = _stored(em, user["id"])
    assert stored["props"]["jobTitle"] == "Lead" and stored["force_change"] is True
    # Nothing of any annotation is kept, at any depth.
    assert not any("@" in name for name in _names(stored["props"]))


def test_groups_accept_annotations_and_still_bind_members(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    first, second = em.create_user("alex"), em.create_user("bianca")
    bind = {"members@odata.bind": [em.ref(first["id"])["@odata.id"]]}
    created = em.graph("POST", "/groups", json=_group(**bind))
    assert created.status_code == 201, created.text
    group = created.json()
    assert _stored(em, group["id"])["members"] == [first["id"]]
    patch = {"@odata.type": "#microsoft.graph.group", "description": "Team", **ANNOTATIONS}
    patch["members@odata.bind"] = [em.ref(second["id"])["@odata.id"]]
    assert em.graph("PATCH", f"/groups/{group['id']}", json=patch).status_code == 204
    stored = _stored(em, group["id"])
    assert stored["members"] == [first["id"], second["id"]]
    assert stored["props"]["description"] == "Team"
    assert not any("@" in name for name in _names(stored["props"]))


def test_references_take_annotations_beside_odata_id(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    user, boss, group = em.create_user("adele"), em.create_user("boss"), em.create_group()
    ref = {"@odata.type": "#microsoft.graph.directoryObject", **em.ref(user["id"])}
    added = em.graph("POST", f"/groups/{group['id']}/members/$ref", json=ref)
    assert added.status_code == 204, added.text
    assert _stored(em, group["id"])["members"] == [user["id"]]
    manager = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#$ref"}
    manager["@odata.id"] = f"{em.graph_url}/users/{boss['id']}"
    assert em.graph("PUT", f"/users/{user['id']}/manager/$ref", json=manager).status_code == 204
    # A reference still needs its @odata.id.
    missing = em.graph("POST", f"/groups/{group['id']}/members/$ref", json={"@odata.type": "#x.y"})
    assert missing.status_code == 400


def test_batch_parts_accept_annotations(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    batch = {
        "requests": [
            {
                "id": "1",
                "method": "POST",
                "url": "/users",
                "headers": {"Content-Type": "application/json"},
                "body": _user(),
            },
            {
                "id": "2",
                "method": "POST",
                "url": "/groups",
                "headers": {"Content-Type": "application/json"},
                "body": _group(),
            },
            {
                "id": "3",
                "method": "POST",
                "url": "/users",
                "headers": {"Content-Type": "application/json"},
                "body": _user("alex", nickname="al"),
            },
        ]
    }
    response = em.graph("POST", "/$batch", json=batch)
    assert response.status_code == 200, response.text
    parts = {part["id"]: part for part in response.json()["responses"]}
    assert parts["1"]["status"] == 201 and parts["2"]["status"] == 201
    assert parts["3"]["status"] == 400
    assert parts["3"]["body"]["error"]["message"] == UNDECLARED.format("nickname")


# ---------------------------------------------------------------------- unknown properties


@pytest.mark.parametrize("name", ["nickname", "foo@bar", "@removed", "odata.type"])
def test_unknown_user_properties_are_still_refused(
    graph_emulator: RunningEmulator, name: str
) -> None:
    em = graph_emulator
    _refused(em.graph("POST", "/users", json=_user(**{name: "x"})), name)
    user = em.create_user()
    _refused(em.graph("PATCH", f"/users/{user['id']}", json={"@odata.type": "#x.y", name: 1}), name)


def test_unknown_nested_property_is_refused(graph_emulator: RunningEmulator) -> None:
    body = _user()
    body["passwordProfile"]["mustChange"] = True
    _refused(graph_emulator.graph("POST", "/users", json=body), "mustChange")


def test_unknown_group_property_is_refused(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    _refused(em.graph("POST", "/groups", json=_group(owner="adele")), "owner")
    group = em.create_group()
    _refused(em.graph("PATCH", f"/groups/{group['id']}", json={"@odata.type": "#x", "x": 1}), "x")
