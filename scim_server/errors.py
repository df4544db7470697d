"""SCIM errors as types (RFC 7644 §3.12). Each carries its status and scimType.

ScimError
├── BadRequest (400)          scimType given per case: invalidValue, invalidSyntax, …
│   ├── InvalidFilter (400 invalidFilter)
│   ├── InvalidPath (400 invalidPath)
│   ├── NoTarget (400 noTarget)
│   ├── InvalidValue (400 invalidValue)
│   ├── Mutability (400 mutability)
│   └── TooMany (400 tooMany)
├── Unauthorized (401)
├── Forbidden (403)
├── NotFound (404)
├── MethodNotAllowed (405)
├── Conflict (409 uniqueness)
├── PreconditionFailed (412)
├── PayloadTooLarge (413)
├── UriTooLong (414)
├── HeadersTooLarge (431)
├── UnsupportedMediaType (415)
├── TooManyRequests (429, with Retry-After: too many failed authentications)
├── InternalError (500, carries a request id, never a traceback)
└── NotImplementedScim (501)
"""

from __future__ import annotations

from typing import Any

from scim_server.scim.schema import ERROR_SCHEMA


class ScimError(Exception):
    status: int = 400
    scim_type: str | None = None

    def __init__(self, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if scim_type is not None:
            self.scim_type = scim_type

    def to_scim(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemas": [ERROR_SCHEMA],
            "status": str(self.status),  # RFC 7644 §3.12: a string
            "detail": self.detail,
        }
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


class BadRequest(ScimError):
    status = 400


class InvalidFilter(BadRequest):
    scim_type = "invalidFilter"


class InvalidPath(BadRequest):
    scim_type = "invalidPath"


class NoTarget(BadRequest):
    scim_type = "noTarget"


class InvalidValue(BadRequest):
    scim_type = "invalidValue"


class InvalidSyntax(BadRequest):
    scim_type = "invalidSyntax"


class Mutability(BadRequest):
    scim_type = "mutability"


class TooMany(BadRequest):
    scim_type = "tooMany"


class Unauthorized(ScimError):
    status = 401


class Forbidden(ScimError):
    status = 403


class NotFound(ScimError):
    status = 404


class MethodNotAllowed(ScimError):
    status = 405


class Conflict(ScimError):
    status = 409
    scim_type = "uniqueness"


class PreconditionFailed(ScimError):
    status = 412


class PayloadTooLarge(ScimError):
    status = 413


class UriTooLong(ScimError):
    status = 414


class HeadersTooLarge(ScimError):
    status = 431


class UnsupportedMediaType(ScimError):
    status = 415


class TooManyRequests(ScimError):
    status = 429


class InternalError(ScimError):
    status = 500


class NotImplementedScim(ScimError):
    status = 501
