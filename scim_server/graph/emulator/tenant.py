"""The tenant: domains, users, groups, managers, deleted items and the change log behind delta,
with Entra's rules. Pure Python, no HTTP; the app holds one lock around every call.

Pages this follows (Graph v1.0):
- users:   https://learn.microsoft.com/en-us/graph/api/user-post-users
           https://learn.microsoft.com/en-us/graph/api/resources/user (property rules)
- groups:  https://learn.microsoft.com/en-us/graph/api/group-post-groups
           https://learn.microsoft.com/en-us/graph/api/group-post-members
- deleted: https://learn.microsoft.com/en-us/graph/api/resources/directory
- delta:   https://learn.microsoft.com/en-us/graph/api/user-delta
           https://learn.microsoft.com/en-us/graph/api/group-delta (members@delta)
"""

from __future__ import annotations

import bisect
import copy
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from scim_server.graph.emulator import passwords
from scim_server.graph.emulator.errors import (
    BadRequest,
    GraphError,
    ObjectConflict,
    resource_not_found,
)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Domain:
    id: str
    isDefault: bool = False
    isInitial: bool = False
    isVerified: bool = True
    authenticationType: str = "Managed"
    passwordValidityPeriodInDays: int | None = 2147483647
    passwordNotificationWindowInDays: int | None = 14
    supportedServices: list[str] = field(default_factory=list)

    def to_graph(self) -> dict[str, Any]:
        return asdict(self)


# The user properties the emulator stores. Writable ones may be sent on POST/PATCH.
USER_WRITABLE = {
    "accountEnabled",
    "displayName",
    "mailNickname",
    "userPrincipalName",
    "passwordProfile",
    "givenName",
    "surname",
    "jobTitle",
    "department",
    "companyName",
    "employeeId",
    "employeeType",
    "mail",
    "mobilePhone",
    "businessPhones",
    "officeLocation",
    "preferredLanguage",
    "usageLocation",
    "city",
    "country",
    "state",
    "streetAddress",
    "postalCode",
    "onPremisesImmutableId",
    "otherMails",
    "passwordPolicies",
    "userType",
    "ageGroup",
}
# GET /users returns these unless $select asks for others (user resource page).
USER_DEFAULT = [
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
]
USER_READABLE = (USER_WRITABLE - {"passwordProfile"}) | {
    "id",
    "createdDateTime",
    "deletedDateTime",
    "onPremisesSyncEnabled",
    "proxyAddresses",
    "signInSessionsValidFromDateTime",
    "lastPasswordChangeDateTime",
}
USER_FILTERABLE = {
    "id",
    "userPrincipalName",
    "mail",
    "displayName",
    "mailNickname",
    "givenName",
    "surname",
    "accountEnabled",
    "employeeId",
    "onPremisesImmutableId",
    "userType",
    "jobTitle",
    "department",
}
GROUP_WRITABLE = {
    "displayName",
    "description",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "groupTypes",
    "visibility",
    "members@odata.bind",
    "owners@odata.bind",
}
# The passwordProfile complex type (resources/passwordprofile.md).
PASSWORD_PROFILE = {
    "password",
    "forceChangePasswordNextSignIn",
    "forceChangePasswordNextSignInWithMfa",
}
GROUP_FILTERABLE = {"id", "displayName", "mailNickname", "securityEnabled", "mailEnabled", "mail"}

# UPN local part: A-Z a-z 0-9 ' . - _ ! # ^ ~ (user resource, userPrincipalName).
_UPN_LOCAL = re.compile(r"^[A-Za-z0-9'.\-_!#^~]+$")
# https://learn.microsoft.com/en-us/entra/identity/authentication/concept-sspr-policy
UPN_LOCAL_MAX, UPN_DOMAIN_MAX, UPN_MAX = 64, 48, 113
# mailNickname: ASCII 0-127 except @ ( ) \ [ ] " ; : < > , and space; groups also exclude '.'.
_NICK_FORBIDDEN = set('@()\\[]";:<>, ')


def _check_declared(body: dict[str, Any], declared: set[str]) -> None:
    """Graph's 400 for a name the type does not declare. Instance annotations never get here:
    graph_api's dispatch removes them first (odata.split_annotations), as Graph ignores them."""
    for name in body:
        if name not in declared:
            raise BadRequest(
                f"Property '{name}' does not exist as a declared property or extension property.",
                details=[{"target": name, "code": "InvalidValue"}],
            )


def invalid_value(prop: str, resource: str) -> BadRequest:
    return BadRequest(
        f"Invalid value specified for property '{prop}' of resource '{resource}'.",
        details=[{"target": prop, "code": "InvalidValue"}],
    )


def _valid_nickname(value: Any, *, group: bool) -> bool:
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        return False
    if any(ord(c) > 127 or c in _NICK_FORBIDDEN for c in value):
        return False
    return not (group and "." in value)


class SignInFailure(Exception):
    """A refused password sign-in: the AADSTS number and Entra's description."""

    def __init__(self, aadsts: int, description: str) -> None:
        super().__init__(description)
        self.aadsts = aadsts
        self.description = description


@dataclass
class Obj:
    """A user or group. `props` holds Graph properties; the rest is the directory's own."""

    id: str
    kind: str  # "user" | "group"
    props: dict[str, Any]
    created_at: float
    password_hash: str | None = None
    force_change: bool = False
    manager_id: str | None = None
    members: list[str] = field(default_factory=list)
    deleted_at: float | None = None
    member_of: list[str] = field(default_factory=list)  # kept while soft-deleted, for restore

    @property
    def odata_type(self) -> str:
        return f"#microsoft.graph.{self.kind}"


@dataclass(frozen=True)
class TenantChanges:
    """What a save of the tenant writes: the objects changed since the last save (live,
    soft-deleted, or `gone` for good) and the change-log entries added since. `whole`: the
    tenant entire, replacing whatever was saved (a new tenant, or one reset)."""

    whole: bool
    tenant_id: str
    domains: list[dict[str, Any]]
    seq: int
    objects: list[dict[str, Any]]
    deleted: list[dict[str, Any]]
    gone: list[str]
    changes: list[tuple[int, str]]
    group_changes: list[tuple[int, str]]
    member_changes: list[tuple[int, str, str]]

    @classmethod
    def everything(cls, data: dict[str, Any]) -> TenantChanges:
        """The whole of a tenant in the shape of `Tenant.to_dict`."""
        return cls(
            whole=True,
            tenant_id=data["tenant_id"],
            domains=data.get("domains", []),
            seq=int(data.get("seq", 0)),
            objects=data.get("objects", []),
            deleted=data.get("deleted", []),
            gone=[],
            **_change_logs(data),
        )


def _change_logs(data: dict[str, Any]) -> dict[str, Any]:
    """The three change logs of a tenant in the shape of `Tenant.to_dict`, typed (JSON gives
    lists for tuples)."""
    return {
        "changes": [(int(s), str(i)) for s, i in data["changes"]],
        "group_changes": [(int(s), str(i)) for s, i in data.get("group_changes", [])],
        "member_changes": [(int(s), str(g), str(m)) for s, g, m in data.get("member_changes", [])],
    }


class Tenant:
    def __init__(
        self,
        tenant_id: str,
        domains: Iterable[Domain],
        *,
        replication_lag: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant_id = tenant_id
        self.domains: dict[str, Domain] = {d.id.lower(): d for d in domains}
        self.replication_lag = replication_lag
        self.clock = clock
        self.objects: dict[str, Obj] = {}
        self.deleted: dict[str, Obj] = {}
        self.changes: list[tuple[int, str]] = []  # (seq, user id) for users/delta
        # For groups/delta: (seq, group id) of a change to the group, and (seq, group id,
        # member id) of a change to its members. One sequence for all three logs.
        self.group_changes: list[tuple[int, str]] = []
        self.member_changes: list[tuple[int, str, str]] = []
        self.seq = 0
        # Live users by lower-cased userPrincipalName: a UPN in a URL (/users/{upn}/…, as
        # sendMail and $ref bindings use) or a sign-in is found without a scan of the tenant.
        self._by_upn: dict[str, str] = {}
        # Since the last take_changes: the ids of the objects changed, and how long each
        # change log was. All of it when _whole (nothing was saved yet, or a reset).
        self._dirty: dict[str, None] = {}  # in the order first changed
        self._saved_logs = (0, 0, 0)
        self._whole = True

    def clear(self) -> None:
        """An empty tenant (the control endpoint's reset)."""
        self.objects.clear()
        self.deleted.clear()
        self.changes.clear()
        self.group_changes.clear()
        self.member_changes.clear()
        self._by_upn.clear()
        self.seq = 0
        self._dirty.clear()
        self._whole = True

    def _index(self, obj: Obj) -> None:
        if obj.kind == "user":
            self._by_upn[obj.props["userPrincipalName"].lower()] = obj.id

    def _unindex(self, obj: Obj) -> None:
        if obj.kind == "user":
            key = obj.props["userPrincipalName"].lower()
            if self._by_upn.get(key) == obj.id:
                del self._by_upn[key]

    # ------------------------------------------------------------------ lookups
    def _visible(self, obj: Obj) -> bool:
        # Graph: a new object may answer 404 on reads for a while (replication lag).
        return self.clock() - obj.created_at >= self.replication_lag

    def find(self, object_id: str, kind: str | None = None) -> Obj:
        """An object by id (or a user by UPN), or 404 Request_ResourceNotFound."""
        obj = self.objects.get(object_id)
        if obj is None and "@" in object_id:
            obj = self._user_by_upn(object_id)
        if obj is None or (kind and obj.kind != kind) or not self._visible(obj):
            raise resource_not_found(object_id)
        return obj

    def referenced(self, ref: str) -> Obj:
        """The object an `@odata.id` names: …/directoryObjects/{id}, …/groups/{id} or
        …/users/{id | userPrincipalName}. A UPN resolves as in a request URL: in any case,
        404 when no user has it, and 404 while the new user is still replicating."""
        collection, key = ref_parts(ref)
        return self.find(key, {"users": "user", "groups": "group"}.get(collection))

    def _user_by_upn(self, upn: str) -> Obj | None:
        found = self._by_upn.get(upn.lower())
        obj = self.objects.get(found) if found is not None else None
        return obj if obj is not None and obj.kind == "user" else None

    def listing(self, kind: str) -> list[Obj]:
        return [o for o in self.objects.values() if o.kind == kind and self._visible(o)]

    def listing_by_upn(self, upn: str) -> list[Obj]:
        """`listing("user")` narrowed to the user with this UPN (in any case), if any."""
        obj = self._user_by_upn(upn)
        return [obj] if obj is not None and self._visible(obj) else []

    def _record_change(self, obj: Obj) -> None:
        self._dirty[obj.id] = None
        self.seq += 1
        if obj.kind == "user":
            self.changes.append((self.seq, obj.id))
        else:
            self.group_changes.append((self.seq, obj.id))

    def _record_members(self, group: Obj, member_ids: Iterable[str]) -> None:
        """A change to these members of `group`: groups/delta reports it in members@delta."""
        self._dirty[group.id] = None
        for member_id in member_ids:
            self.seq += 1
            self.member_changes.append((self.seq, group.id, member_id))

    # ------------------------------------------------------------------ domains
    def _domain_of(self, upn: Any) -> Domain:
        invalid = BadRequest(
            "Property userPrincipalName is invalid.",
            details=[{"target": "userPrincipalName", "code": "InvalidValue"}],
        )
        if not isinstance(upn, str) or upn.count("@") != 1:
            raise invalid
        local, domain_name = upn.split("@")
        if not local or not _UPN_LOCAL.match(local) or local.startswith(".") or ".." in local:
            raise invalid
        # Entra's username policies (concept-sspr-policy, "Username policies"): no "."
        # immediately before the "@", up to 64 characters before it and 48 after, 113 in all.
        if local.endswith(".") or len(local) > UPN_LOCAL_MAX or len(domain_name) > UPN_DOMAIN_MAX:
            raise invalid
        if len(upn) > UPN_MAX:
            raise invalid
        domain = self.domains.get(domain_name.lower())
        if domain is None or not domain.isVerified:
            raise BadRequest(
                "The domain portion of the userPrincipalName property is invalid. You must use "
                "one of the verified domain names in your organization.",
                details=[{"target": "userPrincipalName", "code": "InvalidValue"}],
            )
        return domain

    # ------------------------------------------------------------------ users
    def _check_user_props(self, body: dict[str, Any]) -> None:
        _check_declared(body, USER_WRITABLE)
        if "displayName" in body and not (
            isinstance(body["displayName"], str) and 1 <= len(body["displayName"]) <= 256
        ):
            raise invalid_value("displayName", "User")
        for name in ("givenName", "surname"):
            value = body.get(name)
            if value is not None and not (isinstance(value, str) and len(value) <= 64):
                raise invalid_value(name, "User")
        if "mailNickname" in body and not _valid_nickname(body["mailNickname"], group=False):
            raise invalid_value("mailNickname", "User")
        if "accountEnabled" in body and not isinstance(body["accountEnabled"], bool):
            raise invalid_value("accountEnabled", "User")
        if "businessPhones" in body:
            # String collection; "Only one number can be set for this property" (user resource).
            phones = body["businessPhones"]
            if not isinstance(phones, list) or len(phones) > 1:
                raise invalid_value("businessPhones", "User")
            if not all(isinstance(p, str) for p in phones):
                raise invalid_value("businessPhones", "User")

    def _password(self, profile: Any, domain: Domain) -> tuple[str | None, bool]:
        if not isinstance(profile, dict):
            raise invalid_value("passwordProfile", "User")
        _check_declared(profile, PASSWORD_PROFILE)
        if not isinstance(profile.get("password"), str):
            raise invalid_value("passwordProfile", "User")
        if domain.authenticationType == "Federated":
            # A federated user's password lives with the federation server, not in Entra.
            raise BadRequest(
                "Password cannot be set for a user in a federated domain.",
                details=[{"target": "passwordProfile", "code": "InvalidValue"}],
            )
        if not passwords.is_complex(profile["password"]):
            raise BadRequest(passwords.COMPLEXITY_MESSAGE)
        force = profile.get("forceChangePasswordNextSignIn", False)
        if not isinstance(force, bool):
            raise invalid_value("passwordProfile", "User")
        return passwords.hash_password(profile["password"]), force

    def create_user(self, body: dict[str, Any]) -> Obj:
        self._check_user_props(body)
        domain = self._domain_of(body.get("userPrincipalName"))
        federated = domain.authenticationType == "Federated"
        required = ["accountEnabled", "displayName", "mailNickname", "userPrincipalName"]
        if federated:
            required.append("onPremisesImmutableId")
        elif "passwordProfile" not in body:
            required.append("passwordProfile")
        for name in required:
            if body.get(name) in (None, ""):
                raise invalid_value(name, "User")
        if self._user_by_upn(body["userPrincipalName"]) is not None:
            raise ObjectConflict("userPrincipalName")
        password_hash, force = None, False
        if "passwordProfile" in body and not federated:
            password_hash, force = self._password(body["passwordProfile"], domain)
        now = self.clock()
        props = {k: copy.deepcopy(v) for k, v in body.items() if k != "passwordProfile"}
        props.setdefault("businessPhones", [])
        for name in USER_DEFAULT:
            props.setdefault(name, None)
        props.setdefault("userType", "Member")
        props.update(
            {
                "id": str(uuid.uuid4()),
                "createdDateTime": _iso(now),
                "onPremisesSyncEnabled": None,
                "proxyAddresses": [],
                "signInSessionsValidFromDateTime": _iso(now),
                "lastPasswordChangeDateTime": _iso(now) if password_hash else None,
            }
        )
        obj = Obj(props["id"], "user", props, now, password_hash, force)
        self.objects[obj.id] = obj
        self._index(obj)
        self._record_change(obj)
        return obj

    def update_user(self, object_id: str, body: dict[str, Any]) -> None:
        obj = self.find(object_id, "user")
        self._check_user_props(body)
        for name in ("displayName", "mailNickname", "userPrincipalName", "accountEnabled"):
            if name in body and body[name] in (None, ""):
                raise invalid_value(name, "User")
        domain = self._domain_of(body.get("userPrincipalName", obj.props["userPrincipalName"]))
        if "userPrincipalName" in body:
            other = self._user_by_upn(body["userPrincipalName"])
            if other is not None and other.id != obj.id:
                raise ObjectConflict("userPrincipalName")
        if "passwordProfile" in body:
            obj.password_hash, obj.force_change = self._password(body["passwordProfile"], domain)
            obj.props["lastPasswordChangeDateTime"] = _iso(self.clock())
        self._unindex(obj)
        for name, value in body.items():
            if name != "passwordProfile":
                obj.props[name] = copy.deepcopy(value)
        self._index(obj)
        self._record_change(obj)

    def revoke_sessions(self, object_id: str) -> None:
        obj = self.find(object_id, "user")
        obj.props["signInSessionsValidFromDateTime"] = _iso(self.clock())
        self._dirty[obj.id] = None  # not a change delta reports

    def delete_object(self, object_id: str) -> None:
        """DELETE a user (soft: into deletedItems) or a security group (hard, not restorable)."""
        obj = self.find(object_id)
        for group in self.objects.values():
            if obj.id in group.members:
                group.members.remove(obj.id)
                obj.member_of.append(group.id)
                self._record_members(group, [obj.id])
        for other in self.objects.values():
            if other.manager_id == obj.id:
                other.manager_id = None
                self._record_change(other)
        del self.objects[obj.id]
        self._unindex(obj)
        if obj.kind == "user":
            obj.deleted_at = self.clock()
            obj.props["deletedDateTime"] = _iso(obj.deleted_at)
            self.deleted[obj.id] = obj
        self._record_change(obj)  # a group is gone for good: groups/delta says "deleted"

    # ------------------------------------------------------------------ deleted items
    def find_deleted(self, object_id: str) -> Obj:
        obj = self.deleted.get(object_id)
        if obj is None:
            raise resource_not_found(object_id)
        return obj

    def restore(self, object_id: str) -> Obj:
        obj = self.find_deleted(object_id)
        if self._user_by_upn(obj.props["userPrincipalName"]) is not None:
            raise ObjectConflict("userPrincipalName")
        del self.deleted[obj.id]
        obj.deleted_at = None
        obj.props["deletedDateTime"] = None
        self.objects[obj.id] = obj
        self._index(obj)
        for group_id in obj.member_of:
            group = self.objects.get(group_id)
            if group is not None and obj.id not in group.members:
                group.members.append(obj.id)
                self._record_members(group, [obj.id])
        obj.member_of = []
        self._record_change(obj)
        return obj

    def purge(self, object_id: str) -> None:
        obj = self.find_deleted(object_id)
        del self.deleted[obj.id]
        self._record_change(obj)

    # ------------------------------------------------------------------ manager
    def set_manager(self, object_id: str, manager_ref: str) -> None:
        obj = self.find(object_id, "user")
        manager = self.referenced(manager_ref)
        if manager.kind != "user" or manager.id == obj.id:
            raise BadRequest(
                "Invalid value specified for property 'manager' of resource 'User'.",
                details=[{"target": "manager", "code": "InvalidValue"}],
            )
        obj.manager_id = manager.id
        self._record_change(obj)

    def manager(self, object_id: str) -> Obj:
        obj = self.find(object_id, "user")
        manager = self.objects.get(obj.manager_id or "")
        if manager is None:
            raise resource_not_found("manager")
        return manager

    def remove_manager(self, object_id: str) -> None:
        obj = self.find(object_id, "user")
        if obj.manager_id is None:
            raise resource_not_found("manager")
        obj.manager_id = None
        self._record_change(obj)

    # ------------------------------------------------------------------ groups
    def _check_group_props(self, body: dict[str, Any], *, creating: bool) -> None:
        _check_declared(body, GROUP_WRITABLE)
        if creating:
            for name in ("displayName", "mailEnabled", "mailNickname", "securityEnabled"):
                if body.get(name) is None:
                    raise invalid_value(name, "Group")
        if "displayName" in body and not (
            isinstance(body["displayName"], str) and 1 <= len(body["displayName"]) <= 256
        ):
            raise invalid_value("displayName", "Group")
        if "mailNickname" in body and not _valid_nickname(body["mailNickname"], group=True):
            raise invalid_value("mailNickname", "Group")
        for name in ("mailEnabled", "securityEnabled"):
            if name in body and not isinstance(body[name], bool):
                raise invalid_value(name, "Group")
        if creating and (
            body.get("mailEnabled") is not False
            or body.get("securityEnabled") is not True
            or body.get("groupTypes", []) != []
        ):
            # Only security groups: mail-enabled security groups cannot be made through Graph.
            raise BadRequest(
                "The emulator creates security groups only: mailEnabled false, "
                "securityEnabled true, groupTypes []."
            )

    def _references(self, refs: Any) -> list[Obj]:
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise invalid_value("members@odata.bind", "Group")
        if len(refs) > 20:
            raise BadRequest(
                f"Too many references ({len(refs)}) in 'members@odata.bind'; "
                "at most 20 may be added in one request."
            )
        return [self.referenced(r) for r in refs]

    def create_group(self, body: dict[str, Any]) -> Obj:
        self._check_group_props(body, creating=True)
        new_members = self._references(body.get("members@odata.bind", []))
        now = self.clock()
        props = {k: copy.deepcopy(v) for k, v in body.items() if "@" not in k}
        props.setdefault("description", None)
        props.setdefault("groupTypes", [])
        props.setdefault("visibility", None)
        props.update(
            {"id": str(uuid.uuid4()), "createdDateTime": _iso(now), "mail": None},
        )
        obj = Obj(props["id"], "group", props, now)
        obj.members = list(dict.fromkeys(m.id for m in new_members))
        self.objects[obj.id] = obj
        self._record_change(obj)
        self._record_members(obj, obj.members)
        return obj

    def update_group(self, object_id: str, body: dict[str, Any]) -> None:
        obj = self.find(object_id, "group")
        self._check_group_props(body, creating=False)
        if "members@odata.bind" in body:
            new_members = self._references(body["members@odata.bind"])
            self._refuse_existing(obj, [m.id for m in new_members])
            # One bad reference and none are added: all were resolved before this line.
            added = list(dict.fromkeys(m.id for m in new_members))
            obj.members.extend(added)
            self._record_members(obj, added)
        if any("@" not in name for name in body):
            for name, value in body.items():
                if "@" not in name:
                    obj.props[name] = copy.deepcopy(value)
            self._record_change(obj)

    @staticmethod
    def _refuse_existing(group: Obj, ids: list[str]) -> None:
        if any(i in group.members for i in ids):
            raise BadRequest(
                "One or more added object references already exist for the following "
                "modified properties: 'members'."
            )

    def add_member(self, group_id: str, ref: str) -> None:
        group = self.find(group_id, "group")
        member = self.referenced(ref)
        if member.id == group.id:
            raise invalid_value("members", "Group")
        self._refuse_existing(group, [member.id])
        group.members.append(member.id)
        self._record_members(group, [member.id])

    def remove_member(self, group_id: str, member_id: str) -> None:
        group = self.find(group_id, "group")
        if member_id not in group.members:
            raise resource_not_found(member_id)
        group.members.remove(member_id)
        self._record_members(group, [member_id])

    def member_of(self, object_id: str) -> list[Obj]:
        obj = self.find(object_id)
        return [g for g in self.listing("group") if obj.id in g.members]

    # ------------------------------------------------------------------ sign-in (ROPC)
    def sign_in(self, username: str, password: str) -> Obj:
        """Check a password as Entra's ROPC grant does; raise SignInFailure with its AADSTS."""
        user = self._user_by_upn(username)
        if user is None:
            raise SignInFailure(
                50034,
                f"The user account {{EUII Hidden}} does not exist in the {self.tenant_id} "
                "directory. To sign into this application, the account must be added to the "
                "directory.",
            )
        domain = self.domains.get(user.props["userPrincipalName"].split("@")[1].lower())
        if domain is not None and domain.authenticationType == "Federated":
            # Entra cannot test a federated user's password: it is not in the cloud.
            raise SignInFailure(
                50126, "Error validating credentials due to invalid username or password."
            )
        if not passwords.verify_password(password, user.password_hash):
            raise SignInFailure(
                50126, "Error validating credentials due to invalid username or password."
            )
        if not user.props.get("accountEnabled"):
            raise SignInFailure(50057, "The user account is disabled.")
        if user.force_change:
            raise SignInFailure(50055, "The password is expired.")
        return user

    # ------------------------------------------------------------------ delta
    def changed_since(self, since: int, upto: int, kind: str = "user") -> list[str]:
        """User (or group) ids changed in (since, upto], each once, in order of its last
        change; a group whose members changed counts as changed. The logs are in sequence
        order, so the window is found by bisection, not by a scan of the whole history."""
        last: dict[str, int] = {}
        logs: list[list[Any]] = (
            [self.changes] if kind == "user" else [self.group_changes, self.member_changes]
        )
        for log in logs:
            start = bisect.bisect_right(log, since, key=lambda change: change[0])
            for change in log[start:]:
                if change[0] > upto:
                    break
                last[change[1]] = max(last.get(change[1], 0), change[0])
        return sorted(last, key=last.__getitem__)

    def members_changed(self, group_id: str, since: int, upto: int) -> list[str]:
        """The members of `group_id` added or removed in (since, upto], each once."""
        start = bisect.bisect_right(self.member_changes, since, key=lambda change: change[0])
        changed: dict[str, None] = {}
        for seq, gid, member_id in self.member_changes[start:]:
            if seq > upto:
                break
            if gid == group_id:
                changed[member_id] = None
        return list(changed)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "domains": [asdict(d) for d in self.domains.values()],
            "objects": [asdict(o) for o in self.objects.values()],
            "deleted": [asdict(o) for o in self.deleted.values()],
            "changes": self.changes,
            "group_changes": self.group_changes,
            "member_changes": self.member_changes,
            "seq": self.seq,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.objects = {o["id"]: Obj(**o) for o in data["objects"]}
        self._by_upn = {}
        for obj in self.objects.values():
            self._index(obj)
        self.deleted = {o["id"]: Obj(**o) for o in data["deleted"]}
        logs = _change_logs(data)
        self.changes = logs["changes"]
        self.group_changes = logs["group_changes"]
        self.member_changes = logs["member_changes"]
        self.seq = int(data["seq"])
        self._dirty.clear()
        self._saved_logs = self._log_lengths()
        self._whole = False

    def save_whole_next(self) -> None:
        """The last changes taken were not saved: the next take is the whole tenant."""
        self._whole = True

    def _log_lengths(self) -> tuple[int, int, int]:
        return len(self.changes), len(self.group_changes), len(self.member_changes)

    def take_changes(self) -> TenantChanges | None:
        """What changed since the last call (or load), for the state file to save; None if
        nothing did."""
        if self._whole:
            changes = TenantChanges.everything(self.to_dict())
        elif not self._dirty and self._saved_logs == self._log_lengths():
            return None
        else:
            users, groups, members = self._saved_logs
            live, deleted, gone = [], [], []
            for object_id in self._dirty:
                if (obj := self.objects.get(object_id)) is not None:
                    live.append(asdict(obj))
                elif (obj := self.deleted.get(object_id)) is not None:
                    deleted.append(asdict(obj))
                else:
                    gone.append(object_id)
            changes = TenantChanges(
                whole=False,
                tenant_id=self.tenant_id,
                domains=[asdict(d) for d in self.domains.values()],
                seq=self.seq,
                objects=live,
                deleted=deleted,
                gone=gone,
                changes=self.changes[users:],
                group_changes=self.group_changes[groups:],
                member_changes=self.member_changes[members:],
            )
        self._dirty.clear()
        self._saved_logs = self._log_lengths()
        self._whole = False
        return changes


def ref_parts(ref: str) -> tuple[str, str]:
    """(collection, key) at the end of an @odata.id URL (…/directoryObjects/{id} or
    …/users/{id | userPrincipalName}); the key percent-decoded, as in a request path."""
    if not isinstance(ref, str) or not ref.strip():
        raise BadRequest("Invalid object identifier ''.")
    path = urlsplit(ref.strip()).path.rstrip("/")
    collection, _, tail = path.rpartition("/")
    key = unquote(tail)
    if not key or key.startswith("$"):
        raise BadRequest(f"Invalid object identifier '{ref}'.")
    return collection.rsplit("/", 1)[-1], key


def ref_id(ref: str) -> str:
    """The object id (or UPN) at the end of an @odata.id URL."""
    return ref_parts(ref)[1]


__all__ = ["Domain", "GraphError", "Obj", "SignInFailure", "Tenant", "TenantChanges", "ref_id"]
