"""The state machines of the sync, as types: an outbox event's status, and a Microsoft 365
link's state and password state. Each is a `str` enum, so the values stored (and compared
in SQL) are the strings they always were; the schema holds CHECK constraints on them
(revision 0009). Only `scim_server.outbox` moves a row from one state to the next."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnClause, ColumnElement, column, or_


class EventStatus(StrEnum):
    """outbox.status. pending → done (delivered), pending → dead (given up on); a dead
    letter → pending (`sync retry`) or deleted (`sync discard`); done → deleted (prune)."""

    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


class EventKind(StrEnum):
    """outbox.event: what happened to the resource."""

    CREATED = "created"  # users and groups
    REPLACED = "replaced"  # users and groups (a group's carries its member changes)
    PATCHED = "patched"  # users and groups (a group's carries its member changes)
    PASSWORD_SET = "password_set"  # users: a password set outside SCIM (CLI, portal)
    PASSWORD = "password"  # users: a sealed password (or a check) on its way to M365
    DELETED = "deleted"  # users and groups
    BOUND = "bound"  # users: `m365 import --bind` took an existing account over
    UNBIND = "unbind"  # users: `m365 unbind` releases the account
    DRIFT = "drift"  # users and groups: M365 drifted from the directory; repair it
    DRIFT_RESTORE = "drift_restore"  # users: a deleted account to restore (drift repair)


class LinkState(StrEnum):
    """m365_links.state: where a directory user or group stands in Microsoft 365."""

    PENDING = "pending"  # not delivered yet (or bound by an import, its takeover queued)
    CREATING = "creating"  # created (or bound) in M365; what follows the create not landed
    SYNCED = "synced"
    OUT_OF_SCOPE = "out_of_scope"  # not in M365_SYNC_DOMAINS: no account
    CONFLICT = "conflict"  # the UPN exists in M365 and M365_ON_CONFLICT=fail
    ERROR = "error"  # its change became a dead letter
    UNBOUND = "unbound"  # released by `m365 unbind`


class PasswordState(StrEnum):
    """m365_links.password_state (users): whether the account's password is the
    directory's."""

    PENDING = "pending"  # one is on its way to M365
    SYNCED = "synced"
    TEMPORARY = "temporary"  # the directory's, and M365 asks for a new one at sign-in
    UNKNOWN = "unknown"  # the directory has one; the next portal sign-in sends it
    NONE = "none"  # the directory has none yet (an activation email gives one)
    FEDERATED = "federated"  # the federation's identity provider owns it
    ERROR = "error"  # could not be delivered
    DRIFTED = "drifted"  # changed in M365; the user's next portal sign-in sets it again


def check(name: str, states: type[StrEnum], *, nullable: bool = False) -> ColumnElement[bool]:
    """A CHECK constraint's condition: column `name` holds one of `states` (or NULL)."""
    field: ColumnClause[Any] = column(name)
    allowed = field.in_([s.value for s in states])
    return or_(field.is_(None), allowed) if nullable else allowed
