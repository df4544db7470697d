"""The Graph emulator as a pytest fixture: a real HTTPS server on a free loopback port.

    from tests.graph_emulator import graph_emulator, graph_emulator_server  # noqa: F401

    def test_x(graph_emulator: RunningEmulator) -> None:
        graph_emulator.graph("POST", "/users", json={...})

`graph_emulator_server` starts one emulator per test session (control endpoints on, domains
example.com and contoso.com managed, federated.example federated, unverified.example not
verified). `graph_emulator` resets its state before each test and yields the same
RunningEmulator. `run_emulator(**options)` starts a separate one with other options.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import requests

from scim_server.graph.emulator.server import EmulatorServer
from scim_server.graph.emulator.state import EmulatorOptions
from scim_server.graph.settings import GraphSettings, from_startup_line

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
STRONG_PASSWORD = "Corr3ct-Horse!"


@dataclass
class RunningEmulator:
    """The start-up line's fields, plus helpers that speak to the live server."""

    authority_host: str
    graph_url: str
    tenant_id: str
    client_id: str
    client_secret: str
    ca_bundle: str | None
    domains: list[str]
    server: EmulatorServer = field(repr=False)
    session: requests.Session = field(repr=False)
    _token: str | None = field(default=None, repr=False)

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.authority}/oauth2/v2.0/token"

    def token(self) -> str:
        if self._token is None:
            response = self.session.post(
                self.token_endpoint,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                    "scope": GRAPH_SCOPE,
                },
                timeout=10,
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def graph(self, method: str, path: str, **kw: Any) -> requests.Response:
        """A Graph call with the app's bearer token; `path` is below /v1.0 or absolute."""
        url = (
            path
            if path.startswith("https://") or path.startswith("http://")
            else (self.graph_url + path)
        )
        headers = {"Authorization": f"Bearer {self.token()}", **kw.pop("headers", {})}
        return self.session.request(method, url, headers=headers, timeout=10, **kw)

    def control(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.session.request(
            method, f"{self.authority_host}/_emulator/{path}", timeout=10, **kw
        )

    def configure(self, **settings: Any) -> dict[str, Any]:
        response = self.control("POST", "config", json=settings)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def fault(self, **fault: Any) -> None:
        response = self.control("POST", "faults", json=fault)
        assert response.status_code == 201, response.text

    def advance(self, seconds: float) -> None:
        """Move the emulated tenant's clock on, instead of sleeping."""
        response = self.control("POST", "clock", json={"advance": seconds})
        assert response.status_code == 200, response.text

    def state(self) -> dict[str, Any]:
        return dict(self.control("GET", "state").json())

    def request_log(self) -> list[dict[str, Any]]:
        return list(self.control("GET", "requests").json()["value"])

    def reset(self) -> None:
        assert self.control("POST", "reset").status_code == 204

    # factories
    def create_user(self, nickname: str = "adele", **props: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "accountEnabled": True,
            "displayName": nickname.title(),
            "mailNickname": nickname,
            "userPrincipalName": f"{nickname}@example.com",
            "passwordProfile": {
                "password": STRONG_PASSWORD,
                "forceChangePasswordNextSignIn": False,
            },
            **props,
        }
        response = self.graph("POST", "/users", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def create_group(self, nickname: str = "sales", **props: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "displayName": nickname.title(),
            "mailEnabled": False,
            "mailNickname": nickname,
            "securityEnabled": True,
            "groupTypes": [],
            **props,
        }
        response = self.graph("POST", "/groups", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def ref(self, object_id: str) -> dict[str, str]:
        return {"@odata.id": f"{self.graph_url}/directoryObjects/{object_id}"}


def _session(ca_bundle: str | None) -> requests.Session:
    session = requests.Session()
    # REQUESTS_CA_BUNDLE in the environment would override a session-level verify.
    session.trust_env = False
    session.verify = ca_bundle or True
    return session


@contextmanager
def run_emulator(*, use_tls: bool = True, **options: Any) -> Iterator[RunningEmulator]:
    """Start an emulator with these EmulatorOptions on a free port; stop it afterwards."""
    server = EmulatorServer(EmulatorOptions(**options), port=0, use_tls=use_tls).start()
    info = json.loads(json.dumps(server.info))  # exactly what the start-up line carries
    session = _session(info["ca_bundle"])
    try:
        yield RunningEmulator(**info, server=server, session=session)
    finally:
        session.close()
        server.stop()


@pytest.fixture(scope="session")
def graph_emulator_server() -> Iterator[RunningEmulator]:
    with run_emulator(
        domains=["example.com", "contoso.com"],
        federated_domains=["federated.example"],
        unverified_domains=["unverified.example"],
        control=True,
    ) as running:
        yield running


@pytest.fixture
def graph_emulator(graph_emulator_server: RunningEmulator) -> RunningEmulator:
    graph_emulator_server.reset()
    return graph_emulator_server


@pytest.fixture
def tenant_env(graph_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> RunningEmulator:
    """The emulator as the tenant the CLI's commands read (`m365 import`): GRAPH_* set from
    its start-up line, users provisioned on example.com."""
    for name, value in {**graph_env(graph_emulator), "M365_SYNC_DOMAINS": "example.com"}.items():
        monkeypatch.setenv(name, value)
    return graph_emulator


def graph_env(emulator: RunningEmulator) -> dict[str, str]:
    """The GRAPH_* variables an operator sets from the emulator's start-up line."""
    return {
        "GRAPH_TENANT_ID": emulator.tenant_id,
        "GRAPH_CLIENT_ID": emulator.client_id,
        "GRAPH_CLIENT_SECRET": emulator.client_secret,
        "GRAPH_AUTHORITY_HOST": emulator.authority_host,
        "GRAPH_URL": emulator.graph_url,
        "GRAPH_CA_BUNDLE": emulator.ca_bundle or "",
        "GRAPH_SANDBOX": "",  # a tenant, not the sandbox the suite defaults to (conftest)
    }


def self_signed_certificate() -> tuple[Any, Any]:
    """An RSA key and a self-signed certificate for it: an app's certificate credential."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scim-server app")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def settings_for(emulator: RunningEmulator, **changes: Any) -> GraphSettings:
    """What an operator would put in GRAPH_* from the emulator's start-up line."""
    info = {f: getattr(emulator, f) for f in ("tenant_id", "client_id", "client_secret")}
    info.update(
        authority_host=emulator.authority_host,
        graph_url=emulator.graph_url,
        ca_bundle=emulator.ca_bundle,
    )
    return replace(from_startup_line(info), **{"timeout": 10, **changes})


def sign_in(emulator: RunningEmulator, upn: str, password: str) -> Any:
    """Entra's password grant, as a user would sign in to M365."""
    return emulator.session.post(
        emulator.token_endpoint,
        data={
            "grant_type": "password",
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "scope": GRAPH_SCOPE,
            "username": upn,
            "password": password,
        },
        timeout=10,
    )
