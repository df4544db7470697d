"""Who is calling the SCIM API: every credential it accepts, checked in one place.

Schemes (the `Authorization` header):

- `Bearer SECRET`: a static token (`scim-server token create`), an access token from the
  OAuth token endpoint (`scimat_…`, scim_server/oauth.py), or, with SCIM_ENTRA_TENANT_ID
  set, a JWT that Microsoft Entra's provisioning service issued (scim_server/entra.py).
- `SECRET` alone: Okta's "Header auth", only for tokens created with `--header-auth`.
- `Basic base64(user:password)`: Okta's "Basic auth", only for tokens created with
  `--basic`.

Secrets are stored as SHA-256 digests (each has 256 random bits, so a slow hash would add
nothing but cost) and compared in constant time. Failures are types:

AuthError (401)
├── NoCredentials        nothing was sent
├── BadCredentials       an unknown secret, a malformed header, a JWT that does not verify;
│                        the only kind counted against the client address (throttle)
├── WrongScheme          a known secret sent in a way not enabled for it
├── Revoked              a known credential that was revoked
├── Expired              a known credential past its expiry
├── entra.NotYetValid    an Entra JWT whose `nbf` is ahead
└── entra.Unverifiable   the tenant's signing keys could not be fetched
Locked (429)             the client address failed too often; even a right secret waits
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection, Row, bindparam, insert, select, update

from models import ApiToken, LoginThrottle, OAuthAccessToken, OAuthClient, utcnow
from scim_server import throttle
from scim_server.db import begin

TOKEN_PREFIX = "scim_"
ACCESS_TOKEN_PREFIX = "scimat_"  # oauth.py's access tokens; not a TOKEN_PREFIX: no "scim_"
THROTTLE_NAMESPACE = "api"
# A row of a Core statement, its columns by name or position (what the CLI shows of a token).
TableRow = Row[*tuple[Any, ...]]
LAST_USE_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class Principal:
    token_id: int | None
    name: str  # what logs and metrics show; never a secret
    read_only: bool
    kind: str = "token"  # token | oauth | entra
    expires: float | None = None  # epoch seconds


# ---------------------------------------------------------------- failures


class AuthError(Exception):
    status = 401
    # RFC 6750 §3.1: "invalid_token" for a token that is expired, revoked or malformed;
    # none when the request carried no credentials at all.
    error: str | None = "invalid_token"

    def __init__(self, description: str, scheme: str = "Bearer") -> None:
        super().__init__(description)
        self.description = description
        self.scheme = scheme  # the challenge to answer with: Bearer or Basic

    def challenge(self) -> str:
        """The WWW-Authenticate value (RFC 7235 §4.1; RFC 6750 §3 for Bearer)."""
        value = f'{self.scheme} realm="SCIM"'
        if self.scheme == "Bearer" and self.error:
            value += f', error="{self.error}", error_description="{self.description}"'
        return value


class NoCredentials(AuthError):
    error = None


class BadCredentials(AuthError):
    pass


class WrongScheme(AuthError):
    pass


class Revoked(AuthError):
    pass


class Expired(AuthError):
    pass


class Locked(Exception):
    """Too many failed authentications from this address: 429 with Retry-After."""

    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed authentications; retry in {retry_after} s")
        self.retry_after = max(retry_after, 1)


@dataclass(frozen=True)
class Brake:
    """SCIM_AUTH_ADDRESS_FAILURES failures from one address within SCIM_AUTH_LOCKOUT_SECONDS
    lock it for that long."""

    failures: int
    window: timedelta

    @classmethod
    def of(cls, config: Any) -> Brake:
        """The brake on failed authentications (SCIM API and token endpoint), from the
        app's config."""
        return cls(
            config["SCIM_AUTH_ADDRESS_FAILURES"],
            timedelta(seconds=config["SCIM_AUTH_LOCKOUT_SECONDS"]),
        )


class JwtVerifier(Protocol):
    def verify(self, token: str) -> Principal: ...


# ---------------------------------------------------------------- secrets


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_secret(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


_DURATION = re.compile(r"(\d{1,6})\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`90d`, `24h`, `30m`, `3600s`, `2w`: ValueError for anything else."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use a number and s, m, h, d or w: 90d)")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


_TOKEN = ApiToken.__table__
_TOKEN_COLUMNS = tuple(_TOKEN.c)
_LIVE_BASIC_USER = select(ApiToken.id).where(
    ApiToken.basic_user == bindparam("user"), ApiToken.revoked_at.is_(None)
)
_ADD_TOKEN = insert(ApiToken).returning(*_TOKEN_COLUMNS)


def create_token(
    name: str,
    *,
    read_only: bool = False,
    expires_in: timedelta | None = None,
    header_auth: bool = False,
    basic: bool = False,
) -> tuple[TableRow, str]:
    """A new credential (its api_tokens row) and its secret (shown once). With `basic`, its
    HTTP Basic user name is `name` and the secret is the password."""
    if basic and header_auth:
        raise ValueError("a Basic credential is sent as Basic only: --header-auth is for tokens")
    if basic and (":" in name or not name.strip()):
        raise ValueError("a Basic user name cannot hold a colon (RFC 7617 §2)")
    token = new_secret()
    with begin(write=True) as conn:
        if basic and conn.execute(_LIVE_BASIC_USER, {"user": name}).first() is not None:
            raise ValueError(f"a Basic credential named {name!r} exists: rotate or revoke it")
        row = conn.execute(
            _ADD_TOKEN,
            {
                "name": name,
                "token_hash": hash_token(token),
                "prefix": token[:12],
                "read_only": read_only,
                "scheme": "basic" if basic else "bearer",
                "header_auth": header_auth,
                "basic_user": name if basic else None,
                "expires_at": utcnow() + expires_in if expires_in else None,
            },
        ).one()
    return row, token


_SET_EXPIRY = (
    update(ApiToken).where(ApiToken.id == bindparam("row_id")).values(expires_at=bindparam("end"))
)


def rotate_token(
    ident: str, grace: timedelta, expires_in: timedelta | None = None
) -> tuple[TableRow, str] | None:
    """A new secret for the token `ident` (id or name), with its scheme, flags and lifetime;
    the old secret stays valid for `grace` (0: it stops now). None when nothing matched."""
    now = utcnow()
    token = new_secret()
    with begin(write=True) as conn:
        rows = [r for r in _active(conn, ident) if r.expires_at is None or r.expires_at > now]
        if not rows:
            return None
        newest = max(rows, key=lambda r: r.id)
        if expires_in is None and newest.expires_at is not None:
            expires_in = newest.expires_at - newest.created_at  # the same lifetime again
        end = now + grace
        # An earlier rotation still in its grace period ends no later.
        conn.execute(
            _SET_EXPIRY,
            [
                {"row_id": r.id, "end": min(r.expires_at, end) if r.expires_at else end}
                for r in rows
            ],
        )
        fresh = conn.execute(
            _ADD_TOKEN,
            {
                "name": newest.name,
                "token_hash": hash_token(token),
                "prefix": token[:12],
                "read_only": newest.read_only,
                "scheme": newest.scheme,
                "header_auth": newest.header_auth,
                "basic_user": newest.basic_user,
                "expires_at": now + expires_in if expires_in else None,
                "created_at": now,
            },
        ).one()
    _cache.clear()
    return fresh, token


_ALL_TOKENS = select(*_TOKEN_COLUMNS).order_by(ApiToken.id)


def list_tokens() -> list[TableRow]:
    """Every credential's api_tokens row, by id."""
    with begin(write=False) as conn:
        return list(conn.execute(_ALL_TOKENS))


def _which(ident: str) -> ColumnElement[bool]:
    """The live credentials `ident` names: by numeric id, or every one of that name."""
    named = ApiToken.id == int(ident) if ident.isdigit() else ApiToken.name == ident
    return ApiToken.revoked_at.is_(None) & named


def _active(conn: Connection, ident: str) -> list[TableRow]:
    return list(conn.execute(select(*_TOKEN_COLUMNS).where(_which(ident)).order_by(ApiToken.id)))


def revoke_token(ident: str) -> TableRow | None:
    """Revoke by numeric id or by name (every secret of that name: a rotation's old one
    too); returns the first one's row, None when nothing matched."""
    with begin(write=True) as conn:
        rows = list(
            conn.execute(
                update(ApiToken)
                .where(_which(ident))
                .values(revoked_at=utcnow())
                .returning(*_TOKEN_COLUMNS)
            )
        )
    if not rows:
        return None
    _cache.clear()
    return min(rows, key=lambda r: r.id)


def token_state(row: Any, now: datetime | None = None) -> str:
    now = now or utcnow()
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


# ---------------------------------------------------------------- per-process memory


class _TokenCache:
    """sha256(Authorization header) → (principal, until) for a few seconds, so a busy IdP's
    requests do not each pay a database round trip. Only accepted credentials are cached; a
    revocation takes effect at once in the process that made it and within `ttl` seconds
    everywhere else, and no entry outlives its credential's expiry."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        principal = entry[0]
        if principal.expires is not None and principal.expires <= time.time():
            return None
        return principal

    def put(self, key: str, principal: Principal, ttl: float) -> None:
        with self._lock:
            if len(self._entries) >= 1024:
                self._entries.clear()
            self._entries[key] = (principal, time.monotonic() + ttl)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class _LastUse:
    """When this process last wrote each token's `last_used_at`: at most once a minute, so
    a busy token costs one small write a minute per process, not one per request."""

    def __init__(self) -> None:
        self._written: dict[int, float] = {}
        self._lock = threading.Lock()

    def due(self, token_id: int) -> bool:
        now = time.monotonic()
        # Read without the lock first: nearly every request stops here.
        if now - self._written.get(token_id, -LAST_USE_EVERY_SECONDS) < LAST_USE_EVERY_SECONDS:
            return False
        with self._lock:
            if now - self._written.get(token_id, -LAST_USE_EVERY_SECONDS) < LAST_USE_EVERY_SECONDS:
                return False
            if len(self._written) >= 4096:
                self._written.clear()
            self._written[token_id] = now
            return True

    def clear(self) -> None:
        with self._lock:
            self._written.clear()


class _LockedAddresses:
    """Addresses this process saw locked, and until when: a locked address's requests are
    answered without a database read."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, address: str) -> int:
        until = self._until.get(address)
        if until is None:
            return 0
        left = until - time.monotonic()
        if left <= 0:
            with self._lock:
                self._until.pop(address, None)
            return 0
        return int(left) + 1

    def put(self, address: str, seconds: int) -> None:
        with self._lock:
            if len(self._until) >= 4096:
                self._until.clear()
            self._until[address] = time.monotonic() + seconds

    def clear(self) -> None:
        with self._lock:
            self._until.clear()


_cache = _TokenCache()
_last_use = _LastUse()
_locked = _LockedAddresses()


def reset_memory() -> None:
    """Forget what this process remembers (tests; after a restore of the database)."""
    _cache.clear()
    _last_use.clear()
    _locked.clear()


# ---------------------------------------------------------------- authentication


@dataclass(frozen=True)
class _Presented:
    mode: str  # bearer | header | basic
    secret: str
    user: str | None = None


def _parse(header: str | None) -> _Presented:
    if not header or not header.strip():
        raise NoCredentials("A valid bearer token is required.")
    scheme, space, rest = header.strip().partition(" ")
    rest = rest.strip()
    if not space:
        # RFC 7235 makes the scheme mandatory; Okta's header mode sends the bare token.
        return _Presented("header", scheme)
    kind = scheme.lower()
    if kind == "bearer" and rest:
        return _Presented("bearer", rest)
    if kind == "basic" and rest:
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, non-ASCII text
            raise BadCredentials("The Basic credentials are malformed.", "Basic") from None
        user, colon, password = decoded.partition(":")  # RFC 7617 §2: no colon in the user
        if not colon or not user or not password:
            raise BadCredentials("The Basic credentials are malformed.", "Basic")
        return _Presented("basic", password, user)
    raise BadCredentials("The Authorization scheme is not supported.")


def _looks_like_jwt(secret: str) -> bool:
    return secret.startswith("eyJ") and secret.count(".") == 2


def authenticate(
    header: str | None,
    cache_seconds: float = 0,
    *,
    address: str = "unknown",
    brake: Brake | None = None,
    jwt_verifier: JwtVerifier | None = None,
) -> Principal:
    """The caller of this request, or an AuthError; Locked when `address` failed too often
    (checked before any secret is)."""
    if not header:
        raise NoCredentials("A valid bearer token is required.")
    # A lock this process has seen holds even for a credential it has cached; one another
    # process set is found at the next database read (within `cache_seconds`, as a revocation).
    if brake is not None and (wait := _locked.wait(address)):
        raise Locked(wait)
    key = hashlib.sha256(header.encode("utf-8", "surrogatepass")).hexdigest()
    if cache_seconds > 0 and (cached := _cache.get(key)) is not None:
        _touch(cached)
        return cached
    presented = _parse(header)
    throttle_key = throttle.address_key(THROTTLE_NAMESPACE, address)
    try:
        principal = _check(presented, throttle_key if brake else None, jwt_verifier)
    except BadCredentials:
        if brake is not None:
            _count_failure(throttle_key, address, brake)
        raise
    except Locked as locked:
        _locked.put(address, locked.retry_after)
        raise
    if cache_seconds > 0:
        _cache.put(key, principal, cache_seconds)
    _touch(principal)
    return principal


def _count_failure(throttle_key: str, address: str, brake: Brake) -> None:
    now = utcnow()
    with begin(write=True) as conn:
        throttle.count(conn, [(throttle_key, brake.failures)], brake.window, now)
        wait = throttle.retry_after(conn, [throttle_key], now)
    if wait:
        _locked.put(address, wait)
        raise Locked(wait)


# A credential is checked with one statement: the address's lock (NULL when `key` is NULL:
# no brake) as a one-row table, outer-joined to the credential's row when there is one.
_LOCK = select(
    select(LoginThrottle.locked_until)
    .where(LoginThrottle.key == bindparam("key"))
    .scalar_subquery()
    .label("locked_until")
).subquery("address_lock")
_STATIC_TOKEN = select(
    _LOCK.c.locked_until,
    ApiToken.id,
    ApiToken.name,
    ApiToken.read_only,
    ApiToken.token_hash,
    ApiToken.scheme,
    ApiToken.header_auth,
    ApiToken.basic_user,
    ApiToken.expires_at,
    ApiToken.revoked_at,
).select_from(_LOCK.outerjoin(ApiToken, ApiToken.token_hash == bindparam("digest")))
_ACCESS_TOKEN = select(
    _LOCK.c.locked_until,
    OAuthAccessToken.token_hash,
    OAuthAccessToken.read_only,
    OAuthAccessToken.expires_at,
    OAuthClient.name,
    OAuthClient.revoked_at,
).select_from(
    _LOCK.outerjoin(OAuthAccessToken, OAuthAccessToken.token_hash == bindparam("digest")).outerjoin(
        OAuthClient, OAuthClient.id == OAuthAccessToken.client_id
    )
)
_ADDRESS_LOCK = select(_LOCK.c.locked_until)


def _lookup(statement: Any, digest: str, throttle_key: str | None) -> TableRow:
    """The credential's row (its columns None when there is none), after Locked if the
    address is locked."""
    with begin(write=False) as conn:
        row = conn.execute(statement, {"key": throttle_key, "digest": digest}).one()
    _check_lock(row[0])
    return row


def _check(
    presented: _Presented, throttle_key: str | None, jwt_verifier: JwtVerifier | None
) -> Principal:
    secret = presented.secret
    if presented.mode == "bearer" and _looks_like_jwt(secret):
        if jwt_verifier is None:
            raise BadCredentials("The access token is not valid.")
        if throttle_key is not None:
            with begin(write=False) as conn:
                _check_lock(conn.execute(_ADDRESS_LOCK, {"key": throttle_key}).scalar())
        # A JWT's signature is checked outside any transaction: it may fetch keys.
        return jwt_verifier.verify(secret)
    digest = hash_token(secret)
    if presented.mode == "bearer" and secret.startswith(ACCESS_TOKEN_PREFIX):
        return _access_token(digest, throttle_key)
    row = _lookup(_STATIC_TOKEN, digest, throttle_key)
    challenge = "Basic" if presented.mode == "basic" else "Bearer"
    # The lookup is by digest; compare again in constant time so no timing leaks from the index.
    if row[4] is None or not hmac.compare_digest(row[4], digest):
        raise BadCredentials("The credentials are not valid.", challenge)
    _, token_id, name, read_only, _, scheme, header_auth, basic_user, expires_at, revoked = row
    if presented.mode == "basic":
        user = (presented.user or "").encode("utf-8", "surrogatepass")
        if scheme != "basic" or not hmac.compare_digest((basic_user or "").encode(), user):
            raise BadCredentials("The credentials are not valid.", challenge)
    elif scheme != "bearer":
        raise WrongScheme("This credential is sent with HTTP Basic only.", "Basic")
    elif presented.mode == "header" and not header_auth:
        raise WrongScheme("This token is not enabled for header authentication: send Bearer.")
    if revoked is not None:
        raise Revoked("The token has been revoked.", challenge)
    if expires_at is not None and expires_at <= utcnow():
        raise Expired("The token has expired.", challenge)
    return Principal(
        token_id, name, bool(read_only), "token", _epoch(expires_at) if expires_at else None
    )


def _access_token(digest: str, throttle_key: str | None) -> Principal:
    row = _lookup(_ACCESS_TOKEN, digest, throttle_key)
    _, stored, read_only, expires_at, name, revoked = row
    if stored is None or not hmac.compare_digest(stored, digest):
        raise BadCredentials("The access token is not valid.")
    if revoked is not None:
        raise Revoked("The access token's client has been revoked.")
    if expires_at <= utcnow():
        raise Expired("The access token has expired.")
    return Principal(None, name, bool(read_only), "oauth", _epoch(expires_at))


def _check_lock(locked_until: datetime | None) -> None:
    """Locked while the address's lock is ahead."""
    if locked_until is not None and (wait := throttle.wait_for([locked_until], utcnow())):
        raise Locked(wait)


def _epoch(naive_utc: datetime) -> float:
    from datetime import UTC

    return naive_utc.replace(tzinfo=UTC).timestamp()


_LAST_USED = (
    update(ApiToken)
    .where(ApiToken.id == bindparam("token_id"))
    .values(last_used_at=bindparam("used_at"))
)


def _touch(principal: Principal) -> None:
    """Record the token's last use, at most once a minute per process."""
    if principal.kind != "token" or principal.token_id is None:
        return
    if not _last_use.due(principal.token_id):
        return
    with begin(write=True) as conn:
        conn.execute(_LAST_USED, {"token_id": principal.token_id, "used_at": utcnow()})
