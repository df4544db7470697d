"""What the user portal does, apart from HTTP: sign-in with the directory's password, a new
password in place of a temporary one, and the account's Microsoft 365 state.

A right password for an account bound in M365 queues a check through the outbox: the sync
worker compares M365's lastPasswordChangeDateTime with the one it recorded when it last set
the directory's password, and sets it again if they differ (the first sign-in after a
takeover, or after someone changed the password in M365). The portal never calls Graph
itself, so it answers at once whatever Graph's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy import Connection, and_, bindparam, select

from models import EventKind, LinkState, M365Link, PasswordState, User, utcnow
from scim_server import directory, outbox, passwords, sealing, throttle
from scim_server.db import begin
from scim_server.errors import InvalidValue

_hasher = PasswordHasher()
# Verified when the user name is unknown, so that the answer takes as long as for a known one.
_DUMMY_HASH = _hasher.hash("not a password: evens out the time of a failed sign-in")


@dataclass(frozen=True)
class Status:
    """The account as the portal shows it."""

    user_name: str
    display_name: str | None
    sync_state: str | None  # m365_links.state; None: the sync has not seen the user yet
    object_id: str | None
    password_state: str | None
    password_synced_at: datetime | None
    last_error: str | None
    check_queued: bool = False  # this sign-in asked the worker to confirm M365's password


@dataclass(frozen=True)
class SignedIn:
    status: Status


@dataclass(frozen=True)
class MustChange:
    """The password is a temporary one: a new one first."""

    user_name: str


@dataclass(frozen=True)
class Refused:
    """Wrong user name or password (401); retry_after > 0 once that locked the key."""

    retry_after: int = 0


@dataclass(frozen=True)
class Locked:
    """Too many failures (429): nothing is checked until retry_after seconds have passed."""

    retry_after: int


@dataclass(frozen=True)
class Disabled:
    """A right password for a deactivated account (403)."""


Outcome = SignedIn | MustChange | Refused | Locked | Disabled


def _limits() -> throttle.Limits:
    config = current_app.config
    return throttle.Limits(
        config["PORTAL_USER_FAILURES"],
        config["PORTAL_ADDRESS_FAILURES"],
        timedelta(seconds=config["PORTAL_LOCKOUT_SECONDS"]),
    )


def _verify(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def _authenticate(
    user_name: str, password: str, address: str
) -> tuple[Any, dict[str, Any] | None, Outcome | None]:
    """The user's row and its M365 link if the password is right; else the outcome to
    answer with."""
    keys = throttle.Keys.of(user_name, address)
    with begin(write=False) as conn:
        wait = throttle.retry_after(conn, keys, utcnow())
        row, link = (None, None) if wait else _user_row(conn, user_name)
    if wait:
        return None, None, Locked(wait)
    # argon2 takes tens of milliseconds: outside any transaction, so no lock is held.
    if not _verify(row.password_hash if row is not None else None, password):
        with begin(write=True) as conn:
            throttle.failed(conn, keys, _limits(), utcnow())
            wait = throttle.retry_after(conn, keys, utcnow())
        return None, None, Refused(wait)
    assert row is not None
    with begin(write=True) as conn:
        throttle.succeeded(conn, keys)
    if row.active is False:
        return None, None, Disabled()
    return row, link, None


@dataclass(frozen=True)
class _UserRow:
    id: str
    user_name: str
    display_name: str | None
    password_hash: str | None
    password_temporary: bool
    active: bool | None


_LINK_COLUMNS = (
    M365Link.state,
    M365Link.object_id,
    M365Link.password_state,
    M365Link.password_synced_at,
    M365Link.last_error,
)
_LINK_KEYS = tuple(c.key for c in _LINK_COLUMNS)
_OF_USER = and_(M365Link.resource_type == "User", M365Link.resource_id == User.id)
# The user and its link, if any, in one read.
_USER_BY_NAME = (
    select(
        User.id,
        User.user_name,
        User.display_name,
        User.password_hash,
        User.password_temporary,
        User.active,
        M365Link.resource_id,
        *_LINK_COLUMNS,
    )
    .outerjoin(M365Link, _OF_USER)
    .where(User.user_name_ci == bindparam("name"))
)


def _user_row(conn: Connection, user_name: str) -> tuple[_UserRow | None, dict[str, Any] | None]:
    if "\x00" in user_name:
        # No userName holds NUL (SCIM refuses it), and PostgreSQL would refuse the query.
        return None, None
    found = conn.execute(_USER_BY_NAME, {"name": user_name.strip().lower()}).first()
    if found is None:
        return None, None
    uid, name, display, stored, temporary, active, linked, *link = found
    row = _UserRow(uid, name, display, stored, bool(temporary), active)
    return row, (dict(zip(_LINK_KEYS, link, strict=True)) if linked is not None else None)


def sign_in(user_name: str, password: str, address: str) -> Outcome:
    row, link, outcome = _authenticate(user_name, password, address)
    if outcome is not None:
        return outcome
    if row.password_temporary:
        return MustChange(row.user_name)
    queued = False
    if _wants_check(link):
        sealed = sealing.seal(current_app.instance_path, password)
        with begin(write=True) as conn:
            # Decided again beside the event, in its transaction: an unbind or a new password
            # since the read above must not leave a check queued for a state that has gone.
            link = _link(conn, row.id, lock=True)
            queued = _wants_check(link)
            if queued:
                outbox.record(
                    conn, "User", row.id, EventKind.PASSWORD, {"sealed": sealed, "check": True}
                )
    return SignedIn(_status(row, link, queued))


def _wants_check(link: dict[str, Any] | None) -> bool:
    """Whether a right password should be checked against M365's: the account is bound, and
    no password is on its way there already (nor does M365 keep it: federated)."""
    return (
        _bound(link)
        and link is not None
        and link["password_state"] not in (PasswordState.FEDERATED, PasswordState.PENDING)
    )


def change_password(user_name: str, current: str, new: str, confirm: str, address: str) -> Outcome:
    """Replace the password (a temporary one, or any): the current one proves who it is.
    InvalidValue for a new password to correct."""
    if new != confirm:
        raise InvalidValue("The two new passwords differ.")
    passwords.check(new)
    if new == current:
        raise InvalidValue("The new password must differ from the current one.")
    row, _, outcome = _authenticate(user_name, current, address)
    if outcome is not None:
        return outcome
    stored = row.password_hash

    def unchanged(columns: dict[str, Any]) -> None:
        if columns["password_hash"] != stored:  # changed since it was verified: start over
            raise InvalidValue("The password changed meanwhile; sign in again.")

    directory.set_password(row.id, new, force_change=False, unless=unchanged)
    with begin(write=False) as conn:
        link = _link(conn, row.id)
    return SignedIn(_status(row, link, False))


_LINK = select(*_LINK_COLUMNS).where(
    M365Link.resource_type == "User", M365Link.resource_id == bindparam("user_id")
)
# SQLite's dialect leaves FOR UPDATE out: a writing transaction holds the whole database.
_LOCKED_LINK = _LINK.with_for_update()


def _link(conn: Connection, user_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    """`lock`: hold the row until the transaction ends."""
    found = conn.execute(_LOCKED_LINK if lock else _LINK, {"user_id": user_id}).first()
    return dict(zip(_LINK_KEYS, found, strict=True)) if found is not None else None


def _bound(link: dict[str, Any] | None) -> bool:
    return link is not None and bool(link["object_id"]) and link["state"] != LinkState.UNBOUND


def _status(row: _UserRow, link: dict[str, Any] | None, queued: bool) -> Status:
    link = link or {}
    return Status(
        row.user_name,
        row.display_name,
        link.get("state"),
        link.get("object_id"),
        link.get("password_state"),
        link.get("password_synced_at"),
        link.get("last_error"),
        queued,
    )
