"""Graph v1.0 routes as thin handlers over the tenant, and the dispatcher that both the HTTP
app and $batch use, so each batch part is routed, throttled and answered like a request.

https://learn.microsoft.com/en-us/graph/json-batching
https://learn.microsoft.com/en-us/graph/throttling
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from werkzeug.exceptions import MethodNotAllowed as RoutingMethodNotAllowed
from werkzeug.exceptions import NotFound as RoutingNotFound
from werkzeug.routing import Map, Rule

from scim_server.graph.emulator import odata
from scim_server.graph.emulator.control import Fault
from scim_server.graph.emulator.errors import (
    BadRequest,
    FailedDependency,
    GraphError,
    MethodNotAllowed,
    NotFound,
    ServiceError,
    TooManyRequests,
    resource_not_found,
    unexpected_error,
)
from scim_server.graph.emulator.state import Emulator
from scim_server.graph.emulator.tenant import (
    GROUP_FILTERABLE,
    USER_DEFAULT,
    USER_FILTERABLE,
    USER_READABLE,
    Obj,
)

log = logging.getLogger(__name__)

WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}
# $orderby the emulator sorts on (users and groups: displayName; users also by UPN).
SORTABLE = {"displayName", "userPrincipalName"}
MAX_BATCH = 20


@dataclass
class GraphRequest:
    method: str
    path: str  # below /v1.0, e.g. "/users/{id}"
    args: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # as sent; dispatch hands handlers its properties only (odata.split_annotations)
    app_id: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # The body's top-level instance annotations and control information, e.g. a reference's
    # "@odata.id"; filled by dispatch.
    annotations: dict[str, Any] = field(default_factory=dict)
    # A $batch part's own id and dependsOn, for the request log.
    part_id: str | None = None
    depends_on: list[str] = field(default_factory=list)


@dataclass
class GraphResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Emulator, GraphRequest, dict[str, str]], GraphResponse]
_HANDLERS: dict[str, Handler] = {}
_RULES: list[Rule] = []


def route(path: str, methods: list[str]) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _RULES.append(Rule(path, endpoint=handler.__name__, methods=methods))
        _HANDLERS[handler.__name__] = handler
        return handler

    return register


# ---------------------------------------------------------------------- rendering


def _select(props: dict[str, Any], select: list[str] | None, default: list[str] | None) -> Any:
    if select is None:
        names = default if default is not None else list(props)
        return {k: props.get(k) for k in names}
    return {k: props.get(k) for k in select}


def _check_select(select: list[str] | None, readable: set[str], type_name: str) -> None:
    for name in select or []:
        if name not in readable:
            raise BadRequest(
                f"Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'.",
                code="BadRequest",
            )


def render(obj: Obj, select: list[str] | None = None, *, typed: bool = False) -> dict[str, Any]:
    if obj.kind == "user":
        body = _select(obj.props, select, USER_DEFAULT)
    else:
        body = _select(obj.props, select, None)
    if typed:
        body = {"@odata.type": obj.odata_type, **body}
    return dict(body)


def _context(em: Emulator, fragment: str) -> str:
    return f"{em.graph_url}/$metadata#{fragment}"


def _entity(em: Emulator, obj: Obj, fragment: str, select: list[str] | None) -> GraphResponse:
    return GraphResponse(200, {"@odata.context": _context(em, fragment), **render(obj, select)})


def _page(
    em: Emulator,
    req: GraphRequest,
    items: list[Obj],
    fragment: str,
    *,
    typed: bool = False,
    default_top: int = 100,
    default_select: list[str] | None = None,
    sortable: set[str] | None = None,
) -> GraphResponse:
    """A page of `items` with an absolute @odata.nextLink carrying an opaque $skiptoken.

    $search is refused (odata.check_unsupported_options); $orderby sorts on the `sortable`
    properties and is a 400 on others; with the advanced query parameters the first page
    carries @odata.count, without them $count=true is ignored, as Graph does."""
    odata.check_unsupported_options(req.args, req.headers)
    for prop, descending in reversed(
        odata.parse_orderby(req.args.get("$orderby"), sortable or set())
    ):
        items = sorted(
            items, key=lambda o: str(o.props.get(prop) or "").lower(), reverse=descending
        )
    top = odata.parse_top(req.args.get("$top"), default_top)
    offset = 0
    if "$skiptoken" in req.args:
        offset = odata.token_int(odata.decode_token(req.args["$skiptoken"]), "o")
    if "$skip" in req.args:
        raise BadRequest("'$skip' is not supported by this API.", code="Request_UnsupportedQuery")
    select = odata.parse_select(req.args.get("$select")) or default_select
    body: dict[str, Any] = {"@odata.context": _context(em, fragment)}
    if offset == 0 and odata.is_advanced(req.args, req.headers):
        body["@odata.count"] = len(items)
    body["value"] = [render(o, select, typed=typed) for o in items[offset : offset + top]]
    if offset + top < len(items):
        args = {k: v for k, v in req.args.items() if k != "$skiptoken"}
        args["$skiptoken"] = odata.encode_token({"o": offset + top})
        body["@odata.nextLink"] = f"{em.graph_url}{req.path}?{urlencode(args)}"
    return GraphResponse(200, body)


def _json_body(req: GraphRequest) -> dict[str, Any]:
    if not isinstance(req.body, dict):
        raise BadRequest(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and "
            "payload is of valid JSON format.",
            code="BadRequest",
        )
    return req.body


def _ref(req: GraphRequest) -> str:
    """The `@odata.id` of a reference body ({"@odata.id": url}, OData JSON 4.01 section 14)."""
    _json_body(req)
    ref = req.annotations.get("@odata.id")
    if not isinstance(ref, str):
        raise BadRequest("Invalid request body: '@odata.id' is required.", code="BadRequest")
    return ref


# ---------------------------------------------------------------------- users


def _listing(
    em: Emulator, req: GraphRequest, kind: str, filterable: Any, readable: Any = None
) -> GraphResponse:
    """GET /users or /groups: $filter over the live objects of `kind`, then a page;
    `readable`, when given, is what $select may name."""
    advanced = odata.is_advanced(req.args, req.headers)
    found = odata.parse_filter(
        req.args.get("$filter"), filterable, kind.capitalize(), advanced=advanced
    )
    if readable is not None:
        _check_select(odata.parse_select(req.args.get("$select")), readable, kind)
    if found is None:
        objects = em.tenant.listing(kind)
    else:
        if kind == "user" and found.equality and found.equality[0] == "userPrincipalName":
            # The lookup before a create (and an admin's): through the UPN index, not a scan
            # of the tenant, as Graph's own indexes answer it.
            objects = em.tenant.listing_by_upn(found.equality[1])
        else:
            objects = em.tenant.listing(kind)
        objects = [o for o in objects if found.test(o.props)]
    return _page(em, req, objects, f"{kind}s", sortable=SORTABLE)


def _created(em: Emulator, obj: Any, collection: str) -> GraphResponse:
    """201 with the new object and its Location, as POST /users and POST /groups answer."""
    response = _entity(em, obj, f"{collection}/$entity", None)
    response.status = 201
    response.headers["Location"] = f"{em.graph_url}/{collection}/{obj.id}"
    return response


@route("/users", ["GET"])
def list_users(em: Emulator, req: GraphRequest, _: dict[str, str]) -> GraphResponse:
    return _listing(em, req, "user", USER_FILTERABLE, USER_READABLE)


@route("/users", ["POST"])
def create_user(em: Emulator, req: GraphRequest, _: dict[str, str]) -> GraphResponse:
    return _created(em, em.tenant.create_user(_json_body(req)), "users")


@route("/users/<object_id>", ["GET"])
def get_user(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    select = odata.parse_select(req.args.get("$select"))
    _check_select(select, USER_READABLE, "user")
    return _entity(em, em.tenant.find(p["object_id"], "user"), "users/$entity", select)


@route("/users/<object_id>", ["PATCH"])
def update_user(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    em.tenant.update_user(p["object_id"], _json_body(req))
    return GraphResponse(204)


@route("/users/<object_id>", ["DELETE"])
def delete_user(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    em.tenant.find(p["object_id"], "user")
    em.tenant.delete_object(p["object_id"])
    return GraphResponse(204)


@route("/users/<object_id>/revokeSignInSessions", ["POST"])
def revoke_sessions(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    em.tenant.revoke_sessions(p["object_id"])
    return GraphResponse(200, {"@odata.context": _context(em, "Edm.Boolean"), "value": True})


@route("/users/<object_id>/manager", ["GET"])
def get_manager(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    manager = em.tenant.manager(p["object_id"])
    return GraphResponse(
        200,
        {"@odata.context": _context(em, "directoryObjects/$entity"), **render(manager, typed=True)},
    )


@route("/users/<object_id>/manager/$ref", ["GET"])
def get_manager_ref(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    manager = em.tenant.manager(p["object_id"])
    return GraphResponse(
        200,
        {
            "@odata.context": _context(em, "$ref"),
            "@odata.id": f"{em.graph_url}/users/{manager.id}",
        },
    )


@route("/users/<object_id>/manager/$ref", ["PUT"])
def set_manager(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    em.tenant.set_manager(p["object_id"], _ref(req))
    return GraphResponse(204)


@route("/users/<object_id>/manager/$ref", ["DELETE"])
def remove_manager(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    em.tenant.remove_manager(p["object_id"])
    return GraphResponse(204)


@route("/users/<object_id>/memberOf", ["GET"])
def user_member_of(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    return _page(em, req, em.tenant.member_of(p["object_id"]), "directoryObjects", typed=True)


def _page_size(req: GraphRequest) -> int:
    """`Prefer: odata.maxpagesize=N` (delta-query-overview), else 100."""
    prefer = req.headers.get("prefer", "")
    if "odata.maxpagesize=" in prefer:
        return odata.parse_top(prefer.split("odata.maxpagesize=")[1].split(",")[0].strip())
    return 100


def _reference(em: Emulator, object_id: str, *, removed: bool = False) -> dict[str, Any]:
    """A related object as delta gives it: its type and id only (group-delta: "Only the id
    property of the related resource is returned"), with `@removed` when it left."""
    obj = em.tenant.objects.get(object_id) or em.tenant.deleted.get(object_id)
    kind = obj.kind if obj is not None else "user"
    out: dict[str, Any] = {"@odata.type": f"#microsoft.graph.{kind}", "id": object_id}
    if removed:
        out["@removed"] = {"reason": "deleted"}
    return out


def _delta(
    em: Emulator,
    req: GraphRequest,
    kind: str,
    render_item: Callable[[Obj, int | None, int], dict[str, Any]],
) -> GraphResponse:
    """A round of delta pages (user-delta, group-delta): the first round lists every object
    (`since` None), a round from an @odata.deltaLink's $deltatoken only the objects changed
    since it was issued, each once; every page but the last carries an @odata.nextLink with
    an opaque $skiptoken, the last an @odata.deltaLink. The query parameters of the first
    request ($select) are kept in both links, as Graph encodes them into its tokens. An
    object gone comes as {"id", "@removed": {"reason"}}: "changed" while it can be restored
    from deletedItems, "deleted" once it is gone for good."""
    page_size = _page_size(req)
    tenant = em.tenant
    if "$skiptoken" in req.args:
        state = odata.decode_token(req.args["$skiptoken"])
        since = odata.token_int(state, "s", nullable=True)
        offset, upto = odata.token_int(state, "o"), odata.token_int(state, "u")
    elif "$deltatoken" in req.args:
        since = odata.token_int(odata.decode_token(req.args["$deltatoken"]), "s")
        offset, upto = 0, tenant.seq
    else:
        since, offset, upto = None, 0, tenant.seq
    if since is None:
        ids = [o.id for o in tenant.listing(kind)]
    else:
        ids = tenant.changed_since(since, upto, kind)
    items: list[dict[str, Any]] = []
    for object_id in ids[offset : offset + page_size]:
        obj = tenant.objects.get(object_id)
        if obj is not None and obj.kind == kind:
            items.append(render_item(obj, since, upto))
        else:
            reason = "changed" if object_id in tenant.deleted else "deleted"
            items.append({"id": object_id, "@removed": {"reason": reason}})
    base = f"{em.graph_url}/{kind}s/delta"
    body: dict[str, Any] = {"@odata.context": _context(em, f"{kind}s"), "value": items}
    extra = {"$select": req.args["$select"]} if "$select" in req.args else {}
    if offset + page_size < len(ids):
        token = odata.encode_token({"s": since, "o": offset + page_size, "u": upto})
        body["@odata.nextLink"] = f"{base}?{urlencode({**extra, '$skiptoken': token})}"
    else:
        token = odata.encode_token({"s": upto})
        body["@odata.deltaLink"] = f"{base}?{urlencode({**extra, '$deltatoken': token})}"
    return GraphResponse(200, body)


# ---------------------------------------------------------------------- mail
# POST /users/{id | userPrincipalName}/sendMail: user-sendmail.md
# (microsoftgraph/microsoft-graph-docs-contrib, api-reference/v1.0/api/user-sendmail.md).

RECIPIENT_FIELDS = ("toRecipients", "ccRecipients", "bccRecipients")
_MAIL_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def _invalid_recipients(detail: str) -> BadRequest:
    """400 ErrorInvalidRecipients: Exchange's code for a recipient collection that is not
    valid, "for example ... an item that has no recipients" (Exchange's ResponseCode
    reference, https://learn.microsoft.com/exchange/client-developer/web-service-reference/responsecode,
    whose codes Outlook's Graph API answers with)."""
    return BadRequest(
        f"At least one recipient isn't valid., {detail}", code="ErrorInvalidRecipients"
    )


def _addresses(message: dict[str, Any], name: str) -> list[str]:
    value = message.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"Invalid value for property '{name}': a collection is expected.")
    found = []
    for entry in value:
        email = entry.get("emailAddress") if isinstance(entry, dict) else None
        address = email.get("address") if isinstance(email, dict) else None
        if not isinstance(address, str) or not _MAIL_ADDRESS.match(address.strip()):
            shown = address if isinstance(address, str) else ""
            raise _invalid_recipients(
                f"Recipient '{shown}' isn't resolved. All recipients must be resolved before a "
                "message can be submitted."
            )
        found.append(address.strip())
    return found


def _save_to_sent_items(body: dict[str, Any]) -> bool:
    """A Boolean, default true; the page's own example sends the string "false"."""
    value = body.get("saveToSentItems", True)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise BadRequest("Invalid value for parameter 'saveToSentItems': a Boolean is expected.")
    return value


# Graph takes an action's name in any case: Microsoft's own pages write /me/sendmail
# (concepts/outlook-send-mail-from-other-user.md) as well as /me/sendMail.
@route("/users/<object_id>/sendmail", ["POST"])
@route("/users/<object_id>/sendMail", ["POST"])
def send_mail(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    """202 and no body once the message is checked; it is kept for GET /_emulator/mail.

    The sender must be a user of the tenant: an unknown one is 404 ErrorInvalidUser "The
    requested user '…' is invalid." (what Graph answers, microsoftgraph/microsoft-graph-docs
    #7580, on this page; the page itself documents no error but malformed MIME). Its
    `accountEnabled` does not matter: a shared mailbox is a disabled account. A `from` other
    than the mailbox is 403 ErrorSendAsDenied (concepts/outlook-send-mail-from-other-user.md):
    the emulator grants no Send As."""
    key = p["object_id"]
    try:
        mailbox = em.tenant.find(key, "user")
    except NotFound:
        raise NotFound(f"The requested user '{key}' is invalid.", code="ErrorInvalidUser") from None
    body = _json_body(req)
    message = body.get("message")
    if not isinstance(message, dict):
        # "message … Required." The page documents no error for its absence.
        raise BadRequest("Invalid request body: 'message' is required.", code="ErrorInvalidRequest")
    content = message.get("body")
    if content is not None and not (
        isinstance(content, dict)
        and str(content.get("contentType", "text")).lower() in ("text", "html")
        and isinstance(content.get("content", ""), str)
    ):
        raise BadRequest(
            "Invalid value for property 'body': contentType must be Text or HTML and content "
            "a string.",
            code="ErrorInvalidRequest",
        )
    if not isinstance(message.get("subject", ""), (str, type(None))):
        raise BadRequest("Invalid value for property 'subject'.", code="ErrorInvalidRequest")
    recipients = {name: _addresses(message, name) for name in RECIPIENT_FIELDS}
    if not any(recipients.values()):
        raise _invalid_recipients("The message has no recipients.")
    save = _save_to_sent_items(body)
    own = {
        str(mailbox.props["userPrincipalName"]).lower(),
        str(mailbox.props.get("mail") or "").lower(),
    }
    sender = message.get("from")
    email = sender.get("emailAddress") if isinstance(sender, dict) else None
    sender_address = email.get("address") if isinstance(email, dict) else None
    if sender is not None and not isinstance(sender_address, str):
        raise BadRequest("Invalid value for property 'from'.", code="ErrorInvalidRequest")
    if isinstance(sender_address, str) and sender_address.strip().lower() not in own:
        raise GraphError(FAULT_MESSAGES["ErrorSendAsDenied"], code="ErrorSendAsDenied", status=403)
    em.outbox.add(
        {
            "id": str(uuid.uuid4()),
            "mailbox": mailbox.props["userPrincipalName"],
            "mailboxId": mailbox.id,
            "sentDateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "saveToSentItems": save,
            "request_id": req.request_id,
            **recipients,
            "message": message,
        }
    )
    return GraphResponse(202)


@route("/users/delta", ["GET"])
def users_delta(em: Emulator, req: GraphRequest, _: dict[str, str]) -> GraphResponse:
    """users/delta (user-delta). `$select` may name the navigation property `manager`,
    answered as `manager@delta`: a list holding the manager's type and id, empty when the
    user has none."""
    select = odata.parse_select(req.args.get("$select"))
    manager = select is not None and "manager" in select
    if select is not None:
        select = [name for name in select if name != "manager"]
        _check_select(select, USER_READABLE, "user")
        if "id" not in select:
            select = [*select, "id"]  # user-delta: "The id property is always returned."

    def item(obj: Obj, _since: int | None, _upto: int) -> dict[str, Any]:
        out = render(obj, select)
        if manager:
            out["manager@delta"] = [_reference(em, obj.manager_id)] if obj.manager_id else []
        return out

    return _delta(em, req, "user", item)


@route("/groups/delta", ["GET"])
def groups_delta(em: Emulator, req: GraphRequest, _: dict[str, str]) -> GraphResponse:
    """groups/delta (group-delta): with `members` selected (or no $select, as the page's
    first example shows), `members@delta` lists every member in the first round, and in
    later rounds only the members added or removed since, a removed one with
    `"@removed": {"reason": "deleted"}`."""
    select = odata.parse_select(req.args.get("$select"))
    members = select is None or "members" in select
    if select is not None:
        select = [name for name in select if name != "members"]
        if "id" not in select:
            select = [*select, "id"]  # group-delta: "The id property is always returned."

    def item(obj: Obj, since: int | None, upto: int) -> dict[str, Any]:
        out = render(obj, select)
        if not members:
            return out
        if since is None:
            out["members@delta"] = [_reference(em, m) for m in obj.members]
        else:
            now = set(obj.members)
            changed = em.tenant.members_changed(obj.id, since, upto)
            out["members@delta"] = [_reference(em, m, removed=m not in now) for m in changed]
        return out

    return _delta(em, req, "group", item)


# ---------------------------------------------------------------------- groups


@route("/groups", ["GET"])
def list_groups(em: Emulator, req: GraphRequest, _: dict[str, str]) -> GraphResponse:
    return _listing(em, req, "group", GROUP_FILTERABLE)


@route("/groups", ["POST"])
def create_group(em: Emulator, req: GraphRequest, _: dict[str, str]) -> GraphResponse:
    return _created(em, em.tenant.create_group(_json_body(req)), "groups")


@route("/groups/<object_id>", ["GET"])
def get_group(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    select = odata.parse_select(req.args.get("$select"))
    return _entity(em, em.tenant.find(p["object_id"], "group"), "groups/$entity", select)


@route("/groups/<object_id>", ["PATCH"])
def update_group(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    em.tenant.update_group(p["object_id"], _json_body(req))
    return GraphResponse(204)


@route("/groups/<object_id>", ["DELETE"])
def delete_group(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    em.tenant.find(p["object_id"], "group")
    em.tenant.delete_object(p["object_id"])
    return GraphResponse(204)


@route("/groups/<object_id>/members", ["GET"])
def list_members(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    group = em.tenant.find(p["object_id"], "group")
    members = [em.tenant.objects[m] for m in group.members if m in em.tenant.objects]
    return _page(em, req, members, "directoryObjects", typed=True)


@route("/groups/<object_id>/members/$ref", ["POST"])
def add_member(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    em.tenant.add_member(p["object_id"], _ref(req))
    return GraphResponse(204)


@route("/groups/<object_id>/members/<member_id>/$ref", ["DELETE"])
def remove_member(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    em.tenant.remove_member(p["object_id"], p["member_id"])
    return GraphResponse(204)


@route("/groups/<object_id>/members/<member_id>", ["DELETE"])
def delete_member_object(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    # The trap: without /$ref Graph deletes the member object itself, not the membership.
    group = em.tenant.find(p["object_id"], "group")
    member = em.tenant.find(p["member_id"])
    if member.id not in group.members:
        raise resource_not_found(member.id)
    em.tenant.delete_object(member.id)
    return GraphResponse(204)


# ---------------------------------------------------------------------- directory


@route("/directoryObjects/<object_id>", ["GET"])
def get_directory_object(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    obj = em.tenant.find(p["object_id"])
    return GraphResponse(
        200,
        {"@odata.context": _context(em, "directoryObjects/$entity"), **render(obj, typed=True)},
    )


# A type-cast segment may name the type by its schema's alias: Graph's $metadata declares
# <Schema Namespace="microsoft.graph" Alias="graph">, and Microsoft's SDKs ask for
# /directory/deletedItems/graph.user (directory-deleteditems-list.md writes microsoft.graph.user).
@route("/directory/deletedItems/graph.user", ["GET"])
@route("/directory/deletedItems/microsoft.graph.user", ["GET"])
def list_deleted_users(em: Emulator, req: GraphRequest, _: dict[str, str]) -> GraphResponse:
    deleted = list(em.tenant.deleted.values())
    return _page(em, req, deleted, "users", default_select=[*USER_DEFAULT, "deletedDateTime"])


@route("/directory/deletedItems/<object_id>", ["GET"])
def get_deleted(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    obj = em.tenant.find_deleted(p["object_id"])
    return GraphResponse(
        200,
        {
            "@odata.context": _context(em, "directoryObjects/$entity"),
            **render(obj, [*USER_DEFAULT, "deletedDateTime"], typed=True),
        },
    )


@route("/directory/deletedItems/<object_id>/restore", ["POST"])
def restore_deleted(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    obj = em.tenant.restore(p["object_id"])
    return GraphResponse(
        200,
        {"@odata.context": _context(em, "directoryObjects/$entity"), **render(obj, typed=True)},
    )


@route("/directory/deletedItems/<object_id>", ["DELETE"])
def purge_deleted(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    em.tenant.purge(p["object_id"])
    return GraphResponse(204)


@route("/domains", ["GET"])
def list_domains(em: Emulator, req: GraphRequest, _: dict[str, str]) -> GraphResponse:
    value = [d.to_graph() for d in em.tenant.domains.values()]
    return GraphResponse(200, {"@odata.context": _context(em, "domains"), "value": value})


@route("/domains/<domain_id>", ["GET"])
def get_domain(em: Emulator, req: GraphRequest, p: dict[str, str]) -> GraphResponse:
    domain = em.tenant.domains.get(p["domain_id"].lower())
    if domain is None:
        raise resource_not_found(p["domain_id"])
    return GraphResponse(
        200, {"@odata.context": _context(em, "domains/$entity"), **domain.to_graph()}
    )


@route("/organization", ["GET"])
def organization(em: Emulator, req: GraphRequest, _: dict[str, str]) -> GraphResponse:
    verified = [
        {
            "name": d.id,
            "isDefault": d.isDefault,
            "isInitial": d.isInitial,
            "type": d.authenticationType,
        }
        for d in em.tenant.domains.values()
        if d.isVerified
    ]
    org = {"id": em.tenant.tenant_id, "displayName": "Graph emulator", "verifiedDomains": verified}
    return GraphResponse(200, {"@odata.context": _context(em, "organization"), "value": [org]})


_MAP = Map(_RULES, strict_slashes=False, merge_slashes=False)


# ---------------------------------------------------------------------- dispatch


def _throttle(em: Emulator, req: GraphRequest) -> None:
    if req.method == "POST" and req.path.lower().endswith("/sendmail"):
        # Outlook's budget, per app and mailbox; not the directory's writes.
        mailbox = req.path.split("/")[2].lower()
        wait = em.mail_budgets.bucket(req.app_id, mailbox).take()
        if wait is not None:
            raise TooManyRequests(wait)
    elif req.method in WRITE_METHODS:
        wait = em.budgets.bucket(req.app_id, em.tenant.tenant_id).take()
        if wait is not None:
            raise TooManyRequests(wait)


def fault_error(fault: Fault, headers: dict[str, str]) -> GraphError:
    """The Graph error an injected status fault answers: its own code and message, or the
    usual ones for its status (a documented message for a known code)."""
    code = fault.code or {
        429: "TooManyRequests",
        503: "serviceNotAvailable",
        504: "gatewayTimeout",
    }.get(fault.status, "generalException")
    message = fault.message or FAULT_MESSAGES.get(code, "Injected fault.")
    return ServiceError(message, code=code, status=fault.status, headers=headers)


# Messages Graph documents for codes a test may inject.
FAULT_MESSAGES = {
    # concepts/outlook-send-mail-from-other-user.md, "Unsuccessful attempt to send without
    # permissions"
    "ErrorSendAsDenied": "The user account which was used to submit this request does not "
    "have the right to send mail on behalf of the specified sending account. Cannot submit "
    "message.",
    # concepts/auth-limit-mailbox-access.md, "Handling API errors"
    "ErrorAccessDenied": "Access to OData is disabled.",
}


def _fault(em: Emulator, req: GraphRequest) -> None:
    fault = em.faults.take(req.method, f"/v1.0{req.path}", kinds=("status",))
    if fault is not None:
        headers = {}
        if fault.status in (429, 503) or fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after or 1)
        raise fault_error(fault, headers)


def dispatch(em: Emulator, req: GraphRequest) -> GraphResponse:
    """Route one Graph request; every failure becomes Graph's error body."""
    try:
        adapter = _MAP.bind("graph", "/")
        try:
            endpoint, params = adapter.match(req.path, method=req.method)
        except RoutingMethodNotAllowed:
            raise MethodNotAllowed(
                "Specified HTTP method is not allowed for the request target."
            ) from None
        except RoutingNotFound:
            segment = req.path.strip("/").split("/")[0] or "/"
            raise BadRequest(
                f"Resource not found for the segment '{segment}'.", code="BadRequest"
            ) from None
        _fault(em, req)
        _throttle(em, req)
        # The one place request bodies lose their instance annotations (odata.py cites OData's
        # rule), for every route and every $batch part alike; unknown properties stay, for the
        # tenant's checks to refuse as Graph does.
        body, annotations = odata.split_annotations(req.body)
        req = dataclasses.replace(req, body=body, annotations=annotations)
        with em.lock:
            response = _HANDLERS[str(endpoint)](em, req, dict(params))
            if req.method in WRITE_METHODS:
                em.persist()
    except Exception as exc:
        if isinstance(exc, GraphError):
            error: GraphError = exc
        else:
            # A bug or an input no check caught: Graph's 500 body, and the traceback in the log.
            log.exception("unexpected error in %s %s", req.method, req.path)
            error = unexpected_error()
        client_request_id = req.headers.get("client-request-id")
        response = GraphResponse(
            error.status, error.body(req.request_id, client_request_id), dict(error.headers)
        )
    response.headers.setdefault("request-id", req.request_id)
    response.headers.setdefault(
        "client-request-id", req.headers.get("client-request-id", req.request_id)
    )
    return response


# ---------------------------------------------------------------------- $batch


def _part_request(raw: dict[str, Any], app_id: str) -> GraphRequest:
    url = raw.get("url")
    method = raw.get("method")
    if not isinstance(url, str) or not isinstance(method, str):
        raise BadRequest("Each batch request needs 'id', 'method' and 'url'.", code="BadRequest")
    if url.lower().startswith(("http:", "https:")):
        raise BadRequest(
            f"Invalid request URL '{url}': batch request URLs must be relative.", code="BadRequest"
        )
    split = urlsplit(url if url.startswith("/") else f"/{url}")
    path = split.path.removeprefix("/v1.0")
    raw_headers = raw.get("headers")
    if raw_headers is None:
        raw_headers = {}
    if not isinstance(raw_headers, dict) or not all(
        isinstance(v, str) for v in raw_headers.values()
    ):
        raise BadRequest(
            f"Invalid batch request id : {raw.get('id')}: 'headers' must be a JSON object of "
            "strings.",
            code="BadRequest",
        )
    headers = {str(k).lower(): v for k, v in raw_headers.items()}
    if "body" in raw and "content-type" not in headers:
        raise BadRequest(
            f"Write request id : {raw.get('id')} does not contain Content-Type header or body.",
            code="BadRequest",
        )
    return GraphRequest(
        method=method.upper(),
        path=path,
        args=dict(parse_qsl(split.query, keep_blank_values=True)),
        headers=headers,
        body=raw.get("body"),
        app_id=app_id,
        part_id=str(raw.get("id")),
        depends_on=[str(d) for d in raw.get("dependsOn") or []],
    )


MIXED_BATCH = "Batch should be either fully sequential or fully parallel"


def _check_sequencing(depends: dict[str, list[str]]) -> None:
    """Graph accepts only three shapes of dependsOn (known issues, "Request dependencies are
    limited"): each request depends on at most one other, and the batch is
    - parallel: no request states a dependency;
    - serial: every request but the first depends on the request just before it;
    - same: every request that states a dependency states the same one, an earlier request
      that itself depends on nothing (these run sequentially).
    Anything else is a 400 "Batch should be either fully sequential or fully parallel"."""
    keys = list(depends)
    for key, deps in depends.items():
        for dep in deps:
            if dep not in depends:
                raise BadRequest(
                    f"Request '{key}' depends on an unknown request id '{dep}'.",
                    code="BadRequest",
                )
    stated = {key: deps for key, deps in depends.items() if deps}
    if not stated:
        return
    if all(len(deps) == 1 for deps in stated.values()):
        serial = not depends[keys[0]] and all(
            depends[keys[i]] == [keys[i - 1]] for i in range(1, len(keys))
        )
        targets = {deps[0] for deps in stated.values()}
        same = False
        if len(targets) == 1:
            target = targets.pop()
            same = not depends[target] and all(
                keys.index(target) < keys.index(key) for key in stated
            )
        if serial or same:
            return
    raise BadRequest(MIXED_BATCH, code="BadRequest")


def run_batch(
    em: Emulator, body: Any, app_id: str, on_part: Callable[[GraphRequest, int], None]
) -> GraphResponse:
    """Validate the whole batch first (400 for the batch: ids unique ignoring case, dependsOn
    in one of Graph's three shapes), then run its parts in order, each after the part it
    dependsOn; a part whose dependency failed answers 424."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise BadRequest("Invalid batch payload format.", code="BadRequest")
    raws: list[dict[str, Any]] = body["requests"]
    if not raws:
        raise BadRequest("Invalid batch payload format: no requests.", code="BadRequest")
    if len(raws) > MAX_BATCH:
        raise BadRequest(
            f"Number of requests in the batch exceeds the limit of {MAX_BATCH}.",
            code="BadRequest",
        )
    # Ids are "Not case-sensitive" (json-batching): parts are keyed by the lower-cased id.
    parts: dict[str, tuple[str, GraphRequest, list[str]]] = {}
    for raw in raws:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            raise BadRequest("Each batch request needs a string 'id'.", code="BadRequest")
        key = raw["id"].lower()
        if key in parts:
            raise BadRequest(f"Batch request id '{raw['id']}' is not unique.", code="BadRequest")
        depends = raw.get("dependsOn")
        if depends is None:
            depends = []
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise BadRequest("'dependsOn' must be a list of request ids.", code="BadRequest")
        parts[key] = (raw["id"], _part_request(raw, app_id), [d.lower() for d in depends])
    _check_sequencing({key: depends for key, (_, _, depends) in parts.items()})

    results: dict[str, GraphResponse] = {}

    def run(key: str) -> GraphResponse:
        if key in results:
            return results[key]
        _, request, depends = parts[key]
        failed = [parts[d][0] for d in depends if run(d).status >= 400]
        if failed:
            error = FailedDependency(f"Dependent request(s) {', '.join(failed)} failed.")
            results[key] = GraphResponse(
                424, error.body(request.request_id, None), {"request-id": request.request_id}
            )
        else:
            results[key] = dispatch(em, request)
        on_part(request, results[key].status)
        return results[key]

    for key in parts:
        run(key)
    responses = []
    for key, (part_id, _, _) in parts.items():
        result = results[key]
        entry: dict[str, Any] = {"id": part_id, "status": result.status}
        headers = dict(result.headers)
        if result.body is not None:
            headers["Content-Type"] = "application/json"
            entry["body"] = result.body
        entry["headers"] = headers
        responses.append(entry)
    return GraphResponse(200, {"responses": responses})


def parse_json(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        raise BadRequest(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and "
            "payload is of valid JSON format.",
            code="BadRequest",
        ) from None
