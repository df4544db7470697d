"""Bearer tokens: only a SHA-256 of each is stored, and it is compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from models import ApiToken, utcnow
from scim_server.db import db, transaction

TOKEN_PREFIX = "scim_"


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    read_only: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(name: str, *, read_only: bool = False) -> tuple[ApiToken, str]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token), prefix=token[:12], read_only=read_only)
    db.session.add(row)
    db.session.commit()
    return row, token


class _TokenCache:
    """Digest → (principal, expiry) for a few seconds, so a busy IdP's requests do not each
    pay a database round trip. Only valid tokens are cached; a revocation takes effect at
    once in the process that made it and within `ttl` seconds everywhere else."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, digest: str, principal: Principal, ttl: float) -> None:
        with self._lock:
            if len(self._entries) >= 1024:
                self._entries.clear()
            self._entries[digest] = (principal, time.monotonic() + ttl)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = _TokenCache()


def authenticate(header: str | None, cache_seconds: float = 0) -> Principal | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    digest = hash_token(token)
    if cache_seconds > 0 and (cached := _cache.get(digest)) is not None:
        return cached
    # A read of its own (hand-written SQL, see db.transaction): it never takes the write
    # lock, and ends before the request body is parsed.
    with transaction(write=False) as tx:
        row = tx.first(
            "SELECT id, name, read_only, token_hash FROM api_tokens"
            " WHERE token_hash = ? AND revoked_at IS NULL",
            (digest,),
        )
    # The lookup is by digest; compare again in constant time so no timing leaks from the index.
    if row is None or not hmac.compare_digest(row[3], digest):
        return None
    principal = Principal(row[0], row[1], bool(row[2]))
    if cache_seconds > 0:
        _cache.put(digest, principal, cache_seconds)
    return principal


def list_tokens() -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).order_by(ApiToken.id)))


def revoke_token(ident: str) -> ApiToken | None:
    """Revoke by numeric id or by name; returns None when nothing matched."""
    query = select(ApiToken).where(ApiToken.revoked_at.is_(None))
    query = (
        query.where(ApiToken.id == int(ident))
        if ident.isdigit()
        else query.where(ApiToken.name == ident)
    )
    rows = list(db.session.scalars(query))
    if not rows:
        return None
    for row in rows:
        row.revoked_at = utcnow()
    db.session.commit()
    _cache.clear()
    return rows[0]
