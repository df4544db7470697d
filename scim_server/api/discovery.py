"""Discovery endpoints (RFC 7644 §4): what they say is what the server does."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from scim_server.api.http import base_url, scim_json
from scim_server.errors import NotFound
from scim_server.scim.schema import LIST_RESPONSE, RESOURCE_TYPES, SCHEMAS, SPC_SCHEMA

bp = Blueprint("discovery", __name__)


def _list(resources: list[dict[str, Any]]) -> Response:
    return scim_json(
        {
            "schemas": [LIST_RESPONSE],
            "totalResults": len(resources),
            "startIndex": 1,
            "itemsPerPage": len(resources),
            "Resources": resources,
        }
    )


@bp.get("/ServiceProviderConfig")
def service_provider_config() -> Response:
    cfg = current_app.config
    return scim_json(
        {
            "schemas": [SPC_SCHEMA],
            "patch": {"supported": True},
            "bulk": {
                "supported": True,
                "maxOperations": cfg["SCIM_BULK_MAX_OPERATIONS"],
                "maxPayloadSize": cfg["SCIM_BULK_MAX_PAYLOAD_SIZE"],
            },
            "filter": {"supported": True, "maxResults": cfg["SCIM_MAX_PAGE_SIZE"]},
            "changePassword": {"supported": True},
            "sort": {"supported": True},
            "etag": {"supported": True},
            # RFC 7643 §5: the schemes the service provider supports (README "Authentication").
            "authenticationSchemes": [
                {
                    "type": "oauthbearertoken",
                    "name": "OAuth Bearer Token",
                    "description": "A bearer token created with `scim-server token create`, "
                    "an access token from POST /oauth/token (OAuth 2.0 client credentials), "
                    "or, with SCIM_ENTRA_TENANT_ID, Entra provisioning's own JWT.",
                    "specUri": "https://www.rfc-editor.org/rfc/rfc6750",
                    "primary": True,
                },
                {
                    "type": "httpbasic",
                    "name": "HTTP Basic",
                    "description": "A user name and password created with "
                    "`scim-server token create NAME --basic`.",
                    "specUri": "https://www.rfc-editor.org/rfc/rfc7617",
                },
            ],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": f"{base_url()}/ServiceProviderConfig",
            },
        }
    )


@bp.get("/ResourceTypes")
def resource_types() -> Response:
    return _list([r.to_scim(base_url()) for r in RESOURCE_TYPES.values()])


@bp.get("/ResourceTypes/<name>")
def resource_type(name: str) -> Response:
    rtype = RESOURCE_TYPES.get(name)
    if rtype is None:
        raise NotFound(f"Resource type {name} not found.")
    return scim_json(rtype.to_scim(base_url()))


@bp.get("/Schemas")
def schemas() -> Response:
    return _list([s.to_scim(base_url()) for s in SCHEMAS.values()])


@bp.get("/Schemas/<path:schema_id>")
def schema(schema_id: str) -> Response:
    found = SCHEMAS.get(schema_id)
    if found is None:
        raise NotFound(f"Schema {schema_id} not found.")
    return scim_json(found.to_scim(base_url()))
