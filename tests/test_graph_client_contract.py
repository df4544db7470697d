"""Contract tests of the production Graph client (msal + requests, no patching).

Each contract test runs against the Graph emulator on loopback, and with `-m live` against
the real tenant that GRAPH_* points to (skipped when GRAPH_TENANT_ID is unset): the same
code path, only the settings differ. Live runs create objects named `scimtest-…` in
GRAPH_LIVE_DOMAIN (default: the tenant's default domain) and delete them afterwards.

Docs: Create user, Update user, Delete user, List users, user: delta, revokeSignInSessions
(learn.microsoft.com/graph/api/user-*); Create group, Add members, Remove member, Update group
(group-*); Assign manager (user-post-manager); List domains (domain-list); JSON batching
(learn.microsoft.com/graph/json-batching); Error responses (learn.microsoft.com/graph/errors).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from scim_server.graph import errors
from scim_server.graph.client import BatchRequest, GraphClient
from scim_server.graph.settings import from_env
from tests.graph_emulator import (
    STRONG_PASSWORD,
    RunningEmulator,
    graph_env,
    self_signed_certificate,
    settings_for,
)


@dataclass
class Target:
    client: GraphClient
    domain: str
    live: bool
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def upn(self, stem: str) -> str:
        return f"scimtest-{stem}-{secrets.token_hex(3)}@{self.domain}"

    def new_user(self, stem: str = "u", **props: Any) -> dict[str, Any]:
        upn = self.upn(stem)
        body = {
            "accountEnabled": True,
            "displayName": f"SCIM test {stem}",
            "mailNickname": upn.split("@")[0],
            "userPrincipalName": upn,
            "passwordProfile": {"password": STRONG_PASSWORD, "forceChangePasswordNextSignIn": True},
            **props,
        }
        user = self.client.create_user(body)
        self.users.append(user["id"])
        return user

    def new_group(self, stem: str = "g", members: tuple[str, ...] = ()) -> dict[str, Any]:
        name = f"scimtest-{stem}-{secrets.token_hex(3)}"
        group = self.client.create_security_group(name, name, member_ids=members)
        self.groups.append(group["id"])
        return group

    def eventually(self, check: Callable[[], Any]) -> Any:
        """Live Graph replicates: retry a read that 404s for a few seconds."""
        deadline = time.monotonic() + (30 if self.live else 0)
        while True:
            try:
                return check()
            except errors.NotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


@pytest.fixture(params=["emulator", pytest.param("live", marks=pytest.mark.live)])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "emulator":
        emulator: RunningEmulator = request.getfixturevalue("graph_emulator")
        yield Target(GraphClient(settings_for(emulator)), "example.com", live=False)
        return
    settings = from_env()
    if settings is None:
        pytest.skip("GRAPH_TENANT_ID is not set: no live tenant to run the contract against")
    client = GraphClient(settings)
    domain = os.environ.get("GRAPH_LIVE_DOMAIN") or next(
        d["id"] for d in client.domains() if d.get("isDefault")
    )
    live = Target(client, domain, live=True)
    try:
        yield live
    finally:
        for gid in live.groups:
            with contextlib.suppress(errors.GraphError):
                client.delete_group(gid)
        for uid in live.users:
            with contextlib.suppress(errors.GraphError):
                client.delete_user(uid)


# ---------------------------------------------------------------- tokens


def test_token_with_the_client_secret_through_msal(target: Target) -> None:
    assert target.client.tokens.token()
    # One msal app per provider: the second token comes from msal's cache.
    assert target.client.tokens.token() == target.client.tokens.token()


def test_a_wrong_secret_is_an_auth_error_without_the_secret(
    graph_emulator: RunningEmulator,
) -> None:
    client = GraphClient(settings_for(graph_emulator, client_secret="not-the-secret-42"))
    with pytest.raises(errors.AuthError) as caught:
        client.domains()
    assert "invalid_client" in str(caught.value)
    assert "not-the-secret-42" not in str(caught.value)


def test_requests_ca_bundle_in_the_environment_does_not_override_the_settings(
    graph_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/nonexistent/ca.pem")
    # Wired from the start-up line through GRAPH_* alone, as an operator would.
    settings = from_env(graph_env(graph_emulator))
    assert settings is not None
    client = GraphClient(settings)
    assert any(d["id"] == "example.com" for d in client.domains())


def test_the_default_trust_ignores_requests_ca_bundle_and_netrc(
    graph_emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # With the emulator's CA only in REQUESTS_CA_BUNDLE, the client must not trust it.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", graph_emulator.ca_bundle or "")
    with pytest.raises(errors.TlsError):
        GraphClient(settings_for(graph_emulator, ca_bundle=None)).domains()
    # A ~/.netrc entry for the host must not replace the bearer token with Basic auth.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password something\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert GraphClient(settings_for(graph_emulator)).domains()


@pytest.mark.parametrize("status", [503, 429])
def test_token_endpoint_outages_are_transient(graph_emulator: RunningEmulator, status: int) -> None:
    token_path = f"/{graph_emulator.tenant_id}/oauth2/v2.0/token"
    graph_emulator.fault(kind="status", status=status, retry_after=1, path=token_path)
    with pytest.raises(errors.Transient):
        GraphClient(settings_for(graph_emulator)).domains()


# ---------------------------------------------------------------- users


def test_user_lifecycle(target: Target) -> None:
    client = target.client
    user = target.new_user("life", givenName="Adele", jobTitle="Tester")
    uid, upn = user["id"], user["userPrincipalName"]
    found = target.eventually(lambda: client.find_user(upn.upper(), select=["id", "jobTitle"]))
    assert found is not None and found["id"] == uid

    client.update_user(uid, {"jobTitle": "Lead", "accountEnabled": False})
    got = target.eventually(lambda: client.get_user(uid, select=["jobTitle", "accountEnabled"]))
    assert (got["jobTitle"], got["accountEnabled"]) == ("Lead", False)
    client.revoke_sign_in_sessions(uid)

    client.set_password(uid, "An0ther-Str0ng!", force_change=False)
    with pytest.raises(errors.Invalid) as weak:
        client.set_password(uid, "weak", force_change=False)
    assert "complexity" in weak.value.message

    client.delete_user(uid)
    with pytest.raises(errors.NotFound):
        client.get_user(uid)
    restored = client.restore_deleted(uid)
    assert restored["id"] == uid
    assert target.eventually(lambda: client.get_user(uid))["userPrincipalName"] == upn


def test_duplicate_upn_is_a_conflict(target: Target) -> None:
    user = target.new_user("dup")
    with pytest.raises(errors.Conflict) as caught:
        target.client.create_user(
            {
                "accountEnabled": True,
                "displayName": "Dup",
                "mailNickname": "dup",
                "userPrincipalName": user["userPrincipalName"],
                "passwordProfile": {"password": STRONG_PASSWORD},
            }
        )
    assert "ObjectConflict" in caught.value.detail_codes()
    assert caught.value.request_id


def test_invalid_creates_are_invalid(target: Target) -> None:
    with pytest.raises(errors.Invalid, match="complexity"):
        target.new_user("weakpw", passwordProfile={"password": "password"})
    with pytest.raises(errors.Invalid):
        target.new_user("nodomain", userPrincipalName="someone@unverified.invalid")


def test_list_users_follows_next_links(target: Target) -> None:
    made = {target.new_user(f"page{i}")["id"] for i in range(5)}
    if target.live:
        time.sleep(5)
    seen = [u["id"] for u in target.client.list_users(select=["id"], top=2)]
    assert made <= set(seen)
    assert len(seen) == len(set(seen))
    with pytest.raises(ValueError):
        next(iter(target.client.list_users(top=1000)))


def test_users_delta_reports_new_and_removed_users(target: Target) -> None:
    first = target.client.users_delta(select=["id", "userPrincipalName"])
    assert first.delta_link
    user = target.new_user("delta")
    target.client.delete_user(user["id"])
    later = target.client.users_delta(first.delta_link)
    changed = {u["id"]: u for u in later.items}
    assert user["id"] in changed
    assert changed[user["id"]].get("@removed") is not None


def test_manager(target: Target) -> None:
    boss, report = target.new_user("boss"), target.new_user("report")
    target.eventually(lambda: target.client.set_manager(report["id"], boss["id"]))
    manager = target.eventually(lambda: target.client.manager(report["id"]))
    assert manager is not None and manager["id"] == boss["id"]
    target.client.remove_manager(report["id"])
    assert target.client.manager(report["id"]) is None


# ---------------------------------------------------------------- groups


def test_group_membership(target: Target) -> None:
    client = target.client
    a, b, c = (target.new_user(n) for n in ("ma", "mb", "mc"))
    group = target.new_group("members", members=(a["id"],))
    gid = group["id"]
    target.eventually(lambda: client.add_member(gid, b["id"]))
    with pytest.raises(errors.Conflict):
        client.add_member(gid, b["id"])  # already a member: Graph's "already exist"
    with pytest.raises(errors.NotFound):
        client.add_member(gid, "00000000-0000-0000-0000-000000000000")
    client.add_members(gid, [c["id"]])
    assert set(client.member_ids(gid)) == {a["id"], b["id"], c["id"]}
    client.remove_member(gid, a["id"])
    assert set(client.member_ids(gid)) == {b["id"], c["id"]}
    # Removing a member through /$ref leaves the user itself in place.
    assert client.get_user(a["id"])["id"] == a["id"]
    with pytest.raises(ValueError):
        client.add_members(gid, [f"id-{i}" for i in range(21)])
    client.update_group(gid, {"description": "synced"})
    assert client.get_group(gid, select=["description"])["description"] == "synced"
    client.delete_group(gid)
    with pytest.raises(errors.NotFound):
        client.get_group(gid)


def test_domains(target: Target) -> None:
    domains = {d["id"]: d for d in target.client.domains()}
    assert sum(1 for d in domains.values() if d["isDefault"]) == 1
    assert target.domain in domains
    assert domains[target.domain]["isVerified"] is True
    assert domains[target.domain]["authenticationType"] in ("Managed", "Federated")


def test_batch_with_depends_on_and_a_failed_dependency(target: Target) -> None:
    upn = target.upn("batch")
    parts = [
        BatchRequest(
            "1",
            "POST",
            "/users",
            {
                "accountEnabled": True,
                "displayName": "Batch",
                "mailNickname": upn.split("@")[0],
                "userPrincipalName": upn,
                "passwordProfile": {"password": STRONG_PASSWORD},
            },
        ),
        # Graph takes a batch fully parallel or fully sequential, never mixed.
        BatchRequest("2", "GET", "/users/00000000-0000-0000-0000-000000000000", depends_on=("1",)),
        BatchRequest("3", "GET", "/domains", depends_on=("2",)),
    ]
    results = {r.id: r for r in target.client.batch(parts)}
    assert results["1"].status == 201 and results["1"].error is None
    target.users.append(results["1"].body["id"])
    assert isinstance(results["2"].error, errors.NotFound)
    assert results["3"].status == 424
    assert isinstance(results["3"].error, errors.FailedDependency)  # it never ran: retryable
    with pytest.raises(ValueError):
        target.client.batch([BatchRequest(str(i), "GET", "/domains") for i in range(21)])


def test_create_then_add_member_by_upn_in_one_batch(target: Target) -> None:
    # The add cannot know the id the create will get: it names the user by UPN, in another
    # case than the create's, and dependsOn the create.
    group = target.new_group("dep")
    upn = target.upn("dep")
    create = {
        "accountEnabled": True,
        "displayName": "Batch member",
        "mailNickname": upn.split("@")[0],
        "userPrincipalName": upn,
        "passwordProfile": {"password": STRONG_PASSWORD},
    }
    add = {"@odata.id": target.client.user_ref(upn.upper())}
    results = {
        r.id: r
        for r in target.client.batch(
            [
                BatchRequest("1", "POST", "/users", create),
                BatchRequest("2", "POST", f"/groups/{group['id']}/members/$ref", add, (), ("1",)),
            ]
        )
    }
    assert results["1"].status == 201
    target.users.append(results["1"].body["id"])
    if target.live and isinstance(results["2"].error, errors.NotFound):
        # Replication lag: the sync retries this; here, once more by hand.
        target.eventually(lambda: target.client.add_member(group["id"], results["1"].body["id"]))
    else:
        assert results["2"].status == 204, results["2"].body
    members = target.eventually(lambda: list(target.client.member_ids(group["id"])))
    assert members == [results["1"].body["id"]]


# ---------------------------------------------------------------- faults (emulator only)


def test_faults_become_types(graph_emulator: RunningEmulator) -> None:
    client = GraphClient(settings_for(graph_emulator, timeout=1))
    client.domains()  # a token first, so the faults hit Graph calls
    graph_emulator.fault(kind="status", status=503, path="/v1.0/domains")
    with pytest.raises(errors.Transient):
        client.domains()
    graph_emulator.fault(kind="status", status=429, retry_after=7, path="/v1.0/domains")
    with pytest.raises(errors.Throttled) as throttled:
        client.domains()
    assert throttled.value.retry_after == 7
    graph_emulator.fault(kind="timeout", seconds=3, path="/v1.0/domains")
    with pytest.raises(errors.Transient, match="timed out"):
        client.domains()
    graph_emulator.fault(kind="drop", path="/v1.0/domains")
    with pytest.raises(errors.Transient):
        client.domains()
    assert client.domains()  # and then it works again


def test_replication_lag_is_a_not_found(graph_emulator: RunningEmulator) -> None:
    graph_emulator.configure(replication_lag=30)
    target = Target(GraphClient(settings_for(graph_emulator)), "example.com", live=False)
    user = target.new_user("lag")
    with pytest.raises(errors.NotFound):
        target.client.get_user(user["id"])


def test_write_budget_answers_429_with_retry_after(graph_emulator: RunningEmulator) -> None:
    graph_emulator.configure(write_budget=2, write_window=60)
    target = Target(GraphClient(settings_for(graph_emulator)), "example.com", live=False)
    target.new_user("w1")
    target.new_user("w2")
    with pytest.raises(errors.Throttled) as caught:
        target.new_user("w3")
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


@pytest.mark.parametrize("kind", ["pem", "pfx"])
def test_certificate_credential_from_graph_client_cert_path(tmp_path: Any, kind: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from tests.graph_emulator import run_emulator

    key, cert = self_signed_certificate()
    passphrase = "pfx-pass-phrase"
    if kind == "pem":
        path = tmp_path / "app.pem"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(passphrase.encode()),
            )
            + cert.public_bytes(serialization.Encoding.PEM)
        )
    else:
        path = tmp_path / "app.pfx"
        path.write_bytes(
            pkcs12.serialize_key_and_certificates(
                b"app", key, cert, None, serialization.BestAvailableEncryption(passphrase.encode())
            )
        )
    with run_emulator(client_certificate=cert) as emulator:
        env = {**graph_env(emulator), "GRAPH_CLIENT_CERT_PATH": str(path)}
        env["GRAPH_CLIENT_CERT_PASSPHRASE"] = passphrase
        del env["GRAPH_CLIENT_SECRET"]
        settings = from_env(env)
        assert settings is not None and settings.client_secret is None
        assert any(d["isDefault"] for d in GraphClient(settings).domains())
