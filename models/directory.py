"""Users, groups and their multi-valued attributes, as indexed rows (not JSON blobs)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false

from models.base import Base, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # RFC 7643 §4.1.1: userName is caseExact=false and unique; the lower-cased copy carries
    # the unique index so `userName eq` is an index lookup whatever the case.
    user_name: Mapped[str] = mapped_column(String(255))
    user_name_ci: Mapped[str] = mapped_column(String(255), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(255), index=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    nick_name: Mapped[str | None] = mapped_column(String(255))
    profile_url: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(String(255))
    user_type: Mapped[str | None] = mapped_column(String(255))
    preferred_language: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str | None] = mapped_column(String(64))
    # None: never set by the client, so not returned (an unset `active` counts as enabled).
    active: Mapped[bool | None] = mapped_column(Boolean)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # A temporary password (set by an admin): the portal asks for a new one at sign-in.
    password_temporary: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    name_formatted: Mapped[str | None] = mapped_column(String(512))
    name_family: Mapped[str | None] = mapped_column(String(255))
    name_given: Mapped[str | None] = mapped_column(String(255))
    name_middle: Mapped[str | None] = mapped_column(String(255))
    name_prefix: Mapped[str | None] = mapped_column(String(64))
    name_suffix: Mapped[str | None] = mapped_column(String(64))

    # urn:ietf:params:scim:schemas:extension:enterprise:2.0:User
    employee_number: Mapped[str | None] = mapped_column(String(255))
    cost_center: Mapped[str | None] = mapped_column(String(255))
    organization: Mapped[str | None] = mapped_column(String(255))
    division: Mapped[str | None] = mapped_column(String(255))
    department: Mapped[str | None] = mapped_column(String(255))
    manager_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # The Microsoft 365 extension (urn:…:extension:m365:2.0:User).
    usage_location: Mapped[str | None] = mapped_column(String(2))
    alternate_email: Mapped[str | None] = mapped_column(String(255))

    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_modified: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


class UserValue(Base):
    """One value of a multi-valued User attribute (emails, phoneNumbers, ims, photos,
    addresses, entitlements, roles, x509Certificates)."""

    __tablename__ = "user_values"
    __table_args__ = (
        Index("ix_user_values_attr_value_ci", "attr", "value_ci"),
        Index("ix_user_values_user_id_attr", "user_id", "attr", "position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    attr: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[str | None] = mapped_column(Text)
    value_ci: Mapped[str | None] = mapped_column(String(512))
    type: Mapped[str | None] = mapped_column(String(64))
    # Tri-state: a client that sent `primary: false` gets `false` back, one that sent nothing
    # gets nothing.
    primary: Mapped[bool | None] = mapped_column(Boolean)
    display: Mapped[str | None] = mapped_column(String(255))
    # addresses only
    formatted: Mapped[str | None] = mapped_column(Text)
    street_address: Mapped[str | None] = mapped_column(String(512))
    locality: Mapped[str | None] = mapped_column(String(255))
    region: Mapped[str | None] = mapped_column(String(255))
    postal_code: Mapped[str | None] = mapped_column(String(64))
    country: Mapped[str | None] = mapped_column(String(64))


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255))
    # Okta and Entra treat a second group of the same name as a conflict (409 uniqueness).
    display_name_ci: Mapped[str] = mapped_column(String(255), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # The M365 extension: the security group's mailNickname (else derived from the name).
    mail_nickname: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_modified: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


class GroupMember(Base):
    """A membership row: adding one member is one INSERT, never a load of the group."""

    __tablename__ = "group_members"
    __table_args__ = (Index("ix_group_members_member_id", "member_id"),)

    group_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_type: Mapped[str] = mapped_column(String(8))  # "User" or "Group"
    # RFC 7643 §2.4: `display` is immutable, set by the client when it adds the member; when it
    # gave none, responses show the member's current name instead.
    display: Mapped[str | None] = mapped_column(String(255))
