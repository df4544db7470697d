"""SQLAlchemy models of the directory. This package never imports scim_server."""

from models.base import Base, utcnow
from models.directory import Group, GroupMember, User, UserValue
from models.outbox import OutboxEvent
from models.sync import M365Link
from models.tokens import ApiToken

__all__ = [
    "ApiToken",
    "Base",
    "Group",
    "GroupMember",
    "M365Link",
    "OutboxEvent",
    "User",
    "UserValue",
    "utcnow",
]
