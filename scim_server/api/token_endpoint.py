"""POST /oauth/token: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4). A thin view:
it reads the form and the client's credentials, and scim_server/oauth.py decides."""

from __future__ import annotations

import base64
import json
from urllib.parse import unquote_plus

from flask import Blueprint, Response, current_app, request

from scim_server import auth, oauth, throttle

bp = Blueprint("oauth", __name__)

FORM = "application/x-www-form-urlencoded"
PARAMETERS = ("grant_type", "scope", "client_id", "client_secret")


def _json(body: dict[str, object], status: int = 200) -> Response:
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    # RFC 6749 §5.1: tokens and credentials are never cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.errorhandler(oauth.OAuthError)
def _error(exc: oauth.OAuthError) -> Response:
    response = _json(dict(exc.body()), exc.status)
    if isinstance(exc, oauth.InvalidClient) and exc.basic:
        response.headers["WWW-Authenticate"] = 'Basic realm="scim-server OAuth"'
    if isinstance(exc, oauth.SlowDown):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


@bp.post("/oauth/token")
def token() -> Response:
    # RFC 6749 §4.4.2: the parameters come form-encoded in the body.
    if request.mimetype != FORM:
        raise oauth.InvalidRequest(f"The request body must be {FORM}.")
    form = request.form
    for name in PARAMETERS:
        if len(form.getlist(name)) > 1:  # RFC 6749 §3.2: never more than once
            raise oauth.InvalidRequest(f"The parameter {name!r} is given more than once.")
    # RFC 6749 §3.2: a parameter sent without a value is treated as omitted.
    grant_type = form.get("grant_type") or None
    if grant_type is None:
        raise oauth.InvalidRequest("The parameter 'grant_type' is required.")
    if grant_type != "client_credentials":
        raise oauth.UnsupportedGrantType("Only the client_credentials grant is supported.")
    client_id, secret, basic = _client_credentials()
    issued = oauth.issue(
        client_id,
        secret,
        form.get("scope") or None,
        basic=basic,
        lifetime=current_app.config["SCIM_OAUTH_TOKEN_LIFETIME_SECONDS"],
        address=throttle.client_address(),
        brake=auth.Brake.of(current_app.config),
    )
    # RFC 6749 §5.1.
    return _json(
        {
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scope,
        }
    )


def _client_credentials() -> tuple[str, str, bool]:
    """(client_id, client_secret, whether HTTP Basic carried them): RFC 6749 §2.3.1, Basic
    (each part form-urlencoded first) or both in the body, not both ways at once."""
    form = request.form
    header = request.headers.get("Authorization")
    if header:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise oauth.InvalidClient("Authenticate the client with HTTP Basic.", True)
        if form.get("client_secret"):
            raise oauth.InvalidRequest("Send the client's credentials one way only.")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII text
            raise oauth.InvalidClient("The Basic credentials are malformed.", True) from None
        user, colon, password = decoded.partition(":")
        client_id, secret = unquote_plus(user), unquote_plus(password)
        if not colon or not client_id or not secret:
            raise oauth.InvalidClient("The Basic credentials are malformed.", True)
        if form.get("client_id") and form["client_id"] != client_id:
            raise oauth.InvalidRequest("client_id differs from the Basic user name.")
        return client_id, secret, True
    form_id, form_secret = form.get("client_id") or None, form.get("client_secret") or None
    if form_id is None or form_secret is None:
        raise oauth.InvalidClient(
            "Client authentication failed: send client_id and client_secret, or HTTP Basic.",
            False,
        )
    return form_id, form_secret, False
