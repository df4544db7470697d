"""The OAuth 2.0 client-credentials grant (RFC 6749 §4.4): clients, and the access tokens
POST /oauth/token issues them.

Access tokens are opaque (`scimat_` and 256 random bits), stored as their SHA-256 with the
client and an expiry, and looked up like static tokens (auth.py). Not signed JWTs: a
database row makes revoking a client end its tokens at once, needs no signing key to keep,
share between machines and rotate, and costs the same single indexed read per request that
every other credential costs (and the per-process cache spares most of them).

Errors (RFC 6749 §5.2), each rendered as `{"error", "error_description"}`:

OAuthError (400)
├── InvalidRequest        invalid_request: a missing, repeated or malformed parameter
├── InvalidClient         invalid_client: 401 with a Basic challenge when the client
│                         authenticated with HTTP Basic, else 400
├── UnsupportedGrantType  unsupported_grant_type: anything but client_credentials
├── InvalidScope          invalid_scope: a scope other than `scim` and `scim.read`, or
│                         `scim` for a read-only client
└── SlowDown (429)        slow_down (RFC 8628's registered code), with Retry-After: the
                          address failed too often (the SCIM API's brake, shared)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from models import OAuthClient, utcnow
from scim_server import auth, throttle
from scim_server.db import db, transaction

CLIENT_ID_PREFIX = "scimc_"
CLIENT_SECRET_PREFIX = "scimcs_"
SCOPE_WRITE = "scim"
SCOPE_READ = "scim.read"
_DUMMY_DIGEST = hashlib.sha256(b"no such client").hexdigest()


class OAuthError(Exception):
    status = 400
    error = "invalid_request"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    error = "invalid_client"

    def __init__(self, description: str, basic: bool) -> None:
        super().__init__(description)
        # RFC 6749 §5.2: 401 and WWW-Authenticate when the client used the Authorization
        # header; 400 otherwise (a 401 must carry a challenge, RFC 7235 §3.1).
        self.basic = basic
        self.status = 401 if basic else 400


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class SlowDown(OAuthError):
    status = 429
    error = "slow_down"

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many failed authentications from this address; try again later.")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Issued:
    access_token: str
    expires_in: int
    scope: str


# ---------------------------------------------------------------- clients (the CLI)


def create_client(name: str, *, read_only: bool = False) -> tuple[OAuthClient, str]:
    """A new client and its secret (shown once; only its SHA-256 is kept)."""
    secret = auth.new_secret(CLIENT_SECRET_PREFIX)
    row = OAuthClient(
        name=name,
        client_id=CLIENT_ID_PREFIX + secrets.token_hex(10),
        secret_hash=auth.hash_token(secret),
        read_only=read_only,
    )
    db.session.add(row)
    db.session.commit()
    return row, secret


def list_clients() -> list[OAuthClient]:
    return list(db.session.scalars(select(OAuthClient).order_by(OAuthClient.id)))


def revoke_client(ident: str) -> OAuthClient | None:
    """Revoke by client id or name; its access tokens stop working with it."""
    query = select(OAuthClient).where(
        OAuthClient.revoked_at.is_(None),
        (OAuthClient.client_id == ident) | (OAuthClient.name == ident),
    )
    rows = list(db.session.scalars(query))
    if not rows:
        return None
    for row in rows:
        row.revoked_at = utcnow()
    db.session.commit()
    auth.reset_memory()  # the cached access tokens of this process
    return rows[0]


# ---------------------------------------------------------------- the grant


def issue(
    client_id: str,
    client_secret: str,
    scope: str | None,
    *,
    basic: bool,
    lifetime: int,
    address: str,
    brake: auth.Brake,
) -> Issued:
    """Authenticate the client and issue it an access token, or raise an OAuthError."""
    throttle_key = throttle.address_key(auth.THROTTLE_NAMESPACE, address)
    now = utcnow()
    with transaction(write=False) as tx:
        wait = throttle.retry_after(tx, [throttle_key], now)
        row = (
            None
            if wait
            else tx.first(
                "SELECT id, secret_hash, read_only, revoked_at FROM oauth_clients"
                " WHERE client_id = ?",
                (client_id,),
            )
        )
    if wait:
        raise SlowDown(wait)
    digest = auth.hash_token(client_secret)
    # Compare even when there is no such client, so the answer takes the same time.
    right = hmac.compare_digest(row[1] if row else _DUMMY_DIGEST, digest) and row is not None
    if not right:
        with transaction(write=True) as tx:
            throttle.count(tx, [(throttle_key, brake.failures)], brake.window, now)
            wait = throttle.retry_after(tx, [throttle_key], now)
        if wait:
            raise SlowDown(wait)
        raise InvalidClient("Client authentication failed.", basic)
    assert row is not None
    pk, _, client_read_only, revoked = row
    if revoked is not None:
        raise InvalidClient("Client authentication failed: the client is revoked.", basic)
    read_only = bool(client_read_only)
    granted = SCOPE_READ if read_only else SCOPE_WRITE
    if scope is not None:
        asked = set(scope.split())
        if not asked or not asked <= {SCOPE_WRITE, SCOPE_READ}:
            raise InvalidScope(f"The scopes offered are {SCOPE_WRITE!r} and {SCOPE_READ!r}.")
        if SCOPE_WRITE in asked and read_only:
            raise InvalidScope(f"This client is read-only: ask for {SCOPE_READ!r}.")
        if SCOPE_WRITE not in asked:
            read_only, granted = True, SCOPE_READ
    token = auth.new_secret(auth.ACCESS_TOKEN_PREFIX)
    expires = now + timedelta(seconds=lifetime)
    with transaction(write=True) as tx:
        # Expired tokens say nothing any more (found through the index on expires_at).
        tx.execute("DELETE FROM oauth_access_tokens WHERE expires_at < ?", (tx.timestamp(now),))
        tx.execute(
            "INSERT INTO oauth_access_tokens (token_hash, client_id, read_only, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?)",
            (auth.hash_token(token), pk, read_only, tx.timestamp(now), tx.timestamp(expires)),
        )
        tx.execute(
            "UPDATE oauth_clients SET last_used_at = ? WHERE id = ?", (tx.timestamp(now), pk)
        )
    return Issued(token, lifetime, granted)
