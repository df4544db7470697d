"""Every credential scheme of the SCIM API end to end over HTTP (issue 16): static bearer
tokens, Okta's header and Basic modes, the token lifecycle, the OAuth 2.0 client-credentials
endpoint, Entra provisioning's JWTs (against the emulator's keys) and the brake on guessing.

Each wrong, expired, revoked or read-only credential gets its RFC's status (RFC 6750 §3.1 and
RFC 7235 for 401 with a challenge, RFC 6749 §5.2 at the token endpoint) and, on the SCIM API,
SCIM's error body (RFC 7644 §3.12)."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from models import ApiToken, OAuthAccessToken, utcnow
from scim_server import auth, entra, oauth
from tests.graph_emulator import RunningEmulator

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ada@example.com"}
FORM = "application/x-www-form-urlencoded"


def _get(client: FlaskClient, authorization: str | None, address: str = "10.0.0.1") -> Any:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return client.get("/scim/v2/Users", headers=headers, environ_base={"REMOTE_ADDR": address})


def _post_user(client: FlaskClient, authorization: str) -> Any:
    return client.post(
        "/scim/v2/Users",
        json=USER,
        headers={"Authorization": authorization, "Content-Type": "application/scim+json"},
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _assert_401(response: Any, scheme: str = "Bearer") -> dict[str, Any]:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"].startswith(f'{scheme} realm="SCIM"')
    body = dict(response.get_json())
    assert body["schemas"] == [ERROR_SCHEMA] and body["status"] == "401"
    return body


def _token(app: Flask, name: str = "idp", **kw: Any) -> str:
    with app.app_context():
        return auth.create_token(name, **kw)[1]


# ---------------------------------------------------------------- static bearer tokens


def test_a_wrong_bearer_token_is_401_invalid_token(client: FlaskClient) -> None:
    response = _get(client, "Bearer scim_" + "x" * 43)
    _assert_401(response)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_no_credentials_is_401_without_an_error_code(client: FlaskClient) -> None:
    response = _get(client, None)
    _assert_401(response)
    # RFC 6750 §3.1: a request without credentials gets no error code.
    assert "error=" not in response.headers["WWW-Authenticate"]


def test_an_unknown_scheme_is_401(client: FlaskClient) -> None:
    _assert_401(_get(client, "Digest username=x"))


def test_an_expired_token_is_401(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        row, secret = auth.create_token("old", expires_in=timedelta(days=1))
        assert _get(client, f"Bearer {secret}").status_code == 200
        from scim_server.db import db

        db.session.execute(
            sa.update(ApiToken).where(ApiToken.id == row.id).values(expires_at=utcnow())
        )
        db.session.commit()
    auth.reset_memory()
    body = _assert_401(_get(client, f"Bearer {secret}"))
    assert "expired" in body["detail"]


def test_a_revoked_token_is_401(app: Flask, client: FlaskClient) -> None:
    secret = _token(app, "gone")
    with app.app_context():
        auth.revoke_token("gone")
    body = _assert_401(_get(client, f"Bearer {secret}"))
    assert "revoked" in body["detail"]


def test_a_read_only_token_reads_and_gets_403_on_writes(app: Flask, client: FlaskClient) -> None:
    secret = _token(app, "reader", read_only=True)
    assert _get(client, f"Bearer {secret}").status_code == 200
    response = _post_user(client, f"Bearer {secret}")
    assert response.status_code == 403
    assert response.get_json()["schemas"] == [ERROR_SCHEMA]


# ---------------------------------------------------------------- Okta's header and Basic modes


def test_header_auth_is_accepted_only_where_enabled(app: Flask, client: FlaskClient) -> None:
    enabled = _token(app, "okta-header", header_auth=True)
    plain = _token(app, "plain")
    assert _get(client, enabled).status_code == 200
    assert _get(client, f"Bearer {enabled}").status_code == 200  # Bearer still works
    body = _assert_401(_get(client, plain))
    assert "header authentication" in body["detail"]
    _assert_401(_get(client, "scim_" + "y" * 43))  # a wrong bare token


def test_basic_credentials(app: Flask, client: FlaskClient) -> None:
    password = _token(app, "okta", basic=True)
    assert _get(client, _basic("okta", password)).status_code == 200
    _assert_401(_get(client, _basic("okta", password + "x")), "Basic")
    _assert_401(_get(client, _basic("someone", password)), "Basic")
    _assert_401(_get(client, "Basic !!!not-base64"), "Basic")
    _assert_401(_get(client, "Basic " + base64.b64encode(b"no-colon").decode()), "Basic")
    # The password is no bearer token, bare or not.
    _assert_401(_get(client, f"Bearer {password}"), "Basic")
    _assert_401(_get(client, password), "Basic")


def test_a_read_only_basic_credential_gets_403_on_writes(app: Flask, client: FlaskClient) -> None:
    password = _token(app, "okta-ro", basic=True, read_only=True)
    assert _get(client, _basic("okta-ro", password)).status_code == 200
    assert _post_user(client, _basic("okta-ro", password)).status_code == 403


def test_a_basic_user_name_is_unique_among_live_credentials(app: Flask) -> None:
    _token(app, "okta", basic=True)
    with app.app_context(), pytest.raises(ValueError, match="exists"):
        auth.create_token("okta", basic=True)
    with app.app_context(), pytest.raises(ValueError, match="colon"):
        auth.create_token("ok:ta", basic=True)


# ---------------------------------------------------------------- lifecycle


def test_rotation_keeps_the_old_secret_for_the_grace_period(
    app: Flask, client: FlaskClient
) -> None:
    old = _token(app, "entra", header_auth=True, expires_in=timedelta(days=90))
    with app.app_context():
        rotated = auth.rotate_token("entra", timedelta(hours=24))
        assert rotated is not None
        row, new = rotated
        assert row.header_auth and row.expires_at is not None
        assert timedelta(days=89) < row.expires_at - utcnow() <= timedelta(days=90)
    assert _get(client, f"Bearer {old}").status_code == 200
    assert _get(client, new).status_code == 200  # header auth carried over
    with app.app_context():
        assert auth.rotate_token("entra", timedelta(0)) is not None  # no grace this time
    auth.reset_memory()
    _assert_401(_get(client, f"Bearer {old}"))
    _assert_401(_get(client, f"Bearer {new}"))


def test_rotating_a_basic_credential_keeps_its_user_name(app: Flask, client: FlaskClient) -> None:
    _token(app, "okta", basic=True)
    with app.app_context():
        rotated = auth.rotate_token("okta", timedelta(0))
        assert rotated is not None
    assert _get(client, _basic("okta", rotated[1])).status_code == 200


def test_last_use_is_written_at_most_once_a_minute(app: Flask, client: FlaskClient) -> None:
    secret = _token(app, "busy")
    from scim_server.db import db

    def last_used() -> Any:
        with app.app_context():
            return db.session.scalars(sa.select(ApiToken.last_used_at)).one()

    assert last_used() is None
    assert _get(client, f"Bearer {secret}").status_code == 200
    first = last_used()
    assert first is not None
    auth._cache.clear()  # a second request that reads the database again
    for _ in range(3):
        assert _get(client, f"Bearer {secret}").status_code == 200
    assert last_used() == first


def test_cli_create_list_rotate_revoke(app: Flask) -> None:
    runner = app.test_cli_runner()
    created = runner.invoke(args=["token", "create", "okta", "--basic", "--expires", "90d"])
    assert created.exit_code == 0, created.output
    user_line, password = created.stdout.splitlines()[-2:]
    assert user_line == "user name: okta" and password.startswith("scim_")
    assert runner.invoke(args=["token", "create", "x", "--expires", "soon"]).exit_code == 2
    listed = runner.invoke(args=["token", "list", "--json"])
    import json

    (row,) = json.loads(listed.stdout)
    assert row["scheme"] == "basic" and row["state"] == "active"
    assert row["expires_at"] and row["last_used_at"] is None
    assert password not in listed.output
    rotated = runner.invoke(args=["token", "rotate", "okta", "--grace", "1h"])
    assert rotated.exit_code == 0 and rotated.stdout.splitlines()[-1] != password
    assert runner.invoke(args=["token", "rotate", "nobody"]).exit_code == 1
    assert runner.invoke(args=["token", "revoke", "okta"]).exit_code == 0
    states = {
        r["state"] for r in json.loads(runner.invoke(args=["token", "list", "--json"]).stdout)
    }
    assert states == {"revoked"}


# ---------------------------------------------------------------- OAuth 2.0 token endpoint


@pytest.fixture
def oauth_client(app: Flask) -> tuple[str, str]:
    with app.app_context():
        row, secret = oauth.create_client("entra-gallery")
        return row.client_id, secret


def _token_request(
    client: FlaskClient, data: dict[str, str], authorization: str | None = None, **kw: Any
) -> Any:
    headers = {"Authorization": authorization} if authorization else {}
    return client.post("/oauth/token", data=data, headers=headers, **kw)


def _assert_oauth_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["error"] == error
    assert response.headers["Cache-Control"] == "no-store"


def test_client_credentials_with_basic_and_with_the_form(
    client: FlaskClient, oauth_client: tuple[str, str]
) -> None:
    client_id, secret = oauth_client
    grant = {"grant_type": "client_credentials"}
    for response in (
        _token_request(client, grant, _basic(client_id, secret)),
        _token_request(client, {**grant, "client_id": client_id, "client_secret": secret}),
    ):
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Pragma"] == "no-cache"
        body = response.get_json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert body["scope"] == "scim"
        access = body["access_token"]
        assert _get(client, f"Bearer {access}").status_code == 200
        assert _post_user(client, f"Bearer {access}").status_code in (201, 409)


def test_token_endpoint_errors_follow_rfc_6749(
    client: FlaskClient, oauth_client: tuple[str, str]
) -> None:
    client_id, secret = oauth_client
    grant = {"grant_type": "client_credentials"}
    form_auth = {"client_id": client_id, "client_secret": secret}
    wrong = _token_request(client, grant, _basic(client_id, "scimcs_wrong"))
    _assert_oauth_error(wrong, 401, "invalid_client")
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    wrong_form = _token_request(client, {**grant, "client_id": client_id, "client_secret": "no"})
    _assert_oauth_error(wrong_form, 400, "invalid_client")
    assert "WWW-Authenticate" not in wrong_form.headers
    unknown = _token_request(client, {**grant, "client_id": "scimc_nobody", "client_secret": "x"})
    _assert_oauth_error(unknown, 400, "invalid_client")
    _assert_oauth_error(_token_request(client, grant), 400, "invalid_client")
    _assert_oauth_error(_token_request(client, form_auth), 400, "invalid_request")
    _assert_oauth_error(
        _token_request(client, {"grant_type": "password", **form_auth}),
        400,
        "unsupported_grant_type",
    )
    _assert_oauth_error(
        _token_request(client, {**grant, **form_auth, "scope": "admin"}), 400, "invalid_scope"
    )
    both = _token_request(client, {**grant, **form_auth}, _basic(client_id, secret))
    _assert_oauth_error(both, 400, "invalid_request")
    as_json = client.post("/oauth/token", json={**grant, **form_auth})
    _assert_oauth_error(as_json, 400, "invalid_request")
    twice = client.post(
        "/oauth/token",
        data=f"grant_type=client_credentials&grant_type=client_credentials&client_id={client_id}"
        f"&client_secret={secret}",
        content_type=FORM,
    )
    _assert_oauth_error(twice, 400, "invalid_request")
    assert client.get("/oauth/token").status_code == 405


def test_read_only_clients_and_scopes(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        ro, ro_secret = oauth.create_client("reader", read_only=True)
        rw, rw_secret = oauth.create_client("writer")
        ro_id, rw_id = ro.client_id, rw.client_id
    grant = {"grant_type": "client_credentials"}
    response = _token_request(client, grant, _basic(ro_id, ro_secret))
    assert response.get_json()["scope"] == "scim.read"
    access = response.get_json()["access_token"]
    assert _get(client, f"Bearer {access}").status_code == 200
    assert _post_user(client, f"Bearer {access}").status_code == 403
    asks_write = _token_request(client, {**grant, "scope": "scim"}, _basic(ro_id, ro_secret))
    _assert_oauth_error(asks_write, 400, "invalid_scope")
    narrowed = _token_request(client, {**grant, "scope": "scim.read"}, _basic(rw_id, rw_secret))
    assert _post_user(client, f"Bearer {narrowed.get_json()['access_token']}").status_code == 403


def test_expired_access_tokens_and_revoked_clients(
    app: Flask, client: FlaskClient, oauth_client: tuple[str, str]
) -> None:
    client_id, secret = oauth_client
    grant = {"grant_type": "client_credentials"}
    first = _token_request(client, grant, _basic(client_id, secret)).get_json()["access_token"]
    second = _token_request(client, grant, _basic(client_id, secret)).get_json()["access_token"]
    from scim_server.db import db

    with app.app_context():
        db.session.execute(
            sa.update(OAuthAccessToken)
            .where(OAuthAccessToken.token_hash == auth.hash_token(first))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    assert "expired" in _assert_401(_get(client, f"Bearer {first}"))["detail"]
    assert _get(client, f"Bearer {second}").status_code == 200
    runner = app.test_cli_runner()
    assert runner.invoke(args=["client", "revoke", client_id]).exit_code == 0
    assert "revoked" in _assert_401(_get(client, f"Bearer {second}"))["detail"]
    again = _token_request(client, grant, _basic(client_id, secret))
    _assert_oauth_error(again, 401, "invalid_client")
    _assert_401(_get(client, "Bearer scimat_" + "z" * 43))


def test_client_cli(app: Flask) -> None:
    runner = app.test_cli_runner()
    created = runner.invoke(args=["client", "create", "gallery", "--read-only"])
    assert created.exit_code == 0, created.output
    id_line, secret = created.stdout.splitlines()[-2:]
    client_id = id_line.removeprefix("client id: ")
    listed = runner.invoke(args=["client", "list"])
    assert client_id in listed.stdout and "read-only" in listed.stdout
    assert secret not in listed.output
    with app.app_context():
        from models import OAuthClient
        from scim_server.db import db

        row = db.session.scalars(sa.select(OAuthClient)).one()
        assert row.secret_hash == auth.hash_token(secret) and secret not in row.secret_hash
    assert runner.invoke(args=["client", "revoke", "gallery"]).exit_code == 0
    assert runner.invoke(args=["client", "revoke", "gallery"]).exit_code == 1


# ---------------------------------------------------------------- Entra provisioning JWTs


@pytest.fixture
def entra_verifier(app: Flask, graph_emulator: RunningEmulator) -> Iterator[entra.EntraVerifier]:
    verifier = entra.EntraVerifier(
        graph_emulator.tenant_id, graph_emulator.authority_host, graph_emulator.ca_bundle, 10
    )
    app.extensions[entra.EXTENSION] = verifier
    yield verifier
    app.extensions.pop(entra.EXTENSION, None)


def _entra_token(emulator: RunningEmulator, **flaws: Any) -> str:
    response = emulator.control("POST", "provisioning-token", json=flaws)
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def _key_fetches(emulator: RunningEmulator) -> int:
    return sum(1 for e in emulator.request_log() if e["path"].endswith("/discovery/keys"))


def test_entra_jwts_are_off_by_default(
    client: FlaskClient, graph_emulator: RunningEmulator
) -> None:
    _assert_401(_get(client, f"Bearer {_entra_token(graph_emulator)}"))


def test_an_entra_jwt_is_verified_against_the_tenants_keys(
    client: FlaskClient, graph_emulator: RunningEmulator, entra_verifier: entra.EntraVerifier
) -> None:
    token = _entra_token(graph_emulator)
    assert _get(client, f"Bearer {token}").status_code == 200
    assert _post_user(client, f"Bearer {token}").status_code == 201
    for flaws in (
        {"expires_in": -600},
        {"not_before_in": 600},
        {"audience": "00000003-0000-0000-c000-000000000000"},
        {"issuer": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/"},
        {"algorithm": "HS256"},
        {"unpublished_key": True},
    ):
        response = _get(client, f"Bearer {_entra_token(graph_emulator, **flaws)}")
        _assert_401(response)
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"], flaws
    # A forged signature: the payload of one token with the signature of another.
    head, payload, _ = token.split(".")
    other = _entra_token(graph_emulator, audience="someone-else").split(".")[2]
    _assert_401(_get(client, f"Bearer {head}.{payload}.{other}"))


def test_keys_are_fetched_again_for_an_unknown_kid_at_most_once_a_minute(
    client: FlaskClient, graph_emulator: RunningEmulator, entra_verifier: entra.EntraVerifier
) -> None:
    assert _get(client, f"Bearer {_entra_token(graph_emulator)}").status_code == 200
    assert _key_fetches(graph_emulator) == 1
    for _ in range(3):  # made-up kids: at most one fetch a minute
        _assert_401(_get(client, f"Bearer {_entra_token(graph_emulator, unpublished_key=True)}"))
    assert _key_fetches(graph_emulator) == 1
    # Entra rolls its keys: once the minute is over, a token with the new kid is accepted.
    graph_emulator.control("POST", "signing-keys/rotate")
    entra_verifier._attempted_at -= entra.REFRESH_MIN_INTERVAL_SECONDS
    assert _get(client, f"Bearer {_entra_token(graph_emulator)}").status_code == 200
    assert _key_fetches(graph_emulator) == 2


def test_day_old_keys_serve_at_once_while_they_are_fetched_again(
    client: FlaskClient, graph_emulator: RunningEmulator, entra_verifier: entra.EntraVerifier
) -> None:
    """A day on, a known key still answers at once: the keys are fetched again in the
    background, so a slow (here held) Entra delays no request; held fetches keep the keys."""

    def fresh() -> str:  # a new token each time: a verified one is remembered until it expires
        return f"Bearer {_entra_token(graph_emulator)}"

    assert _get(client, fresh()).status_code == 200
    keys_path = next(
        e["path"] for e in graph_emulator.request_log() if e["path"].endswith("/discovery/keys")
    )
    graph_emulator.fault(kind="timeout", seconds=4, method="GET", path=keys_path)
    entra_verifier._fetched_at -= entra.KEYS_MAX_AGE_SECONDS  # a day later
    entra_verifier._attempted_at -= entra.KEYS_MAX_AGE_SECONDS
    assert _get(client, fresh()).status_code == 200
    # Answered while the emulator still holds the fetch (it logs a request when it ends).
    assert entra_verifier.refreshing and _key_fetches(graph_emulator) == 1
    for _ in range(3):
        assert _get(client, fresh()).status_code == 200
    deadline = time.monotonic() + 30
    while entra_verifier.refreshing and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not entra_verifier.refreshing and _key_fetches(graph_emulator) == 2  # one: held
    assert _get(client, fresh()).status_code == 200  # the keys kept
    assert _key_fetches(graph_emulator) == 2  # and no second try within the minute


def test_requests_during_the_first_fetch_share_it(graph_emulator: RunningEmulator) -> None:
    """No keys yet: every token that arrives while they are fetched waits for that one fetch
    (discovery, then the keys: two GETs), and is then verified."""
    import concurrent.futures
    import threading

    import requests

    class HeldSession(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            self.trust_env = False
            self.release = threading.Event()
            self.gets = 0

        def get(self, url: str | bytes, **kw: Any) -> requests.Response:
            self.gets += 1
            self.release.wait(10)
            return super().get(url, **kw)

    session = HeldSession()
    verifier = entra.EntraVerifier(
        graph_emulator.tenant_id,
        graph_emulator.authority_host,
        graph_emulator.ca_bundle,
        10,
        session=session,
    )
    tokens = [_entra_token(graph_emulator) for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(verifier.verify, t) for t in tokens]
        deadline = time.monotonic() + 10
        while not verifier.refreshing and time.monotonic() < deadline:
            time.sleep(0.01)
        assert verifier.refreshing and not any(f.done() for f in futures)
        session.release.set()
        principals = [f.result(timeout=30) for f in futures]
    assert {p.name for p in principals} == {entra.PRINCIPAL_NAME}
    assert session.gets == 2


def test_unreachable_keys_refuse_the_jwt_without_counting_it(
    app: Flask, client: FlaskClient, graph_emulator: RunningEmulator, brake: None
) -> None:
    from tests.serving import free_port

    nowhere = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    app.extensions[entra.EXTENSION] = entra.EntraVerifier(graph_emulator.tenant_id, nowhere)
    try:
        token = _entra_token(graph_emulator)
        for _ in range(5):
            body = _assert_401(_get(client, f"Bearer {token}", address="192.0.2.44"))
            assert "signing keys" in body["detail"]
    finally:
        app.extensions.pop(entra.EXTENSION, None)
    assert _get(client, f"Bearer {_token(app)}", address="192.0.2.44").status_code == 200


def test_entra_is_turned_on_by_the_tenant_id(
    database_url: str, monkeypatch: pytest.MonkeyPatch, graph_emulator: RunningEmulator
) -> None:
    from scim_server import create_app
    from scim_server.config import ConfigError, load

    monkeypatch.setenv("SCIM_ENTRA_TENANT_ID", "not-a-guid")
    with pytest.raises(ConfigError, match="SCIM_ENTRA_TENANT_ID"):
        load("/tmp")
    monkeypatch.setenv("SCIM_ENTRA_TENANT_ID", graph_emulator.tenant_id.upper())
    monkeypatch.setenv("GRAPH_AUTHORITY_HOST", graph_emulator.authority_host)
    if graph_emulator.ca_bundle:
        monkeypatch.setenv("GRAPH_CA_BUNDLE", graph_emulator.ca_bundle)
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url})
    verifier = app.extensions[entra.EXTENSION]
    assert verifier.issuer == f"https://sts.windows.net/{graph_emulator.tenant_id}/"
    token = _entra_token(graph_emulator)
    response = app.test_client().get("/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    from scim_server.db import db

    with app.app_context():
        db.engine.dispose()


# ---------------------------------------------------------------- the brake on guessing


@pytest.fixture
def brake(app: Flask) -> Iterator[None]:
    saved = app.config["SCIM_AUTH_ADDRESS_FAILURES"]
    app.config["SCIM_AUTH_ADDRESS_FAILURES"] = 3
    yield
    app.config["SCIM_AUTH_ADDRESS_FAILURES"] = saved


def test_failures_lock_the_address_not_the_others(
    app: Flask, client: FlaskClient, brake: None
) -> None:
    secret = _token(app, "idp")
    assert _get(client, f"Bearer {secret}", address="192.0.2.7").status_code == 200  # cached now
    for _ in range(2):
        _assert_401(_get(client, "Bearer scim_guess", address="192.0.2.7"))
    locked = _get(client, "Bearer scim_guess", address="192.0.2.7")
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0
    assert locked.get_json()["schemas"] == [ERROR_SCHEMA] and locked.get_json()["status"] == "429"
    assert _get(client, f"Bearer {secret}", address="192.0.2.7").status_code == 429
    # Even a right token waits at the locked address, in every process (the count is in the
    # database: this process forgets what it saw, and still finds the lock)...
    auth.reset_memory()
    assert _get(client, f"Bearer {secret}", address="192.0.2.7").status_code == 429
    # ... and the token endpoint shares the brake.
    response = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert response.status_code == 429 and response.get_json()["error"] == "slow_down"
    assert "Retry-After" in response.headers
    # A right token from another address is not affected.
    assert _get(client, f"Bearer {secret}", address="192.0.2.8").status_code == 200


def test_known_but_expired_or_revoked_credentials_are_not_counted(
    app: Flask, client: FlaskClient, brake: None
) -> None:
    old = _token(app, "old")
    with app.app_context():
        auth.revoke_token("old")
    for _ in range(5):
        _assert_401(_get(client, f"Bearer {old}", address="192.0.2.9"))
    assert _get(client, f"Bearer {_token(app, 'new')}", address="192.0.2.9").status_code == 200


def test_token_endpoint_failures_count_too(
    app: Flask, client: FlaskClient, brake: None, oauth_client: tuple[str, str]
) -> None:
    client_id, secret = oauth_client
    grant = {"grant_type": "client_credentials"}
    for _ in range(2):
        response = client.post(
            "/oauth/token",
            data={**grant, "client_id": client_id, "client_secret": "wrong"},
            environ_base={"REMOTE_ADDR": "198.51.100.1"},
        )
        _assert_oauth_error(response, 400, "invalid_client")
    response = client.post(
        "/oauth/token",
        data={**grant, "client_id": client_id, "client_secret": "wrong"},
        environ_base={"REMOTE_ADDR": "198.51.100.1"},
    )
    assert response.status_code == 429
    ok = client.post(
        "/oauth/token",
        data={**grant, "client_id": client_id, "client_secret": secret},
        environ_base={"REMOTE_ADDR": "198.51.100.2"},
    )
    assert ok.status_code == 200


def test_behind_a_proxy_the_forwarded_address_is_counted(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scim_server import create_app

    monkeypatch.setenv("SCIM_TRUSTED_PROXIES", "1")
    monkeypatch.setenv("SCIM_AUTH_ADDRESS_FAILURES", "2")
    proxied = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url})
    client = proxied.test_client()
    secret = _token(proxied, "idp")

    def get(authorization: str, forwarded: str) -> Any:
        return client.get(
            "/scim/v2/Users",
            headers={"Authorization": authorization, "X-Forwarded-For": forwarded},
            environ_base={"REMOTE_ADDR": "10.9.9.9"},  # the proxy itself
        )

    assert get("Bearer scim_guess", "203.0.113.5").status_code == 401
    assert get("Bearer scim_guess", "203.0.113.5").status_code == 429
    assert get(f"Bearer {secret}", "203.0.113.6").status_code == 200  # same proxy, other client
    from scim_server.db import db

    with proxied.app_context():
        db.engine.dispose()


# ---------------------------------------------------------------- no secret leaks


def test_no_secret_in_any_response_or_log(
    app: Flask,
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
    oauth_client: tuple[str, str],
) -> None:
    caplog.set_level(logging.DEBUG)
    bearer = _token(app, "bearer-idp")
    password = _token(app, "okta", basic=True)
    client_id, client_secret = oauth_client
    wrong = "scim_" + "w" * 43
    issued = _token_request(
        client, {"grant_type": "client_credentials"}, _basic(client_id, client_secret)
    )
    access = issued.get_json()["access_token"]
    responses = [
        _get(client, f"Bearer {bearer}"),
        _get(client, _basic("okta", password)),
        _get(client, f"Bearer {access}"),
        _get(client, f"Bearer {wrong}"),
        _get(client, _basic("okta", wrong)),
        _get(client, wrong),
        _token_request(client, {"grant_type": "client_credentials"}, _basic(client_id, wrong)),
    ]
    secrets = [bearer, password, client_secret, wrong]
    for response in responses:
        text = response.get_data(as_text=True) + str(response.headers)
        for secret in secrets:
            assert secret not in text
    assert access not in "".join(r.get_data(as_text=True) for r in responses[1:])
    logged = caplog.text
    for secret in [*secrets, access]:
        assert secret not in logged
    # The access log names the credential, never its secret.
    names = {
        getattr(r, "token_name", None) for r in caplog.records if r.name == "scim_server.access"
    }
    assert {"bearer-idp", "okta", "entra-gallery"} <= names


@pytest.mark.parametrize(
    "authorization",
    ["Basic \u00e9\u00e9", "Basic QQ==", "Bearer", "Bearer eyJhbGciOiJub25lIn0.e30.", "x" * 4000],
)
def test_malformed_credentials_are_401_never_500(
    client: FlaskClient, oauth_client: tuple[str, str], authorization: str
) -> None:
    scheme = "Basic" if authorization.startswith("Basic") else "Bearer"
    _assert_401(_get(client, authorization), scheme)
    response = _token_request(client, {"grant_type": "client_credentials"}, authorization)
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] in ("invalid_client", "invalid_request")
