"""Taking over existing Microsoft 365 accounts: `scim-server m365 import`.

Each active member account of the tenant is matched to the directory by UPN or primary email,
without regard to case, and then bound to the directory user it matches, or to a new
directory user made from it (username, email, first and last name only), or skipped with a
reason. A bound account is the directory's from then on: its next delivery sends the
directory's whole state (the takeover), and every later change follows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, or_, select

from models import LinkState, M365Link, OutboxEvent, PasswordState, User, UserValue
from scim_server import directory, outbox
from scim_server.sync import mapping, store

SELECT = ("id", "userPrincipalName", "mail", "givenName", "surname", "accountEnabled", "userType")


@dataclass(frozen=True)
class Decision:
    account: dict[str, Any]
    action: str  # bind | create | skip
    # The directory user bound to (bind); for a create, the one an interrupted import
    # linked the account to but did not create (resumed under the same id).
    user_id: str | None = None
    reason: str = ""

    def describe(self, bind: bool = True) -> str:
        upn = self.account.get("userPrincipalName", "?")
        if self.action == "bind":
            if not bind:
                return f"match   {upn} -> directory user {self.user_id} (--bind takes it over)"
            return f"bind    {upn} -> directory user {self.user_id}"
        if self.action == "create":
            return f"create  {upn} (a new directory user{', bound' if bind else ''})"
        return f"skip    {upn}: {self.reason}"


def plan(accounts: Iterable[dict[str, Any]], domains: tuple[str, ...]) -> list[Decision]:
    """What to do with each account; reads the directory (one reading transaction, which
    ends before the writes begin), changes nothing."""
    out = []
    claimed: dict[str, str] = {}  # directory user id -> the account planned for it
    with store.reading() as conn:
        for account in accounts:
            decision = _decide(conn, account, domains, claimed)
            if decision.action == "bind" and decision.user_id:
                claimed[decision.user_id] = str(account["id"])
            out.append(decision)
    return out


_BOUND_TO = select(M365Link.resource_id).where(M365Link.object_id == bindparam("object_id"))
_LINKED_OBJECT = select(M365Link.object_id).where(
    M365Link.resource_type == "User", M365Link.resource_id == bindparam("user_id")
)
_USER_EXISTS = select(User.id).where(User.id == bindparam("user_id"))
_ANY_EVENT = (
    select(OutboxEvent.id)
    .where(OutboxEvent.resource_type == "User", OutboxEvent.resource_id == bindparam("user_id"))
    .limit(1)
)
_BY_NAME = (
    select(User.id)
    .where(User.user_name_ci.in_(bindparam("names", expanding=True)))
    .order_by(User.id)
    .limit(1)
)
_BY_EMAIL = (
    select(UserValue.user_id)
    .where(
        UserValue.attr == "emails",
        UserValue.value_ci.in_(bindparam("names", expanding=True)),
        or_(UserValue.primary.is_(True), UserValue.type == "work"),
    )
    .order_by(UserValue.user_id)
    .limit(1)
)


def _decide(
    conn: Connection, account: dict[str, Any], domains: tuple[str, ...], claimed: dict[str, str]
) -> Decision:
    upn = str(account.get("userPrincipalName") or "")
    if str(account.get("userType") or "Member").lower() == "guest" or "#EXT#" in upn:
        return Decision(account, "skip", reason="a guest account")
    if account.get("accountEnabled") is False:
        return Decision(account, "skip", reason="disabled in Microsoft 365")
    if mapping.domain_of(upn) not in domains:
        return Decision(account, "skip", reason="out of scope (not in M365_SYNC_DOMAINS)")
    bound_to = conn.scalar(_BOUND_TO, {"object_id": str(account["id"])})
    if bound_to is not None and _interrupted_create(conn, bound_to):
        return Decision(account, "create", user_id=bound_to)
    if bound_to is not None:
        return Decision(account, "skip", reason=f"already bound to directory user {bound_to}")
    user_id = _match(conn, upn, account.get("mail"))
    if user_id is None:
        return Decision(account, "create")
    linked = conn.scalar(_LINKED_OBJECT, {"user_id": user_id})
    if linked or user_id in claimed:
        other = linked or claimed[user_id]
        return Decision(
            account,
            "skip",
            reason=f"directory user {user_id} is already bound to M365 object {other}; "
            "a user is bound to one account only (`scim-server m365 unbind` releases it)",
        )
    return Decision(account, "bind", user_id=user_id)


def _interrupted_create(conn: Connection, user_id: str) -> bool:
    """Whether a link is an import's create that stopped between the link and the user (see
    `apply`): its user does not exist and has never had an event. A user deleted in the
    directory also leaves its link until the worker takes the delete, but with that event."""
    if conn.scalar(_USER_EXISTS, {"user_id": user_id}) is not None:
        return False
    return conn.scalar(_ANY_EVENT, {"user_id": user_id}) is None


def _match(conn: Connection, upn: str, mail: str | None) -> str | None:
    """The directory user whose userName or primary email is the account's UPN or mail."""
    names = sorted({n.lower() for n in (upn, mail) if n})
    found: str | None = conn.scalar(_BY_NAME, {"names": names})
    if found is None:
        found = conn.scalar(_BY_EMAIL, {"names": names})
    return found


def apply(decision: Decision, bind: bool = True) -> str | None:
    """Carry one decision out; returns the directory user's id. Without `bind`, accounts
    only become directory users (M365_ON_CONFLICT then decides, as for any new user)."""
    account = decision.account
    object_id = str(account["id"])
    if decision.action == "skip" or (decision.action == "bind" and not bind):
        return None
    if decision.action == "create":
        upn = str(account["userPrincipalName"])
        body: dict[str, Any] = {
            "userName": upn,
            "emails": [{"value": account.get("mail") or upn, "type": "work", "primary": True}],
        }
        name = {
            k: v
            for k, v in (
                ("givenName", account.get("givenName")),
                ("familyName", account.get("surname")),
            )
            if v
        }
        if name:
            body["name"] = name
        # The link first, so that the worker, taking the create, finds the account bound.
        # Two transactions (create_user commits its own): a crash between them leaves a
        # link without its user, which the next import resumes (_interrupted_create).
        user_id = decision.user_id or directory.new_user_id()
        if not bind:
            if decision.user_id is not None:
                with store.transaction() as conn:  # an interrupted --bind: not bound now
                    outbox.drop_link(conn, "User", user_id)
            directory.create_user(body, "", user_id=user_id)
            return user_id
        # The account keeps its own password until the user sets the directory's one (an
        # activation email: imported users have none).
        with store.transaction() as conn:
            outbox.save_link(
                conn,
                "User",
                user_id,
                object_id=object_id,
                state=LinkState.PENDING,
                password_state=PasswordState.NONE,
            )
        try:
            directory.create_user(body, "", user_id=user_id)
        except Exception:
            with store.transaction() as conn:
                outbox.drop_link(conn, "User", user_id)
            raise
        return user_id
    assert decision.user_id is not None
    _bind(decision.user_id, object_id)
    return decision.user_id


def _bind(user_id: str, object_id: str) -> None:
    """Link the account to the directory user and queue the takeover, in one transaction: a
    link without its event would never be delivered, and the next import would skip it as
    bound already."""
    with store.transaction() as conn:
        outbox.bind(conn, user_id, object_id)
