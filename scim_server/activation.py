"""Activation links: a user without a password sets their first one through the portal.

A link (`{SCIM_PUBLIC_URL}/portal/activate/<token>`) works once and expires. Only the token's
SHA-256 is stored; a newer link spends the older ones, so only the last email sent works.
Opening the link changes nothing (mail scanners fetch links); setting the password spends
it, in the same transaction as the password change.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from flask import current_app
from sqlalchemy import Connection, and_, bindparam, case, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from models import ActivationToken, M365Link, User, utcnow
from scim_server import directory, mail, passwords
from scim_server.auth import hash_token
from scim_server.db import begin
from scim_server.errors import InvalidValue

TOKEN_BYTES = 32


class ActivationError(Exception):
    """Why a link cannot be sent or used; the message is for the person at the screen."""


class LinkInvalid(ActivationError):
    pass


@dataclass(frozen=True)
class Sent:
    to: str
    expires_at: datetime


_USER = select(
    User.id, User.user_name, User.password_hash, User.alternate_email, User.display_name
).where((User.id == bindparam("ident")) | (User.user_name_ci == bindparam("name")))


def _user(
    conn: Connection, ident: str
) -> tuple[str, str, str | None, str | None, str | None] | None:
    """(id, userName, password hash, alternate email, displayName) by id or userName."""
    row = conn.execute(_USER, {"ident": ident, "name": ident.lower()}).first()
    if row is None:
        return None
    uid, user_name, password_hash, alternate, display = row
    return uid, user_name, password_hash, alternate, display


def send(ident: str, to: str | None, transport: mail.Transport) -> Sent:
    """Email USER a new activation link at `to`, or at their alternateEmail."""
    with begin(write=False) as conn:
        user = _user(conn, ident)
    if user is None:
        raise ActivationError(f"No user {ident!r}.")
    user_id, user_name, password_hash, alternate, display = user
    if password_hash is not None:
        raise ActivationError(
            f"{user_name} already has a password; `scim-server users set-temp-password` "
            "gives them a temporary one."
        )
    recipient = (to or alternate or "").strip()
    if not recipient:
        raise ActivationError(
            f"{user_name} has no alternateEmail (the M365 extension's attribute); "
            "give one, or --to EMAIL."
        )
    issued = _issue(user_id, resend=True)
    assert issued is not None  # resend: never refused for a live link
    return _deliver(issued, user_name, display, recipient, transport)


@dataclass(frozen=True)
class _Issued:
    token: str
    expires_at: datetime


# A link made this recently and not yet marked sent is taken to be on its way (its mail may
# wait up to GRAPH_MAIL_ATTEMPTS Retry-Afters); an older one, to have died with its process.
IN_FLIGHT = timedelta(minutes=10)


def _link_state(user_id: ColumnElement[str]) -> ColumnElement[Any]:
    """2 when the user has a working link that was sent, 1 when one is on its way (made
    since `in_flight_since`), 0 for one whose process died before it was sent, NULL for
    none: see _LINK_SKIPS."""
    return (
        select(
            func.max(
                case(
                    (ActivationToken.sent_at.is_not(None), 2),
                    (ActivationToken.created_at > bindparam("in_flight_since"), 1),
                    else_=0,
                )
            )
        )
        .where(
            ActivationToken.user_id == user_id,
            ActivationToken.spent_at.is_(None),
            ActivationToken.expires_at > bindparam("now"),
        )
        .scalar_subquery()
    )


# On PostgreSQL, the user's row lock makes two runs take turns; SQLite's dialect leaves FOR
# UPDATE out: a writer holds the whole database already.
_LOCK_USER = select(User.id).where(User.id == bindparam("user")).with_for_update()
_LIVE_LINK = select(_link_state(bindparam("user")))
# Only the newest link works: resending spends the ones sent before.
_SPEND_EARLIER = (
    update(ActivationToken)
    .where(ActivationToken.user_id == bindparam("user"), ActivationToken.spent_at.is_(None))
    .values(spent_at=bindparam("now"))
)
_ADD_LINK = insert(ActivationToken)


def _issue(user_id: str, *, resend: bool) -> _Issued | None:
    """A new link for the user, in one write transaction that also spends the earlier ones;
    None, and nothing written, when `resend` is false and a link still works and was sent,
    or is being sent (another run may be sending it: the check and the insert are one
    transaction, under the user's row lock on PostgreSQL and SQLite's write lock)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    expires = now + timedelta(hours=current_app.config["ACTIVATION_TTL_HOURS"])
    with begin(write=True) as conn:
        conn.execute(_LOCK_USER, {"user": user_id})
        if not resend and _live_link(conn, user_id, now) is not None:
            return None
        conn.execute(_SPEND_EARLIER, {"user": user_id, "now": now})
        conn.execute(
            _ADD_LINK,
            {
                "token_hash": hash_token(token),
                "user_id": user_id,
                "created_at": now,
                "expires_at": expires,
            },
        )
    return _Issued(token, expires)


def _live_link(conn: Connection, user_id: str, now: datetime) -> Skip | None:
    """ALREADY_SENT for a working link that was sent, SENDING for one on its way, else None
    (none, or one whose process died before it was sent: a new one should go)."""
    found = conn.execute(
        _LIVE_LINK, {"user": user_id, "in_flight_since": now - IN_FLIGHT, "now": now}
    ).scalar()
    return _LINK_SKIPS.get(int(found)) if found is not None else None


_SPEND_LINK = (
    update(ActivationToken)
    .where(ActivationToken.token_hash == bindparam("digest"))
    .values(spent_at=bindparam("now"))
)
_LINK_SENT = (
    update(ActivationToken)
    .where(ActivationToken.token_hash == bindparam("digest"))
    .values(sent_at=bindparam("now"))
)


def _deliver(
    issued: _Issued,
    user_name: str,
    display: str | None,
    recipient: str,
    transport: mail.Transport,
) -> Sent:
    token, expires = issued.token, issued.expires_at
    link = f"{current_app.config['SCIM_PUBLIC_URL']}/portal/activate/{token}"
    message = mail.Mail(
        recipient,
        "Activate your account",
        _body(display or user_name, user_name, link, expires),
    )
    try:
        transport.send(message)
    except mail.MailError:
        with begin(write=True) as conn:  # never delivered: it must not work either
            conn.execute(_SPEND_LINK, {"digest": hash_token(token), "now": utcnow()})
        raise
    with begin(write=True) as conn:
        conn.execute(_LINK_SENT, {"digest": hash_token(token), "now": utcnow()})
    return Sent(recipient, expires)


def _body(name: str, user_name: str, link: str, expires: datetime) -> str:
    return (
        f"Hello {name},\n\n"
        f"An account, {user_name}, is waiting for you. Choose its password here:\n\n"
        f"  {link}\n\n"
        f"The link works once, until {expires:%Y-%m-%d %H:%M} UTC. The same password then\n"
        "signs you in to Microsoft 365.\n\n"
        "If you did not expect this email, you can ignore it.\n"
    )


_WORKS = and_(
    ActivationToken.token_hash == bindparam("digest"),
    ActivationToken.spent_at.is_(None),
    ActivationToken.expires_at > bindparam("now"),
)
_HOLDER = (
    select(User.user_name)
    .select_from(ActivationToken)
    .join(User, User.id == ActivationToken.user_id)
    .where(_WORKS)
)
_LINK_USER = select(ActivationToken.user_id).where(_WORKS)
# The link is spent once: the second of two redeems at once changes no row, and undoes its
# password change.
_SPEND_IF_WORKS = update(ActivationToken).where(_WORKS).values(spent_at=bindparam("spent_at_now"))


def holder(token: str) -> str:
    """The userName a valid link is for; LinkInvalid otherwise. Changes nothing."""
    with begin(write=False) as conn:
        row = conn.execute(_HOLDER, {"digest": hash_token(token), "now": utcnow()}).first()
    if row is None:
        raise LinkInvalid(_SPENT)
    return str(row[0])


_SPENT = (
    "This activation link has expired or has already been used. Ask your administrator "
    "for a new one."
)


def redeem(token: str, password: str, confirm: str) -> str:
    """Set the password the link's user chose; returns the user's id. InvalidValue for a
    password to correct (the link still works), LinkInvalid for a link that no longer does."""
    if password != confirm:
        raise InvalidValue("The two passwords differ.")
    passwords.check(password)
    digest = hash_token(token)
    with begin(write=False) as conn:
        row = conn.execute(_LINK_USER, {"digest": digest, "now": utcnow()}).first()
    if row is None:
        raise LinkInvalid(_SPENT)
    user_id = str(row[0])

    def spend(conn: Connection) -> None:
        now = utcnow()
        params = {"digest": digest, "now": now, "spent_at_now": now}
        spent = conn.execute(_SPEND_IF_WORKS, params).rowcount
        if spent != 1:  # used a moment ago, in another request: undo this one
            raise LinkInvalid(_SPENT)

    def no_password_yet(columns: dict[str, object]) -> None:
        if columns["password_hash"] is not None:
            raise LinkInvalid(
                "This account already has a password. Sign in, or ask your administrator."
            )

    directory.set_password(
        user_id, password, force_change=False, also=spend, unless=no_password_yet
    )
    return user_id


# ---------------------------------------------------------------------------- in bulk


class Skip(StrEnum):
    """Why `send-activation --all-without-password` leaves a user out, in the order checked."""

    INACTIVE = "inactive"
    NOT_PROVISIONED = "not provisioned"
    NOT_MANAGED = "not managed"
    FEDERATED = "federated"
    NO_ALTERNATE_EMAIL = "no alternateEmail"
    ALREADY_SENT = "already sent"
    SENDING = "being sent"


SKIP_HELP = {
    Skip.INACTIVE: "inactive (active is false)",
    Skip.NOT_PROVISIONED: "not provisioned yet (the sync worker has not seen them: run again)",
    Skip.NOT_MANAGED: "not managed (out of scope, a conflict, or released)",
    Skip.FEDERATED: "on a federated domain (its identity provider holds the password)",
    Skip.NO_ALTERNATE_EMAIL: "without alternateEmail",
    Skip.ALREADY_SENT: "already sent (a link still works; --resend sends new ones)",
    Skip.SENDING: "being sent (by another run, or one that stopped less than 10 minutes ago)",
}
# What _live_link's query answers: 2 a working link that was sent, 1 one on its way.
_LINK_SKIPS = {2: Skip.ALREADY_SENT, 1: Skip.SENDING}

# M365 link states in which the directory does not manage the account (models/sync.py).
UNMANAGED_STATES = ("out_of_scope", "conflict", "unbound")


@dataclass(frozen=True)
class Candidate:
    """A user without a password, and what the bulk send does about them."""

    user_id: str
    user_name: str
    display: str | None
    to: str | None
    skip: Skip | None
    detail: str = ""  # for a skip, e.g. the link state


@dataclass
class BulkReport:
    sent: list[tuple[str, str]] = field(default_factory=list)  # (userName, address)
    skipped: list[Candidate] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (userName, why)
    aborted: str | None = None  # the error that stopped the run
    not_attempted: int = 0  # left for the next run after an abort

    def counts(self) -> dict[Skip, int]:
        out: dict[Skip, int] = {}
        for c in self.skipped:
            assert c.skip is not None
            out[c.skip] = out.get(c.skip, 0) + 1
        return out


def _classify(row: Any) -> Candidate:
    user_id, user_name, alternate, display, active, state, password_state, link = row
    to = (alternate or "").strip() or None
    skip: Skip | None = None
    detail = ""
    if active is not None and not bool(active):
        skip = Skip.INACTIVE
    elif state is None:
        skip = Skip.NOT_PROVISIONED
    elif state in UNMANAGED_STATES:
        skip, detail = Skip.NOT_MANAGED, state
    elif password_state == "federated":
        skip = Skip.FEDERATED
    elif to is None:
        skip = Skip.NO_ALTERNATE_EMAIL
    elif link is not None and int(link) in _LINK_SKIPS:
        skip = _LINK_SKIPS[int(link)]
    return Candidate(str(user_id), str(user_name), display, to, skip, detail)


_CANDIDATES = (
    select(
        User.id,
        User.user_name,
        User.alternate_email,
        User.display_name,
        User.active,
        M365Link.state,
        M365Link.password_state,
        _link_state(User.__table__.c.id),  # as _live_link's, per user
    )
    .outerjoin(M365Link, and_(M365Link.resource_type == "User", M365Link.resource_id == User.id))
    .where(User.password_hash.is_(None))
    .order_by(User.user_name_ci)
)


def candidates(*, resend: bool) -> list[Candidate]:
    """Every user without a password, each with its skip reason or none, by userName.
    With `resend`, a link that still works is no reason to skip."""
    now = utcnow()
    with begin(write=False) as conn:
        rows = conn.execute(_CANDIDATES, {"in_flight_since": now - IN_FLIGHT, "now": now})
        found = [_classify(r) for r in rows]
    if resend:
        found = [
            Candidate(c.user_id, c.user_name, c.display, c.to, None)
            if c.skip in (Skip.ALREADY_SENT, Skip.SENDING)
            else c
            for c in found
        ]
    return found


def send_all(
    transport: mail.Transport,
    *,
    resend: bool,
    per_minute: int,
    on_result: Callable[[str, Candidate, str], None] = lambda *_: None,
    sleep: Callable[[float], None] = time.sleep,
) -> BulkReport:
    """Email every managed user without a password a link (see Skip for who is left out).

    Safe to run again: a user whose link still works is skipped unless `resend`, and the
    check and the new link are one transaction, so two runs at once send one link each.
    A recipient refused is that user's failure; any other MailError (the relay, the mailbox,
    throttling) stops the run, and the next one carries on where it stopped. At most
    `per_minute` messages a minute (0: unpaced). `on_result(kind, candidate, detail)` is
    told of each user as it goes: kind is sent, skip or failed."""
    report = BulkReport()
    todo = []
    for c in candidates(resend=resend):
        if c.skip is None:
            todo.append(c)
        else:
            report.skipped.append(c)
            on_result("skip", c, SKIP_HELP[c.skip])
    interval = 60.0 / per_minute if per_minute > 0 else 0.0
    last: float | None = None
    for index, c in enumerate(todo):
        assert c.to is not None
        if interval and last is not None:
            sleep(max(last + interval - time.monotonic(), 0.0))
        issued = _issue(c.user_id, resend=resend)
        if issued is None:  # another run sends one, or sent it a moment ago
            skipped = Candidate(c.user_id, c.user_name, c.display, c.to, Skip.SENDING)
            report.skipped.append(skipped)
            on_result("skip", skipped, SKIP_HELP[Skip.SENDING])
            continue
        last = time.monotonic()
        try:
            _deliver(issued, c.user_name, c.display, c.to, transport)
        except mail.RecipientRefused as exc:
            report.failed.append((c.user_name, str(exc)))
            on_result("failed", c, str(exc))
            continue
        except mail.MailError as exc:
            report.aborted = str(exc)
            report.failed.append((c.user_name, str(exc)))
            report.not_attempted = len(todo) - index - 1
            on_result("failed", c, str(exc))
            return report
        report.sent.append((c.user_name, c.to))
        on_result("sent", c, c.to)
    return report
