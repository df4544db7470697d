"""/Bulk (RFC 7644 §3.7): operations in order, each its own transaction (none is open
between operations), with bulkId references resolved as the operations that define them
succeed."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, current_app, request

from scim_server.api import envelopes
from scim_server.api.http import base_url, json_body, scim_json
from scim_server.api.resources import KINDS, patch_operations, resource_body, resource_id
from scim_server.errors import Conflict, InvalidSyntax, InvalidValue, PayloadTooLarge, ScimError
from scim_server.mapping import etag
from scim_server.scim.schema import BULK_RESPONSE

bp = Blueprint("bulk", __name__)
BULK_REF = re.compile(r"bulkId:([^\"\s/]+)")


@bp.post("/Bulk")
def bulk() -> Response:
    max_size = int(current_app.config["SCIM_BULK_MAX_PAYLOAD_SIZE"])
    if (request.content_length or 0) > max_size or len(request.get_data()) > max_size:
        raise PayloadTooLarge(f"The bulk request exceeds maxPayloadSize ({max_size} bytes).")
    data = envelopes.bulk_request(json_body())
    operations: list[dict[str, Any]] = data["Operations"]
    max_ops = int(current_app.config["SCIM_BULK_MAX_OPERATIONS"])
    if len(operations) > max_ops:
        raise PayloadTooLarge(f"The bulk request exceeds maxOperations ({max_ops}).")
    fail_on_errors = data.get("failOnErrors")
    results: dict[int, dict[str, Any]] = {}
    ids: dict[str, str] = {}  # bulkId → created id
    errors = 0
    pending = list(range(len(operations)))
    # Operations whose bulkId references are not yet known wait for a later pass; a pass that
    # resolves nothing leaves only unresolvable (missing or circular) references.
    while pending:
        waiting = []
        for index in pending:
            if fail_on_errors and errors >= fail_on_errors:
                break
            op = operations[index]
            refs = set(BULK_REF.findall(json.dumps(op.get("data")) + op["path"]))
            if refs - ids.keys():
                waiting.append(index)
                continue
            results[index] = _run(op, ids)
            if int(results[index]["status"]) >= 400:
                errors += 1
        if len(waiting) == len(pending) or (fail_on_errors and errors >= fail_on_errors):
            if not (fail_on_errors and errors >= fail_on_errors):
                for index in waiting:
                    results[index] = _failure(
                        operations[index],
                        Conflict(
                            "The operation refers to a bulkId that was not created "
                            "(missing or circular reference).",
                            "invalidValue",
                        ),
                    )
            break
        pending = waiting
    return scim_json(
        {
            "schemas": [BULK_RESPONSE],
            "Operations": [results[i] for i in sorted(results)],
        }
    )


def _substitute(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return BULK_REF.sub(lambda m: ids.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_substitute(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, ids) for k, v in value.items()}
    return value


def _run(op: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    method = op["method"].upper()
    try:
        path = _substitute(op["path"], ids)
        data = _substitute(op.get("data"), ids)
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in KINDS or len(parts) > 2:
            raise InvalidValue(f"Unsupported bulk path {op['path']!r}.", "invalidPath")
        kind = KINDS[parts[0]]
        ident = resource_id(kind, parts[1]) if len(parts) == 2 else None
        out: dict[str, Any] = {"method": method}
        if op.get("bulkId"):
            out["bulkId"] = op["bulkId"]
        if method == "POST" and ident is None:
            if not op.get("bulkId"):
                raise InvalidValue("A bulk POST requires a bulkId.")
            doc, version = kind.create(resource_body(kind, _object(data)), base_url())
            ids[op["bulkId"]] = doc["id"]
            return {
                **out,
                "location": doc["meta"]["location"],
                "version": etag(version),
                "status": "201",
            }
        if ident is None:
            raise InvalidValue(
                f"{method} needs a resource path such as /{parts[0]}/ID.", "invalidPath"
            )
        if method == "PUT":
            _, version = kind.replace(
                ident, resource_body(kind, _object(data)), op.get("version"), base_url()
            )
        elif method == "PATCH":
            _, version = kind.patch(
                ident, patch_operations(kind, data), op.get("version"), base_url()
            )
        elif method == "DELETE":
            kind.delete(ident, op.get("version"))
            return {**out, "location": f"{base_url()}/{parts[0]}/{ident}", "status": "204"}
        else:
            raise InvalidSyntax(f"Unsupported bulk method {method!r}.")
        # The write answers with its new version: no second read of the resource.
        return {
            **out,
            "location": f"{base_url()}/{parts[0]}/{ident}",
            "version": etag(version),
            "status": "200",
        }
    except ScimError as exc:
        return _failure(op, exc)


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidSyntax("Bulk operation data must be a JSON object.")
    return data


def _failure(op: dict[str, Any], exc: ScimError) -> dict[str, Any]:
    out: dict[str, Any] = {
        "method": str(op.get("method", "")).upper(),
        "status": str(exc.status),
        "response": exc.to_scim(),
    }
    if op.get("bulkId"):
        out["bulkId"] = op["bulkId"]
    return out
