"""Credentials of the SCIM API's clients: static tokens (bearer, header or HTTP Basic), OAuth
clients and the access tokens they are issued. Only SHA-256 digests of secrets are stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow


class ApiToken(Base):
    """A static credential. Only its SHA-256 is stored: the secret itself has 256 bits of
    entropy, so a slow hash adds nothing and would put argon2 on every request.

    `scheme` says how it is sent: `bearer` (`Authorization: Bearer SECRET`, and with
    `header_auth` also the bare `Authorization: SECRET` of Okta's header mode) or `basic`
    (`Authorization: Basic base64(basic_user:SECRET)`). A rotation makes a new row of the
    same name and gives the old one an `expires_at` at the end of the grace period."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("scheme IN ('bearer', 'basic')", name="scheme"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    scheme: Mapped[str] = mapped_column(String(8), default="bearer", server_default="bearer")
    header_auth: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    basic_user: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Written at most once a minute per process (auth.LastUse), never on every request.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)


class OAuthClient(Base):
    """A client of the OAuth 2.0 token endpoint (RFC 6749 §4.4): a public `client_id` and
    the SHA-256 of its secret."""

    __tablename__ = "oauth_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    # When it last got an access token.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)


class OAuthAccessToken(Base):
    """An access token the endpoint issued: opaque, stored as its SHA-256, short-lived.
    Revoking the client ends its tokens at once (they are looked up with it)."""

    __tablename__ = "oauth_access_tokens"
    __table_args__ = (Index("ix_oauth_access_tokens_expires_at", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("oauth_clients.id", ondelete="CASCADE"), index=True
    )
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
