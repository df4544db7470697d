"""Activation links: a user without a password sets their first one through the portal.

A link (`{SCIM_PUBLIC_URL}/portal/activate/<token>`) works once and expires. Only the token's
SHA-256 is stored; a newer link spends the older ones, so only the last email sent works.
Opening the link changes nothing (mail scanners fetch links); setting the password spends
it, in the same transaction as the password change.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app

from models import utcnow
from scim_server import directory, mail, passwords
from scim_server.auth import hash_token
from scim_server.db import Tx, transaction
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


def _user(tx: Tx, ident: str) -> tuple[str, str, str | None, str | None, str | None] | None:
    """(id, userName, password hash, alternate email, displayName) by id or userName."""
    row = tx.first(
        "SELECT id, user_name, password_hash, alternate_email, display_name FROM users"
        " WHERE id = ? OR user_name_ci = ?",
        (ident, ident.lower()),
    )
    return tuple(row) if row is not None else None


def send(ident: str, to: str | None, settings: mail.SmtpSettings) -> Sent:
    """Email USER a new activation link at `to`, or at their alternateEmail."""
    with transaction(write=False) as tx:
        user = _user(tx, ident)
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
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    expires = now + timedelta(hours=current_app.config["ACTIVATION_TTL_HOURS"])
    with transaction(write=True) as tx:
        # Only the newest link works: resending spends the ones sent before.
        tx.execute(
            "UPDATE activation_tokens SET spent_at = ? WHERE user_id = ? AND spent_at IS NULL",
            (tx.timestamp(now), user_id),
        )
        tx.execute(
            "INSERT INTO activation_tokens (token_hash, user_id, created_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (hash_token(token), user_id, tx.timestamp(now), tx.timestamp(expires)),
        )
    link = f"{current_app.config['SCIM_PUBLIC_URL']}/portal/activate/{token}"
    message = mail.message(
        settings.sender,
        recipient,
        "Activate your account",
        _body(display or user_name, user_name, link, expires),
    )
    try:
        mail.send(settings, message)
    except mail.MailError:
        with transaction(write=True) as tx:  # never delivered: it must not work either
            tx.execute(
                "UPDATE activation_tokens SET spent_at = ? WHERE token_hash = ?",
                (tx.timestamp(utcnow()), hash_token(token)),
            )
        raise
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


def holder(token: str) -> str:
    """The userName a valid link is for; LinkInvalid otherwise. Changes nothing."""
    with transaction(write=False) as tx:
        row = tx.first(
            "SELECT u.user_name FROM activation_tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.token_hash = ? AND t.spent_at IS NULL AND t.expires_at > ?",
            (hash_token(token), tx.timestamp(utcnow())),
        )
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
    with transaction(write=False) as tx:
        row = tx.first(
            "SELECT user_id FROM activation_tokens"
            " WHERE token_hash = ? AND spent_at IS NULL AND expires_at > ?",
            (digest, tx.timestamp(utcnow())),
        )
    if row is None:
        raise LinkInvalid(_SPENT)
    user_id = str(row[0])

    def spend(tx: Tx) -> None:
        spent = tx.execute(
            "UPDATE activation_tokens SET spent_at = ?"
            " WHERE token_hash = ? AND spent_at IS NULL AND expires_at > ?",
            (tx.timestamp(utcnow()), digest, tx.timestamp(utcnow())),
        )
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
