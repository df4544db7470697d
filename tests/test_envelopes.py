"""The PatchOp shortcut in envelopes.patch_operations loads what marshmallow loads."""

from __future__ import annotations

from typing import Any

import pytest

from scim_server.api import envelopes
from scim_server.errors import ScimError

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

BODIES: list[Any] = [
    {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "x"}]},
    {"schemas": [PATCH], "operations": [{"op": "add", "value": {"title": "a"}}]},
    {"SCHEMAS": [PATCH], "Operations": [{"op": "remove", "path": 'emails[type eq "w"]'}]},
    {"Operations": [{"op": "replace", "path": None, "value": None}, {"op": "Add", "path": ""}]},
    {"schemas": [PATCH], "Operations": [{"op": "replace", "value": [1, 2]}], "extra": 1},
    {"schemas": [PATCH], "Operations": [{"op": "replace", "Path": "title", "value": 1}]},
    {"schemas": "nope", "Operations": [{"op": "replace"}]},
    {"schemas": [1], "Operations": [{"op": "replace"}]},
    {"schemas": [PATCH], "Operations": []},
    {"schemas": [PATCH], "Operations": [{"path": "title"}]},
    {"schemas": [PATCH], "Operations": [{"op": 3}]},
    {"schemas": [PATCH], "Operations": [{"op": "add", "path": 3}]},
    {"schemas": [PATCH], "Operations": [None]},
    {"schemas": [PATCH], "Operations": {"op": "add"}},
    {"schemas": [PATCH]},
    [],
]


def _marshmallow(body: Any) -> Any:
    try:
        return envelopes.load(envelopes.PATCH_REQUEST, body)["Operations"]
    except ScimError as exc:
        return type(exc), exc.args


@pytest.mark.parametrize("body", BODIES)
def test_patch_shortcut_agrees_with_marshmallow(body: Any) -> None:
    fast = envelopes._plain_patch_operations(body)
    if fast is not None:
        assert fast == _marshmallow(body)
    try:
        result = envelopes.patch_operations(body)
    except ScimError as exc:
        result = type(exc), exc.args
    assert result == _marshmallow(body)


def test_the_usual_bodies_take_the_shortcut() -> None:
    assert all(envelopes._plain_patch_operations(b) is not None for b in BODIES[:4])
