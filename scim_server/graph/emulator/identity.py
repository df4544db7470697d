"""Entra's identity endpoints as msal uses them: OpenID discovery and the v2.0 token endpoint
for the client-credentials grant (secret or certificate) and the password grant (ROPC).

- https://learn.microsoft.com/en-us/entra/identity-platform/v2-protocols-oidc
- https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow
- https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth-ropc
- https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes

msal also asks `{host}/common/userrealm/{username}` before a password grant; the emulator
answers 404 there, which msal documents as "fall back to the plain password grant".
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any
from urllib.parse import unquote

from flask import Blueprint, Response, request

from scim_server.graph.emulator.errors import OAuthError
from scim_server.graph.emulator.state import Emulator
from scim_server.graph.emulator.tenant import SignInFailure
from scim_server.graph.emulator.tokens import (
    ACCESS_TOKEN_LIFETIME,
    GRAPH_RESOURCE,
    b64url,
    verify_client_assertion,
)

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OIDC_SCOPES = {"openid", "profile", "offline_access", "email"}


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(body),
        status=status,
        mimetype="application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def create_identity_blueprint(em: Emulator) -> Blueprint:
    bp = Blueprint("identity", __name__)

    def tenant_or_error(segment: str) -> None:
        known = {em.tenant.tenant_id.lower(), "organizations", *em.tenant.domains}
        if segment.lower() not in known:
            raise OAuthError(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{segment}' not found. Check to make sure you have the correct tenant "
                "ID and are signing into the correct cloud.",
            )

    def issuer() -> str:
        return f"{em.base_url}/{em.tenant.tenant_id}/v2.0"

    @bp.errorhandler(OAuthError)
    def oauth_error(error: OAuthError) -> Response:
        return _json(error.body(), error.status)

    @bp.get("/<tenant>/v2.0/.well-known/openid-configuration")
    def openid_configuration(tenant: str) -> Response:
        tenant_or_error(tenant)
        base = f"{em.base_url}/{tenant}"
        return _json(
            {
                "issuer": issuer(),
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "jwks_uri": f"{em.base_url}/{em.tenant.tenant_id}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "response_types_supported": ["code", "id_token", "code id_token", "token"],
                "grant_types_supported": ["client_credentials", "password"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": None,
                "cloud_instance_name": "microsoftonline.com",
                "msgraph_host": em.base_url.split("://", 1)[-1],
            }
        )

    @bp.get("/<tenant>/.well-known/openid-configuration")
    def openid_configuration_v1(tenant: str) -> Response:
        """The v1.0 document: its issuer is the sts.windows.net one that Entra's provisioning
        tokens carry (https://login.microsoftonline.com/{tenant}/.well-known/
        openid-configuration answers the same fields)."""
        tenant_or_error(tenant)
        base = f"{em.base_url}/{tenant}"
        return _json(
            {
                "issuer": sts_issuer(),
                "authorization_endpoint": f"{base}/oauth2/authorize",
                "token_endpoint": f"{base}/oauth2/token",
                "jwks_uri": f"{em.base_url}/{em.tenant.tenant_id}/discovery/keys",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "response_types_supported": ["code", "id_token", "code id_token", "token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "cloud_instance_name": "microsoftonline.com",
            }
        )

    @bp.get("/<tenant>/discovery/keys")
    @bp.get("/<tenant>/discovery/v2.0/keys")
    def keys(tenant: str) -> Response:
        tenant_or_error(tenant)
        return _json(em.signing_keys.jwks())

    @bp.post("/<tenant>/oauth2/v2.0/token")
    def token(tenant: str) -> Response:
        tenant_or_error(tenant)
        form = request.form
        grant = form.get("grant_type", "")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = request.authorization
        if basic is not None and basic.type == "basic":
            client_id = client_id or unquote(basic.username or "")
            secret = secret or unquote(basic.password or "")
        if grant not in ("client_credentials", "password"):
            raise OAuthError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        if not client_id:
            raise OAuthError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        authenticate_client(client_id, secret, tenant)
        if grant == "client_credentials":
            return client_credentials(client_id)
        return password_grant(client_id)

    def authenticate_client(client_id: str, secret: str | None, tenant: str) -> None:
        if not hmac.compare_digest(client_id.encode(), em.options.client_id.encode()):
            raise OAuthError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You may "
                "have sent your authentication request to the wrong tenant.",
            )
        assertion = request.form.get("client_assertion")
        if assertion is not None:
            if request.form.get("client_assertion_type") != ASSERTION_TYPE:
                raise OAuthError(
                    400,
                    "invalid_request",
                    50027,
                    "Invalid client_assertion_type; expected jwt-bearer.",
                )
            certificate = em.options.client_certificate
            if certificate is None:
                raise OAuthError(
                    401,
                    "invalid_client",
                    700027,
                    "Client assertion failed signature validation: no certificate is "
                    f"registered for app '{client_id}'.",
                )
            endpoint = f"{em.base_url}{request.path}"
            reason = verify_client_assertion(assertion, certificate, client_id, endpoint)
            if reason:
                raise OAuthError(401, "invalid_client", 700027, reason)
            return
        if not secret:
            raise OAuthError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        if not hmac.compare_digest(secret.encode(), em.options.client_secret.encode()):
            raise OAuthError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'.",
            )

    def graph_resources() -> set[str]:
        return {GRAPH_RESOURCE, em.base_url, GRAPH_APP_ID}

    def client_credentials(client_id: str) -> Response:
        scopes = request.form.get("scope", "").split()
        if not scopes:
            raise OAuthError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        for scope in scopes:
            if not scope.endswith("/.default"):
                raise OAuthError(
                    400,
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {scope} is not valid. Client credential "
                    "flows must have a scope value with /.default suffixed to the resource "
                    "identifier (application ID URI).",
                )
            resource = scope.removesuffix("/.default").rstrip("/")
            if resource not in graph_resources():
                raise OAuthError(
                    400,
                    "invalid_resource",
                    500011,
                    f"The resource principal named {resource} was not found in the tenant "
                    f"named {em.tenant.tenant_id}.",
                )
        token = em.issuer.access_token(
            tenant_id=em.tenant.tenant_id, app_id=client_id, issuer=sts_issuer()
        )
        return _json(
            {
                "token_type": "Bearer",
                "expires_in": ACCESS_TOKEN_LIFETIME,
                "ext_expires_in": ACCESS_TOKEN_LIFETIME,
                "access_token": token,
            }
        )

    def sts_issuer() -> str:
        return f"https://sts.windows.net/{em.tenant.tenant_id}/"

    def password_grant(client_id: str) -> Response:
        username = request.form.get("username")
        password = request.form.get("password")
        for name, value in (("username", username), ("password", password)):
            if not value:
                raise OAuthError(
                    400,
                    "invalid_request",
                    900144,
                    f"The request body must contain the following parameter: '{name}'.",
                )
        assert username is not None and password is not None
        with em.lock:
            try:
                user = em.tenant.sign_in(username, password)
            except SignInFailure as failure:
                raise OAuthError(
                    400, "invalid_grant", failure.aadsts, failure.description
                ) from None
            user_id, upn = user.id, user.props["userPrincipalName"]
            display_name = user.props.get("displayName")
        scopes = request.form.get("scope", "").split()
        now = int(time.time())
        id_token = em.issuer.encode(
            {
                "aud": client_id,
                "iss": issuer(),
                "iat": now,
                "nbf": now,
                "exp": now + ACCESS_TOKEN_LIFETIME,
                "oid": user_id,
                "sub": user_id,
                "tid": em.tenant.tenant_id,
                "preferred_username": upn,
                "name": display_name,
                "ver": "2.0",
            }
        )
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(s for s in scopes if s not in OIDC_SCOPES)
            or f"{GRAPH_RESOURCE}/.default",
            "expires_in": ACCESS_TOKEN_LIFETIME,
            "ext_expires_in": ACCESS_TOKEN_LIFETIME,
            "access_token": em.issuer.access_token(
                tenant_id=em.tenant.tenant_id,
                app_id=client_id,
                issuer=sts_issuer(),
                user_id=user_id,
            ),
            "id_token": id_token,
        }
        if request.form.get("client_info") == "1":
            info = {"uid": user_id, "utid": em.tenant.tenant_id}
            body["client_info"] = b64url(json.dumps(info).encode())
        return _json(body)

    return bp
