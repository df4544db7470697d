"""Bearer tokens: only a SHA-256 of each is stored, and it is compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from models import ApiToken, utcnow
from scim_server.db import db

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


def authenticate(header: str | None) -> Principal | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    digest = hash_token(token)
    row = db.session.execute(
        select(ApiToken.id, ApiToken.name, ApiToken.read_only, ApiToken.token_hash).where(
            ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None)
        )
    ).first()
    # End the read at once: a write request then opens its own transaction, so on SQLite the
    # write lock is not held while the request body is parsed.
    db.session.rollback()
    # The lookup is by digest; compare again in constant time so no timing leaks from the index.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Principal(row.id, row.name, row.read_only)


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
    return rows[0]
