"""SQLAlchemy models of the directory. This package never imports scim_server."""

from models.base import Base, utcnow
from models.directory import Group, GroupMember, User, UserValue
from models.drift import DriftCount, DriftState
from models.outbox import OutboxEvent
from models.portal import ActivationToken, LoginThrottle
from models.states import EventKind, EventStatus, LinkState, PasswordState
from models.sync import M365Link, SyncBudget, SyncWorker
from models.tokens import ApiToken, OAuthAccessToken, OAuthClient

__all__ = [
    "ActivationToken",
    "ApiToken",
    "Base",
    "DriftCount",
    "DriftState",
    "EventKind",
    "EventStatus",
    "Group",
    "GroupMember",
    "LinkState",
    "LoginThrottle",
    "M365Link",
    "OAuthAccessToken",
    "OAuthClient",
    "OutboxEvent",
    "PasswordState",
    "SyncBudget",
    "SyncWorker",
    "User",
    "UserValue",
    "utcnow",
]
