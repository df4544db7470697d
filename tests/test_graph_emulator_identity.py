"""The emulator's identity endpoints against Entra's documented behaviour.

- OpenID discovery: https://learn.microsoft.com/en-us/entra/identity-platform/v2-protocols-oidc
- Client credentials: https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow
- Certificate credentials: https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials
- ROPC: https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth-ropc
- AADSTS codes: https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes
- Graph's 401: https://learn.microsoft.com/en-us/graph/errors
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msal
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.graph_emulator import (
    GRAPH_SCOPE,
    STRONG_PASSWORD,
    RunningEmulator,
    run_emulator,
    self_signed_certificate,
)


def _token(em: RunningEmulator, **data: str) -> requests.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": em.client_id,
        "client_secret": em.client_secret,
        "scope": GRAPH_SCOPE,
        **data,
    }
    return em.session.post(em.token_endpoint, data=form, timeout=10)


def _ropc(em: RunningEmulator, username: str, password: str) -> requests.Response:
    return _token(
        em,
        grant_type="password",
        username=username,
        password=password,
        scope=f"{GRAPH_SCOPE} openid profile offline_access",
    )


def _aadsts(response: requests.Response) -> int:
    body = response.json()
    assert body["error_description"].startswith(f"AADSTS{body['error_codes'][0]}:")
    return int(body["error_codes"][0])


def test_startup_line_is_one_json_line_with_the_wiring(tmp_path: Path) -> None:
    cli = str(Path(sys.executable).parent / "scim-server")
    proc = subprocess.Popen(
        [cli, "graph-emulator", "--port", "0", "--domain", "contoso.com", "--client-id", "app-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={"PATH": str(Path(sys.executable).parent), "DATABASE_URL": f"sqlite:///{tmp_path}/x"},
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert set(info) == {
            "authority_host",
            "graph_url",
            "tenant_id",
            "client_id",
            "client_secret",
            "ca_bundle",
            "domains",
        }
        assert info["authority_host"].startswith("https://127.0.0.1:")
        assert info["graph_url"] == info["authority_host"] + "/v1.0"
        assert info["client_id"] == "app-1" and len(info["client_secret"]) >= 32
        assert "contoso.com" in info["domains"]
        discovery = requests.get(
            f"{info['authority_host']}/{info['tenant_id']}/v2.0/.well-known/openid-configuration",
            verify=info["ca_bundle"],
            timeout=10,
        )
        assert discovery.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_plain_http_startup_has_null_ca_bundle() -> None:
    with run_emulator(use_tls=False) as em:
        assert em.ca_bundle is None and em.authority_host.startswith("http://")
        assert _token(em).status_code == 200


def test_openid_discovery_gives_what_msal_reads(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    body = em.session.get(f"{em.authority}/v2.0/.well-known/openid-configuration").json()
    assert body["token_endpoint"] == em.token_endpoint
    assert body["authorization_endpoint"] == f"{em.authority}/oauth2/v2.0/authorize"
    assert body["issuer"] == f"{em.authority}/v2.0"
    unknown = em.session.get(f"{em.authority_host}/nope/v2.0/.well-known/openid-configuration")
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_tenant"


def test_client_credentials_token_lives_longer_than_five_minutes(
    graph_emulator: RunningEmulator,
) -> None:
    response = _token(graph_emulator)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 300
    # The emulator's own origin is accepted as the Graph resource too.
    assert _token(graph_emulator, scope=f"{graph_emulator.authority_host}/.default").ok


def test_wrong_secret_is_401_invalid_client_aadsts7000215(
    graph_emulator: RunningEmulator,
) -> None:
    response = _token(graph_emulator, client_secret="wrong")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert _aadsts(response) == 7000215
    assert "wrong" not in response.text


def test_unknown_client_and_bad_scope_are_refused(graph_emulator: RunningEmulator) -> None:
    unknown = _token(graph_emulator, client_id="someone-else")
    assert unknown.status_code == 400 and _aadsts(unknown) == 700016
    no_default = _token(graph_emulator, scope="https://graph.microsoft.com/User.Read")
    assert no_default.json()["error"] == "invalid_scope" and _aadsts(no_default) == 1002012
    other = _token(graph_emulator, scope="https://vault.azure.net/.default")
    assert other.json()["error"] == "invalid_resource"
    no_secret = _token(graph_emulator, client_secret="")
    assert no_secret.status_code == 401 and _aadsts(no_secret) == 7000218


def test_msal_confidential_client_gets_a_token(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    app = msal.ConfidentialClientApplication(
        em.client_id,
        client_credential=em.client_secret,
        authority=em.authority,
        instance_discovery=False,
        http_client=em.session,
    )
    result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert "access_token" in result, result
    users = em.session.get(
        f"{em.graph_url}/users", headers={"Authorization": f"Bearer {result['access_token']}"}
    )
    assert users.status_code == 200


def test_msal_reports_a_wrong_secret_as_a_dict(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    app = msal.ConfidentialClientApplication(
        em.client_id,
        client_credential="not-the-secret",
        authority=em.authority,
        instance_discovery=False,
        http_client=em.session,
    )
    result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
    assert result.get("error") == "invalid_client" and 7000215 in result["error_codes"]


def test_msal_certificate_credential_is_verified_against_the_registered_cert() -> None:
    key, cert = self_signed_certificate()
    other_key, _ = self_signed_certificate()
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()

    def credential(private_key: rsa.RSAPrivateKey) -> dict[str, Any]:
        private = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {"private_key": private, "public_certificate": pem}

    with run_emulator(client_certificate=cert) as em:
        for private_key, ok in ((key, True), (other_key, False)):
            app = msal.ConfidentialClientApplication(
                em.client_id,
                client_credential=credential(private_key),
                authority=em.authority,
                instance_discovery=False,
                http_client=em.session,
            )
            result = app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
            assert ("access_token" in result) is ok, result
            if not ok:
                assert result["error"] == "invalid_client" and 700027 in result["error_codes"]


def test_graph_requires_a_bearer_token_from_the_emulator(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    missing = em.session.get(f"{em.graph_url}/users")
    assert missing.status_code == 401
    error = missing.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert error["message"] == "Access token is empty."
    forged = em.session.get(f"{em.graph_url}/users", headers={"Authorization": "Bearer a.b.c"})
    assert forged.status_code == 401


def test_ropc_signs_in_with_the_directory_password(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.create_user("adele")
    response = _ropc(em, "Adele@example.com", STRONG_PASSWORD)
    assert response.status_code == 200, response.text
    assert response.json()["access_token"] and response.json()["id_token"]
    wrong = _ropc(em, "adele@example.com", "Wr0ng-password")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert _aadsts(wrong) == 50126
    unknown = _ropc(em, "nobody@example.com", STRONG_PASSWORD)
    assert unknown.json()["error"] == "invalid_grant" and _aadsts(unknown) == 50034


def test_ropc_honours_disabled_accounts_and_forced_change(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    user = em.create_user("bob")
    assert (
        em.graph("PATCH", f"/users/{user['id']}", json={"accountEnabled": False}).status_code == 204
    )
    disabled = _ropc(em, "bob@example.com", STRONG_PASSWORD)
    assert disabled.json()["error"] == "invalid_grant" and _aadsts(disabled) == 50057
    em.graph("PATCH", f"/users/{user['id']}", json={"accountEnabled": True})
    reset = {"passwordProfile": {"password": "N3w-Passw0rd", "forceChangePasswordNextSignIn": True}}
    assert em.graph("PATCH", f"/users/{user['id']}", json=reset).status_code == 204
    expired = _ropc(em, "bob@example.com", "N3w-Passw0rd")
    assert _aadsts(expired) == 50055
    assert "password is expired" in expired.json()["error_description"]
    reset["passwordProfile"]["forceChangePasswordNextSignIn"] = False
    em.graph("PATCH", f"/users/{user['id']}", json=reset)
    assert _ropc(em, "bob@example.com", "N3w-Passw0rd").status_code == 200
    assert _ropc(em, "bob@example.com", STRONG_PASSWORD).status_code == 400


def test_ropc_refuses_a_federated_user(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    created = em.graph(
        "POST",
        "/users",
        json={
            "accountEnabled": True,
            "displayName": "Fed",
            "mailNickname": "fed",
            "userPrincipalName": "fed@federated.example",
            "onPremisesImmutableId": "ZmVk",
        },
    )
    assert created.status_code == 201, created.text
    refused = _ropc(em, "fed@federated.example", STRONG_PASSWORD)
    assert refused.json()["error"] == "invalid_grant"


class _PortKeepingSession(requests.Session):
    """msal asks https://{host}/common/userrealm/{user} with the authority's port dropped
    (msal/authority.py user_realm_discovery); send it to the emulator's port, which answers
    404, and msal falls back to the plain password grant."""

    def __init__(self, em: RunningEmulator) -> None:
        super().__init__()
        self.trust_env = False
        self.verify = em.ca_bundle or True
        self.portless = em.authority_host.rsplit(":", 1)[0] + "/"
        self.authority_host = em.authority_host

    def request(self, method: str | bytes, url: str | bytes, *a: Any, **kw: Any) -> Any:  # type: ignore[override]
        if isinstance(url, str) and url.startswith(self.portless + "common/userrealm/"):
            url = url.replace(self.portless, self.authority_host + "/", 1)
        return super().request(method, url, *a, **kw)


def test_msal_username_password_flow(graph_emulator: RunningEmulator) -> None:
    em = graph_emulator
    em.create_user("carol")
    session = _PortKeepingSession(em)
    app = msal.ConfidentialClientApplication(
        em.client_id,
        client_credential=em.client_secret,
        authority=em.authority,
        instance_discovery=False,
        http_client=session,
    )
    ok = app.acquire_token_by_username_password("carol@example.com", STRONG_PASSWORD, [GRAPH_SCOPE])
    assert "access_token" in ok, ok
    bad = app.acquire_token_by_username_password("carol@example.com", "Nope-12345", [GRAPH_SCOPE])
    assert bad.get("error") == "invalid_grant" and 50126 in bad["error_codes"]
    session.close()


def test_password_hashes_of_earlier_state_files_still_verify() -> None:
    import hashlib
    import os

    from scim_server.graph.emulator.passwords import hash_password, verify_password

    salt = os.urandom(16)
    digest = hashlib.scrypt(b"Old-Pass-1", salt=salt, n=2**12, r=8, p=1)
    earlier = f"scrypt${salt.hex()}${digest.hex()}"  # before the cost was written down
    assert verify_password("Old-Pass-1", earlier)
    assert not verify_password("Old-Pass-2", earlier)
    now = hash_password("New-Pass-1")
    assert now.startswith("scrypt$1024$") and "New-Pass-1" not in now
    assert verify_password("New-Pass-1", now) and not verify_password("New-Pass-2", now)
