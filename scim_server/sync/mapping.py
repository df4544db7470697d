"""SCIM → Microsoft Graph, as pure functions (the README's mapping table says the same).

A directory user becomes the Graph user properties below; the worker sends only what changed
since the last delivery (`changes`). Graph's property names and limits:
https://learn.microsoft.com/graph/api/resources/user and shared/reference/graph.md.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from scim_server.scim.schema import ENTERPRISE_SCHEMA
from scim_server.scim.schema import M365_USER_SCHEMA as M365_SCHEMA

# Graph's limits (graph.md): mailNickname ≤ 64, displayName ≤ 256, givenName/surname ≤ 64.
_LIMITS = {
    "displayName": 256,
    "givenName": 64,
    "surname": 64,
    "jobTitle": 128,
    "department": 64,
    "employeeId": 16,
    "companyName": 64,
    "officeLocation": 128,
    "streetAddress": 1024,
    "city": 128,
    "state": 128,
    "postalCode": 40,
    "country": 128,
    "mobilePhone": 64,
    "mailNickname": 64,
}
# What Graph allows in mailNickname: ASCII, none of @ ( ) \ [ ] " ; : . < > , or space for
# groups; users allow dots. (graph.md, "Groups" and "Users").
_NICKNAME_DROP = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]")
_GROUP_NICKNAME_DROP = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]")

# The Graph properties this mapping owns: the worker compares and sends only these.
USER_PROPERTIES = (
    "userPrincipalName",
    "mailNickname",
    "accountEnabled",
    "displayName",
    "givenName",
    "surname",
    "jobTitle",
    "department",
    "employeeId",
    "companyName",
    "officeLocation",
    "streetAddress",
    "city",
    "state",
    "postalCode",
    "country",
    "businessPhones",
    "mobilePhone",
    "usageLocation",
)


def upn(doc: dict[str, Any]) -> str | None:
    """`userName` when it is an address, else the primary work email (issue 5's rule)."""
    user_name = doc.get("userName")
    if isinstance(user_name, str) and "@" in user_name:
        return user_name.strip()
    email = work_email(doc)
    return email.strip() if email else None


def work_email(doc: dict[str, Any]) -> str | None:
    """The primary email, else the first of type work, else None."""
    emails = [e for e in doc.get("emails") or [] if isinstance(e.get("value"), str)]
    for choice in (
        [e for e in emails if e.get("primary") is True],
        [e for e in emails if str(e.get("type", "")).lower() == "work"],
    ):
        if choice:
            return str(choice[0]["value"])
    return None


def domain_of(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].strip().lower() or None


def mail_nickname(address: str) -> str:
    """The local part, folded to the ASCII that Graph takes, at most 64 characters."""
    local = address.split("@", 1)[0]
    ascii_only = unicodedata.normalize("NFKD", local).encode("ascii", "ignore").decode()
    nickname = _NICKNAME_DROP.sub("", ascii_only).strip(".")[: _LIMITS["mailNickname"]]
    return nickname or "user"


def group_mail_nickname(display_name: str, group_id: str) -> str:
    """Graph needs a mailNickname even for a security group; it need not be unique. The
    display name folded to what Graph takes, else a name from the directory id."""
    ascii_only = unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode()
    nickname = _GROUP_NICKNAME_DROP.sub("", ascii_only)[: _LIMITS["mailNickname"]]
    return nickname or f"group-{group_id.replace('-', '')[:20]}"


def _work(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    items = items or []
    for item in items:
        if str(item.get("type", "")).lower() == "work":
            return item
    return next((i for i in items if i.get("primary") is True), {})


def _text(value: Any, prop: str) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[: _LIMITS.get(prop, 1024)]


def user_properties(doc: dict[str, Any], default_usage_location: str | None) -> dict[str, Any]:
    """Every Graph property this mapping owns, from a canonical SCIM user document. A property
    the directory has no value for is None: on update it clears the M365 value."""
    principal = upn(doc) or ""
    name = doc.get("name") or {}
    enterprise = doc.get(ENTERPRISE_SCHEMA) or {}
    m365 = doc.get(M365_SCHEMA) or {}
    address = _work(doc.get("addresses"))
    phones = doc.get("phoneNumbers") or []
    business = [
        str(p["value"])
        for p in phones
        if str(p.get("type", "")).lower() == "work" and isinstance(p.get("value"), str)
    ]
    mobile = next((p["value"] for p in phones if str(p.get("type", "")).lower() == "mobile"), None)
    given, family = (
        _text(name.get("givenName"), "givenName"),
        _text(name.get("familyName"), "surname"),
    )
    display = (
        _text(doc.get("displayName"), "displayName")
        or _text(name.get("formatted"), "displayName")
        or " ".join(p for p in (given, family) if p)
        or _text(doc.get("userName"), "displayName")
    )
    usage = _text(m365.get("usageLocation"), "usageLocation") or default_usage_location
    return {
        "userPrincipalName": principal,
        "mailNickname": mail_nickname(principal) if principal else None,
        "accountEnabled": doc.get("active") is not False,
        "displayName": display,
        "givenName": given,
        "surname": family,
        "jobTitle": _text(doc.get("title"), "jobTitle"),
        "department": _text(enterprise.get("department"), "department"),
        "employeeId": _text(enterprise.get("employeeNumber"), "employeeId"),
        "companyName": _text(enterprise.get("organization"), "companyName"),
        # Entra's own SCIM mapping sends physicalDeliveryOfficeName as the work address'
        # `formatted`; the way back is the same.
        "officeLocation": _text(address.get("formatted"), "officeLocation"),
        "streetAddress": _text(address.get("streetAddress"), "streetAddress"),
        "city": _text(address.get("locality"), "city"),
        "state": _text(address.get("region"), "state"),
        "postalCode": _text(address.get("postalCode"), "postalCode"),
        "country": _text(address.get("country"), "country"),
        "businessPhones": business[:1],  # Graph keeps one business phone
        "mobilePhone": _text(mobile, "mobilePhone"),
        "usageLocation": usage.upper() if usage else None,
    }


def manager_id(doc: dict[str, Any]) -> str | None:
    manager = (doc.get(ENTERPRISE_SCHEMA) or {}).get("manager") or {}
    value = manager.get("value") if isinstance(manager, dict) else None
    return value if isinstance(value, str) and value else None


def create_body(
    properties: dict[str, Any], password: str, *, force_change: bool = True
) -> dict[str, Any]:
    """POST /users: the required properties, and the others that have a value. Graph refuses
    null for most properties on create, so absent ones are left out. A generated password
    must be changed at first sign-in; the directory's own password need not."""
    body = {k: v for k, v in properties.items() if v not in (None, [])}
    body["passwordProfile"] = {"password": password, "forceChangePasswordNextSignIn": force_change}
    return body


def create_body_federated(properties: dict[str, Any], immutable_id: str) -> dict[str, Any]:
    """POST /users on a federated domain: no password (the federation's identity provider
    holds it), and the onPremisesImmutableId that Graph requires there (graph.md)."""
    body = {k: v for k, v in properties.items() if v not in (None, [])}
    body["onPremisesImmutableId"] = immutable_id
    return body


def changes(last: dict[str, Any] | None, current: dict[str, Any]) -> dict[str, Any]:
    """The properties that differ from what was last delivered (all of them without a record).
    The UPN and mailNickname are sent only when the UPN changes."""
    last = last or {}
    out = {k: v for k, v in current.items() if k not in last or last[k] != v}
    if "userPrincipalName" not in out:
        out.pop("mailNickname", None)
    return out
