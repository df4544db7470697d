from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from models import ApiToken, utcnow
from tests.conftest import ScimClient


def test_missing_token_is_401_with_www_authenticate(anonymous: ScimClient) -> None:
    response = anonymous.get("/Users")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["status"] == "401"


def test_wrong_token_is_401(app: Flask) -> None:
    client = ScimClient(app.test_client(), "scim_not-a-real-token")
    response = client.get("/Users")
    assert response.status_code == 401
    assert "scim_not-a-real-token" not in response.get_data(as_text=True)


def test_read_only_token_reads_and_searches_but_cannot_write(scim_read_only: ScimClient) -> None:
    assert scim_read_only.get("/Users").status_code == 200
    assert scim_read_only.post("/.search", {"filter": "userName pr"}).status_code == 200
    response = scim_read_only.post("/Users", {"userName": "x"})
    assert response.status_code == 403
    assert response.get_json()["status"] == "403"


def test_revoked_token_is_refused(app: Flask) -> None:
    from scim_server import auth

    with app.app_context():
        row, secret = auth.create_token("temp")
        client = ScimClient(app.test_client(), secret)
        assert client.get("/Users").status_code == 200
        auth.revoke_token(str(row.id))
    assert client.get("/Users").status_code == 401


def test_token_is_stored_hashed(app: Flask) -> None:
    from scim_server import auth

    with app.app_context():
        row, secret = auth.create_token("hashed")
        assert row.token_hash != secret
        assert secret not in row.token_hash
        assert row.token_hash == auth.hash_token(secret)


def test_revocation_reaches_other_processes_within_the_cache_time(app: Flask) -> None:
    """Another process's revocation is seen once the cached entry expires (here: 0 s)."""
    from scim_server import auth
    from scim_server.db import db

    with app.app_context():
        row, secret = auth.create_token("cached")
        assert auth.authenticate(f"Bearer {secret}", cache_seconds=60) is not None
        # Revoke behind the cache's back, as a second process would.
        db.session.execute(
            sa.update(ApiToken).where(ApiToken.id == row.id).values(revoked_at=utcnow())
        )
        db.session.commit()
        assert auth.authenticate(f"Bearer {secret}", cache_seconds=60) is not None
        with pytest.raises(auth.Revoked):
            auth.authenticate(f"Bearer {secret}", cache_seconds=0)
