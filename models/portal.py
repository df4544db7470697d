"""The user portal's state: activation links and the brakes on password guessing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow


class ActivationToken(Base):
    """A single-use link that lets a user set their first password. Only the token's SHA-256
    is kept: it has 256 bits of entropy, so a slow hash would add nothing."""

    __tablename__ = "activation_tokens"
    __table_args__ = (Index("ix_activation_tokens_user_id", "user_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    # Set when the link is used, or replaced by a newer one: either way it is spent.
    spent_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Set once the mail transport accepted the message with the link. A link without it is
    # on its way, or its process died before or while sending: `send-activation
    # --all-without-password` skips the first and, past a few minutes, sends a new link.
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)


class LoginThrottle(Base):
    """Failed sign-ins (the portal's, and the SCIM API's and token endpoint's failed
    authentications) of one user name or one client address (`key`), counted over a window;
    past the limit the key is locked until `locked_until`."""

    __tablename__ = "login_throttle"
    # Expired rows are pruned through it (throttle.prune), not by a scan of the table.
    __table_args__ = (Index("ix_login_throttle_window_started_at", "window_started_at"),)

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime)
