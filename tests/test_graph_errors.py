"""Graph failures become types (the error shapes of https://learn.microsoft.com/graph/errors,
and the member-add and ObjectConflict bodies of group-post-members and user-post-users)."""

from __future__ import annotations

from typing import Any

import pytest

from scim_server.config import ConfigError
from scim_server.graph import errors
from scim_server.graph.settings import from_env


def _body(code: str, message: str, details: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": "2026-11-27T00:00:00", "request-id": "req-1"},
            "details": details or [],
        }
    }


def test_duplicate_upn_is_a_conflict_by_its_detail_code() -> None:
    error = errors.classify(
        400,
        _body(
            "Request_BadRequest",
            "Another object with the same value for property userPrincipalName already exists.",
            [{"target": "userPrincipalName", "code": "ObjectConflict"}],
        ),
        {},
    )
    assert isinstance(error, errors.Conflict)
    assert error.request_id == "req-1"
    assert error.detail_codes() == {"ObjectConflict"}


def test_already_a_member_is_a_conflict_only_on_a_member_add() -> None:
    body = _body(
        "Request_BadRequest",
        "One or more added object references already exist for the following modified "
        "properties: 'members'.",
    )
    assert isinstance(errors.classify(400, body, {}, member_add=True), errors.Conflict)
    assert isinstance(errors.classify(400, body, {}), errors.Invalid)


def test_password_complexity_is_invalid() -> None:
    body = _body(
        "Request_BadRequest",
        "The specified password does not comply with password complexity requirements. "
        "Please provide a different password.",
    )
    assert isinstance(errors.classify(400, body, {}), errors.Invalid)


@pytest.mark.parametrize(
    ("headers", "expected"), [({"Retry-After": "7"}, 7.0), ({}, None), ({"retry-after": "x"}, None)]
)
def test_throttled_carries_retry_after(headers: dict[str, str], expected: float | None) -> None:
    error = errors.classify(429, _body("TooManyRequests", "Too many requests"), headers)
    assert isinstance(error, errors.Throttled)
    assert error.retry_after == expected


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_transient(status: int) -> None:
    assert isinstance(errors.classify(status, None, {}, reason="Bad Gateway"), errors.Transient)


def test_404_is_not_found() -> None:
    body = _body("Request_ResourceNotFound", "Resource 'x' does not exist.")
    assert isinstance(errors.classify(404, body, {}), errors.NotFound)


def test_403_names_the_missing_permission() -> None:
    body = _body(
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation. API requires one of "
        "'User.ReadWrite.All, Directory.ReadWrite.All'.",
    )
    error = errors.classify(403, body, {})
    assert isinstance(error, errors.AuthError)
    assert error.permission == "User.ReadWrite.All, Directory.ReadWrite.All"


def test_a_body_that_is_not_graphs_still_classifies() -> None:
    error = errors.classify(400, "<html>", {"request-id": "r2"}, reason="Bad Request")
    assert isinstance(error, errors.Invalid)
    assert (error.message, error.request_id) == ("Bad Request", "r2")


def test_settings_need_one_credential_and_https_authority(tmp_path: Any) -> None:
    assert from_env({}) is None
    base = {"GRAPH_TENANT_ID": "t", "GRAPH_CLIENT_ID": "c"}
    with pytest.raises(ConfigError, match="exactly one"):
        from_env(base)
    with pytest.raises(ConfigError, match="https"):
        from_env({**base, "GRAPH_CLIENT_SECRET": "s", "GRAPH_AUTHORITY_HOST": "http://x"})
    settings = from_env({**base, "GRAPH_CLIENT_SECRET": "s3cret"})
    assert settings is not None
    assert settings.scope == "https://graph.microsoft.com/.default"
    assert settings.instance_discovery is True
    assert "s3cret" not in repr(settings)
    emulated = from_env(
        {**base, "GRAPH_CLIENT_SECRET": "s", "GRAPH_AUTHORITY_HOST": "https://127.0.0.1:9443"}
    )
    assert emulated is not None and emulated.instance_discovery is False
