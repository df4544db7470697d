from __future__ import annotations

import logging

import pytest
from flask import Flask

from scim_server import create_app
from tests.conftest import ScimClient


def test_me_is_501(scim: ScimClient) -> None:
    response = scim.get("/Me")
    assert response.status_code == 501
    assert response.get_json()["status"] == "501"


def test_unknown_route_is_scim_404(scim: ScimClient) -> None:
    response = scim.get("/Nope")
    assert response.status_code == 404
    assert response.get_json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_500_carries_request_id_and_no_traceback(
    database_url: str, app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    broken = create_app({"TESTING": False, "SQLALCHEMY_DATABASE_URI": database_url})

    @broken.get("/scim/v2/Boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    from scim_server import auth
    from scim_server.db import db

    with broken.app_context():
        _, token = auth.create_token("boom")
    try:
        with caplog.at_level(logging.ERROR):
            response = broken.test_client().get(
                "/scim/v2/Boom", headers={"Authorization": f"Bearer {token}"}
            )
    finally:
        with broken.app_context():
            db.engine.dispose()
    assert response.status_code == 500
    body = response.get_json()
    assert body["status"] == "500"
    request_id = response.headers["X-Request-Id"]
    assert request_id in body["detail"]
    assert "secret internals" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    assert request_id in caplog.text and "secret internals" in caplog.text


def test_oversized_body_is_413_in_scim_format(scim: ScimClient) -> None:
    response = scim.post("/Users", {"userName": "x", "displayName": "y" * 1_100_000})
    assert response.status_code == 413
    assert response.get_json()["status"] == "413"
    assert scim.get("/Users?count=0").get_json()["totalResults"] == 0


def test_config_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from scim_server.config import ConfigError

    monkeypatch.setenv("SCIM_MAX_PAGE_SIZE", "lots")
    with pytest.raises(ConfigError, match="SCIM_MAX_PAGE_SIZE"):
        create_app()
