"""Thin views for /Users, /Groups and /.search (RFC 7644 §3.2 to §3.6)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, request

from scim_server import directory
from scim_server.api import envelopes
from scim_server.api.http import base_url, json_body, paging, scim_json
from scim_server.errors import InvalidFilter, InvalidValue, NotFound, NotImplementedScim
from scim_server.mapping import etag, etag_matches
from scim_server.scim import dialects
from scim_server.scim import projection as proj
from scim_server.scim.schema import GROUP_TYPE, LIST_RESPONSE, USER_TYPE, ResourceType

bp = Blueprint("resources", __name__)
_DEFAULT_PROJECTION = proj.Projection(include=None, exclude=frozenset())


@dataclass(frozen=True)
class Kind:
    rtype: ResourceType
    get: Callable[[str, str, proj.Projection], tuple[dict[str, Any], int]]
    create: Callable[[dict[str, Any], str], tuple[dict[str, Any], int]]
    replace: Callable[[str, dict[str, Any], str | None, str], tuple[dict[str, Any], int]]
    # Users answer with the patched document; groups with None (204 unless a body is asked).
    patch: Callable[[str, list[dict[str, Any]], str | None, str], tuple[dict[str, Any] | None, int]]
    delete: Callable[[str, str | None], None]


KINDS = {
    "Users": Kind(
        USER_TYPE,
        directory.get_user,
        directory.create_user,
        directory.replace_user,
        directory.patch_user,
        directory.delete_user,
    ),
    "Groups": Kind(
        GROUP_TYPE,
        directory.get_group,
        directory.create_group,
        directory.replace_group,
        directory.patch_group,
        directory.delete_group,
    ),
}


def _projection(rtype: ResourceType, source: dict[str, Any] | None = None) -> proj.Projection:
    if source is None and not request.query_string:
        return _DEFAULT_PROJECTION  # no query string to parse
    src = source if source is not None else request.args
    return proj.parse(rtype, src.get("attributes"), src.get("excludedAttributes"))


def _asks_projection() -> bool:
    # Without a query string there is nothing to parse.
    args = request.args if request.query_string else {}
    return bool(args.get("attributes") or args.get("excludedAttributes"))


def _resource_response(
    doc: dict[str, Any], version: int, created_at: str | None = None
) -> Response:
    """200 with the resource, or 201 with its `Location` (`created_at`: the new resource's
    URL, taken before any projection, which may leave `meta` out)."""
    headers = {"ETag": etag(version)}
    if created_at is None:
        return scim_json(doc, 200, headers)
    headers["Location"] = created_at
    return scim_json(doc, 201, headers)


def _render(kind: Kind, ident: str) -> Response:
    doc, version = kind.get(ident, base_url(), _projection(kind.rtype))
    return _resource_response(doc, version)


def _list(kind_names: list[str], params: dict[str, Any]) -> Response:
    start, count = paging(params.get("startIndex"), params.get("count"))
    order = (params.get("sortOrder") or "ascending").lower()
    if order not in ("ascending", "descending"):
        raise InvalidValue("sortOrder must be 'ascending' or 'descending'.")
    query = directory.ListQuery(
        filter=dialects.filter_text(params.get("filter")) or None,
        sort_by=params.get("sortBy") or None,
        descending=order == "descending",
        start_index=start,
        count=count,
    )
    if len(kind_names) == 1:
        kind = KINDS[kind_names[0]]
        total, docs = directory.list_resources(
            kind.rtype.name, query, base_url(), _projection(kind.rtype, params)
        )
    else:
        total, docs = _list_all(query, params)
    # RFC 7644 §3.4.2.4: count=0 asks for no resources, only the total; §3.4.2 makes
    # Resources REQUIRED when totalResults is non-zero, so it comes as an empty list.
    body: dict[str, Any] = {
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(docs),
        "Resources": docs,
    }
    return scim_json(body)


def _list_all(
    query: directory.ListQuery, params: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]]:
    """Root-level search (RFC 7644 §3.4.3): users, then groups, paged as one list. A filter
    naming an attribute only one type has matches nothing of the other type."""
    totals: dict[str, int] = {}
    errors: list[InvalidFilter] = []
    for name in ("Users", "Groups"):
        kind = KINDS[name]
        try:
            totals[name], _ = directory.list_resources(
                kind.rtype.name,
                _with(query, start_index=1, count=0),
                base_url(),
                _projection(kind.rtype, params),
            )
        except InvalidFilter as exc:
            errors.append(exc)
    if not totals:
        raise errors[0]
    docs: list[dict[str, Any]] = []
    skip = query.start_index - 1
    for name, total in totals.items():
        if skip >= total:
            skip -= total
            continue
        want = query.count - len(docs)
        if want <= 0:
            break
        kind = KINDS[name]
        _, page = directory.list_resources(
            kind.rtype.name,
            _with(query, start_index=skip + 1, count=want),
            base_url(),
            _projection(kind.rtype, params),
        )
        docs.extend(page)
        skip = 0
    return sum(totals.values()), docs


def _with(query: directory.ListQuery, **changes: Any) -> directory.ListQuery:
    return directory.ListQuery(**{**query.__dict__, **changes})


@bp.get("/<any(Users, Groups):resource>")
def list_resources(resource: str) -> Response:
    return _list([resource], dict(request.args))


@bp.post("/<any(Users, Groups):resource>/.search")
def search_resources(resource: str) -> Response:
    return _list([resource], envelopes.search_request(json_body()))


@bp.post("/.search")
def search_all() -> Response:
    return _list(["Users", "Groups"], envelopes.search_request(json_body()))


@bp.post("/<any(Users, Groups):resource>")
def create(resource: str) -> Response:
    kind = KINDS[resource]
    doc, version = kind.create(resource_body(kind, json_body()), base_url())
    location = doc["meta"]["location"]
    if _asks_projection():
        doc = proj.apply(doc, kind.rtype, _projection(kind.rtype))
    return _resource_response(doc, version, created_at=location)


@bp.get("/<any(Users, Groups):resource>/<ident>")
def get(resource: str, ident: str) -> Response:
    kind = KINDS[resource]
    ident = resource_id(kind, ident)
    doc, version = kind.get(ident, base_url(), _projection(kind.rtype))
    # RFC 7644 §3.14: If-None-Match with the current version is 304 Not Modified.
    if_none = request.headers.get("If-None-Match")
    if if_none and etag_matches(if_none, version):
        return Response(status=304, headers={"ETag": etag(version)})
    return _resource_response(doc, version)


@bp.put("/<any(Users, Groups):resource>/<ident>")
def replace(resource: str, ident: str) -> Response:
    kind = KINDS[resource]
    ident = resource_id(kind, ident)
    body = resource_body(kind, json_body())
    doc, version = kind.replace(ident, body, request.headers.get("If-Match"), base_url())
    return _resource_response(proj.apply(doc, kind.rtype, _projection(kind.rtype)), version)


@bp.patch("/<any(Users, Groups):resource>/<ident>")
def patch(resource: str, ident: str) -> Response:
    kind = KINDS[resource]
    ident = resource_id(kind, ident)
    operations = patch_operations(kind, json_body())
    doc, version = kind.patch(ident, operations, request.headers.get("If-Match"), base_url())
    if doc is not None:
        return _resource_response(proj.apply(doc, kind.rtype, _projection(kind.rtype)), version)
    # Groups answer 204 (Entra's advice for large groups) unless a projection asks for a body.
    if not _asks_projection():
        return Response(status=204, headers={"ETag": etag(version)})
    return _render(kind, ident)


@bp.delete("/<any(Users, Groups):resource>/<ident>")
def delete(resource: str, ident: str) -> Response:
    kind = KINDS[resource]
    kind.delete(resource_id(kind, ident), request.headers.get("If-Match"))
    return Response(status=204)


def resource_id(kind: Kind, ident: str) -> str:
    """An id from a URL or a /Bulk path. The server's ids are UUIDs: one holding NUL names
    nothing (and PostgreSQL would refuse to even compare it)."""
    if "\x00" in ident:
        raise NotFound(f"{kind.rtype.name} not found.")
    return ident


def resource_body(kind: Kind, body: Any) -> dict[str, Any]:
    """A POST or PUT body, with the identity providers' dialects made RFC-shaped."""
    if not isinstance(body, dict):
        raise InvalidValue("The request body must be a JSON object.")
    normalised: dict[str, Any] = dialects.resource_body(body, kind.rtype)
    return normalised


def patch_operations(kind: Kind, body: Any) -> list[dict[str, Any]]:
    """A PatchOp's operations, with the identity providers' dialects made RFC-shaped."""
    return dialects.patch_operations(envelopes.patch_operations(body), kind.rtype)


@bp.route("/Me", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def me() -> Response:
    # RFC 7644 §3.11: a provider without an authenticated-subject alias answers 501.
    raise NotImplementedScim("/Me is not supported: bearer tokens are not bound to a user.")
