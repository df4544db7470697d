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

from sqlalchemy import bindparam, delete, insert, select, update

from models import OAuthAccessToken, OAuthClient, utcnow
from scim_server import auth, throttle
from scim_server.db import begin

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


_CLIENT_COLUMNS = tuple(OAuthClient.__table__.c)
_ADD_CLIENT = insert(OAuthClient).returning(*_CLIENT_COLUMNS)
_ALL_CLIENTS = select(*_CLIENT_COLUMNS).order_by(OAuthClient.id)
_REVOKE_CLIENTS = (
    update(OAuthClient)
    .where(
        OAuthClient.revoked_at.is_(None),
        (OAuthClient.client_id == bindparam("ident")) | (OAuthClient.name == bindparam("ident")),
    )
    .values(revoked_at=bindparam("now"))
    .returning(*_CLIENT_COLUMNS)
)


def create_client(name: str, *, read_only: bool = False) -> tuple[auth.TableRow, str]:
    """A new client (its oauth_clients row) and its secret (shown once; only its SHA-256 is
    kept)."""
    secret = auth.new_secret(CLIENT_SECRET_PREFIX)
    with begin(write=True) as conn:
        row = conn.execute(
            _ADD_CLIENT,
            {
                "name": name,
                "client_id": CLIENT_ID_PREFIX + secrets.token_hex(10),
                "secret_hash": auth.hash_token(secret),
                "read_only": read_only,
            },
        ).one()
    return row, secret


def list_clients() -> list[auth.TableRow]:
    with begin(write=False) as conn:
        return list(conn.execute(_ALL_CLIENTS))


def revoke_client(ident: str) -> auth.TableRow | None:
    """Revoke by client id or name; its access tokens stop working with it."""
    with begin(write=True) as conn:
        rows = list(conn.execute(_REVOKE_CLIENTS, {"ident": ident, "now": utcnow()}))
    if not rows:
        return None
    auth.reset_memory()  # the cached access tokens of this process
    return min(rows, key=lambda r: r.id)


# ---------------------------------------------------------------- the grant

_CLIENT = select(
    OAuthClient.id, OAuthClient.secret_hash, OAuthClient.read_only, OAuthClient.revoked_at
).where(OAuthClient.client_id == bindparam("client_id"))
# Expired tokens say nothing any more (found through the index on expires_at).
_PRUNE_TOKENS = delete(OAuthAccessToken).where(OAuthAccessToken.expires_at < bindparam("now"))
_ADD_ACCESS_TOKEN = insert(OAuthAccessToken)
_CLIENT_USED = (
    update(OAuthClient)
    .where(OAuthClient.id == bindparam("pk"))
    .values(last_used_at=bindparam("now"))
)


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
    with begin(write=False) as conn:
        wait = throttle.retry_after(conn, [throttle_key], now)
        row = None if wait else conn.execute(_CLIENT, {"client_id": client_id}).first()
    if wait:
        raise SlowDown(wait)
    digest = auth.hash_token(client_secret)
    # Compare even when there is no such client, so the answer takes the same time.
    right = hmac.compare_digest(row[1] if row else _DUMMY_DIGEST, digest) and row is not None
    if not right:
        with begin(write=True) as conn:
            throttle.count(conn, [(throttle_key, brake.failures)], brake.window, now)
            wait = throttle.retry_after(conn, [throttle_key], now)
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
    with begin(write=True) as conn:
        conn.execute(_PRUNE_TOKENS, {"now": now})
        conn.execute(
            _ADD_ACCESS_TOKEN,
            {
                "token_hash": auth.hash_token(token),
                "client_id": pk,
                "read_only": read_only,
                "created_at": now,
                "expires_at": expires,
            },
        )
        conn.execute(_CLIENT_USED, {"pk": pk, "now": now})
    return Issued(token, lifetime, granted)
