"""The SCIM schemas this server implements (RFC 7643 §4, §8.7), as data.

One definition drives /Schemas, case-insensitive attribute lookup, projection by
`attributes`/`excludedAttributes`, and type checks of incoming values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.states import LinkState, PasswordState

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
M365_USER_SCHEMA = "urn:ietf:params:scim:schemas:extension:m365:2.0:User"
M365_GROUP_SCHEMA = "urn:ietf:params:scim:schemas:extension:m365:2.0:Group"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"


@dataclass(frozen=True)
class Attribute:
    name: str
    type: str = "string"
    multi_valued: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    description: str = ""
    sub_attributes: tuple[Attribute, ...] = ()
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()
    _index: dict[str, Attribute] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for attr in self.sub_attributes:
            self._index[attr.name.lower()] = attr

    def sub(self, name: str) -> Attribute | None:
        return self._index.get(name.lower())

    def to_scim(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description or self.name,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": self.mutability,
            "returned": self.returned,
            "uniqueness": self.uniqueness,
        }
        if self.canonical_values:
            out["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            out["referenceTypes"] = list(self.reference_types)
        if self.sub_attributes:
            out["subAttributes"] = [a.to_scim() for a in self.sub_attributes]
        return out


@dataclass(frozen=True)
class Schema:
    id: str
    name: str
    description: str
    attributes: tuple[Attribute, ...]
    _index: dict[str, Attribute] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for attr in self.attributes:
            self._index[attr.name.lower()] = attr

    def attr(self, name: str) -> Attribute | None:
        """RFC 7643 §2.1: attribute names are case-insensitive."""
        return self._index.get(name.lower())

    def to_scim(self, base_url: str) -> dict[str, Any]:
        return {
            "schemas": [SCHEMA_SCHEMA],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": [a.to_scim() for a in self.attributes],
            "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{self.id}"},
        }


def _s(name: str, **kw: Any) -> Attribute:
    return Attribute(name=name, **kw)


def _multi(
    name: str,
    types: tuple[str, ...],
    value_type: str = "string",
    *,
    value_case_exact: bool = False,
    extra: tuple[Attribute, ...] = (),
    description: str = "",
    reference_types: tuple[str, ...] = (),
) -> Attribute:
    value = (
        ()
        if value_type == "none"
        else (
            _s(
                "value",
                type=value_type,
                case_exact=value_case_exact,
                reference_types=reference_types,
            ),
        )
    )
    return _s(
        name,
        type="complex",
        multi_valued=True,
        description=description,
        sub_attributes=(
            *value,
            *extra,
            _s("display", description="A human-readable name, primarily used for display."),
            _s("type", canonical_values=types),
            _s("primary", type="boolean"),
        ),
    )


ID = _s(
    "id",
    case_exact=True,
    mutability="readOnly",
    returned="always",
    uniqueness="server",
    description="Unique identifier for the SCIM resource, assigned by the service provider.",
)
EXTERNAL_ID = _s("externalId", case_exact=True, description="Identifier issued by the client.")
META = _s(
    "meta",
    type="complex",
    mutability="readOnly",
    description="Resource metadata.",
    sub_attributes=(
        _s("resourceType", case_exact=True, mutability="readOnly"),
        _s("created", type="dateTime", mutability="readOnly"),
        _s("lastModified", type="dateTime", mutability="readOnly"),
        _s("location", type="reference", mutability="readOnly", reference_types=("uri",)),
        _s("version", case_exact=True, mutability="readOnly"),
    ),
)
COMMON = (ID, EXTERNAL_ID, META)

ADDRESS_PARTS = tuple(
    _s(n) for n in ("formatted", "streetAddress", "locality", "region", "postalCode", "country")
)

USER = Schema(
    id=USER_SCHEMA,
    name="User",
    description="User Account",
    attributes=(
        _s(
            "userName",
            required=True,
            uniqueness="server",
            description="Unique identifier for the User, case-insensitive.",
        ),
        _s(
            "name",
            type="complex",
            sub_attributes=tuple(
                _s(n)
                for n in (
                    "formatted",
                    "familyName",
                    "givenName",
                    "middleName",
                    "honorificPrefix",
                    "honorificSuffix",
                )
            ),
        ),
        _s("displayName"),
        _s("nickName"),
        _s("profileUrl", type="reference", reference_types=("external",)),
        _s("title"),
        _s("userType"),
        _s("preferredLanguage"),
        _s("locale"),
        _s("timezone"),
        _s("active", type="boolean"),
        _s(
            "password",
            mutability="writeOnly",
            returned="never",
            case_exact=True,
            description="Write-only; stored as an argon2 hash.",
        ),
        _multi("emails", ("work", "home", "other")),
        _multi("phoneNumbers", ("work", "home", "mobile", "fax", "pager", "other")),
        _multi("ims", ("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo")),
        _multi(
            "photos",
            ("photo", "thumbnail"),
            "reference",
            value_case_exact=True,
            reference_types=("external",),
        ),
        _multi("addresses", ("work", "home", "other"), "none", extra=ADDRESS_PARTS),
        _s(
            "groups",
            type="complex",
            multi_valued=True,
            mutability="readOnly",
            description="Groups the user belongs to, computed from group memberships.",
            sub_attributes=(
                _s("value", mutability="readOnly"),
                _s(
                    "$ref",
                    type="reference",
                    mutability="readOnly",
                    reference_types=("User", "Group"),
                ),
                _s("display", mutability="readOnly"),
                _s("type", mutability="readOnly", canonical_values=("direct", "indirect")),
            ),
        ),
        _multi("entitlements", ()),
        _multi("roles", ()),
        _multi("x509Certificates", (), "binary", value_case_exact=True),
    ),
)

ENTERPRISE = Schema(
    id=ENTERPRISE_SCHEMA,
    name="EnterpriseUser",
    description="Enterprise User",
    attributes=(
        _s("employeeNumber"),
        _s("costCenter"),
        _s("organization"),
        _s("division"),
        _s("department"),
        _s(
            "manager",
            type="complex",
            sub_attributes=(
                _s("value", case_exact=True),
                _s("$ref", type="reference", reference_types=("User",)),
                # Computed from the manager's record; returned on request only, so a client that
                # wrote `manager` reads back exactly what it wrote.
                _s("displayName", mutability="readOnly", returned="request"),
            ),
        ),
    ),
)

GROUP = Schema(
    id=GROUP_SCHEMA,
    name="Group",
    description="Group",
    attributes=(
        _s("displayName", required=True, uniqueness="server"),
        _s(
            "members",
            type="complex",
            multi_valued=True,
            sub_attributes=(
                _s("value", case_exact=True, mutability="immutable"),
                _s(
                    "$ref",
                    type="reference",
                    mutability="immutable",
                    reference_types=("User", "Group"),
                ),
                # RFC 7643 §2.4: display is immutable; when the client gives none, the server shows
                # the member's current name.
                _s("display", mutability="immutable"),
                _s("type", mutability="immutable", canonical_values=("User", "Group")),
            ),
        ),
    ),
)


# ISO 3166-1 alpha-2, the codes Graph takes as usageLocation.
_COUNTRIES = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO
    DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU
    GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW
    KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU
    MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW
    PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF
    TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA
    ZM ZW"""
COUNTRY_CODES = tuple(_COUNTRIES.split())


def _sync_state() -> tuple[Attribute, ...]:
    """The Microsoft 365 sync state of a user or group, kept by the sync worker.

    Server-set, and returned only on request (RFC 7643 §2.4 "request"): a client that writes
    the extension reads back what it wrote, and asks for the state by name or by the
    extension's URN (`attributes=urn:…:m365:2.0:User`)."""
    return (
        _s("objectId", mutability="readOnly", returned="request", case_exact=True),
        _s(
            "syncState",
            mutability="readOnly",
            returned="request",
            canonical_values=tuple(s.value for s in LinkState),
        ),
        _s("lastSyncedAt", type="dateTime", mutability="readOnly", returned="request"),
        _s("lastError", mutability="readOnly", returned="request"),
        _s(
            "lastDriftAt",
            type="dateTime",
            mutability="readOnly",
            returned="request",
            description="When drift detection last found the M365 object differing from what "
            "the directory sent (changed in Microsoft 365 behind its back).",
        ),
    )


M365_USER = Schema(
    id=M365_USER_SCHEMA,
    name="M365User",
    description="Microsoft 365: what the directory sends beyond the core schemas, and the "
    "state of the user's M365 account",
    attributes=(
        # An ISO 3166-1 alpha-2 country code; Microsoft 365 needs one to license the user.
        _s("usageLocation", canonical_values=COUNTRY_CODES),
        # Where the activation email goes (the user has no mailbox before activation).
        _s("alternateEmail"),
        *_sync_state(),
        _s(
            "passwordState",
            mutability="readOnly",
            returned="request",
            description="Whether the M365 account's password is the directory's. pending: "
            "being set; synced: it is; temporary: a temporary one, to change at sign-in; "
            "unknown: bound but not set yet (the user's next portal sign-in sets it); none: "
            "the directory has no password (an activation email gives one); federated: the "
            "domain is federated, its identity provider holds the password and the directory "
            "never sends it; error: setting it failed (see lastError); drifted: it was changed "
            "in Microsoft 365, and the user's next portal sign-in sets the directory's again.",
            canonical_values=tuple(s.value for s in PasswordState),
        ),
    ),
)

M365_GROUP = Schema(
    id=M365_GROUP_SCHEMA,
    name="M365Group",
    description="Microsoft 365: the group's security group and its state",
    attributes=(
        # The security group's mailNickname; by default folded from displayName.
        _s("mailNickname"),
        *_sync_state(),
    ),
)


@dataclass(frozen=True)
class ResourceType:
    name: str
    endpoint: str
    schema: Schema
    extensions: tuple[Schema, ...] = ()
    _by_urn: dict[str, Schema] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for schema in self.extensions:
            self._by_urn[schema.id.lower()] = schema

    def all_schemas(self) -> tuple[Schema, ...]:
        return (self.schema, *self.extensions)

    def extension(self, urn: str) -> Schema | None:
        """The extension schema whose URN is exactly `urn`, in any case."""
        return self._by_urn.get(urn.lower())

    def to_scim(self, base_url: str) -> dict[str, Any]:
        return {
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.schema.description,
            "schema": self.schema.id,
            "schemaExtensions": [{"schema": e.id, "required": False} for e in self.extensions],
            "meta": {
                "resourceType": "ResourceType",
                "location": f"{base_url}/ResourceTypes/{self.name}",
            },
        }


USER_TYPE = ResourceType("User", "/Users", USER, (ENTERPRISE, M365_USER))
GROUP_TYPE = ResourceType("Group", "/Groups", GROUP, (M365_GROUP,))
RESOURCE_TYPES = {"User": USER_TYPE, "Group": GROUP_TYPE}
SCHEMAS = {s.id: s for s in (USER, ENTERPRISE, M365_USER, GROUP, M365_GROUP)}


Resolved = tuple[Schema, Attribute, Attribute | None]
# resolve() by (resource type, path): a request resolves each of its keys once in the dialect
# rules and again in canonicalize or PATCH. Paths are client input: the map stays small.
_RESOLVED: dict[tuple[str, str], Resolved | None] = {}


def resolve(rtype: ResourceType, path: str) -> Resolved | None:
    """Resolve `attr`, `attr.sub` or `urn:...:attr.sub` against a resource type.

    Returns (schema, attribute, sub_attribute) with canonical names, or None if unknown.
    Common attributes (id, externalId, meta) resolve against the core schema.
    """
    key = (rtype.name, path)
    try:
        return _RESOLVED[key]
    except KeyError:
        pass
    found = _resolve(rtype, path)
    if len(_RESOLVED) >= 4096:
        _RESOLVED.clear()
    _RESOLVED[key] = found
    return found


def _resolve(rtype: ResourceType, path: str) -> Resolved | None:
    schema = rtype.schema
    rest = path
    lowered = path.lower()
    for candidate in rtype.all_schemas():
        prefix = candidate.id.lower() + ":"
        if lowered.startswith(prefix):
            schema, rest = candidate, path[len(prefix) :]
            break
    head, _, tail = rest.partition(".")
    attr = schema.attr(head)
    if attr is None and schema is rtype.schema:
        attr = next((a for a in COMMON if a.name.lower() == head.lower()), None)
    if attr is None and schema is rtype.schema and rest == path:
        # Microsoft Entra ID names extension attributes without their URN (`manager` in the
        # filter `id eq "…" and manager eq "…"` and in PATCH paths). One extension attribute
        # of that name is unambiguous, so the name resolves to it (see `dialects`).
        found = [(s, a) for s in rtype.extensions if (a := s.attr(head)) is not None]
        if len(found) == 1:
            schema, attr = found[0]
    if attr is None:
        return None
    if not tail:
        return schema, attr, None
    sub = attr.sub(tail)
    if sub is None:
        return None
    return schema, attr, sub
