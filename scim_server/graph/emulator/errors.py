"""Graph and Entra errors as types, each rendered in the body its service uses.

GraphError                         Graph's body: {"error": {code, message, innerError, details}}
├── BadRequest (400 Request_BadRequest)
│   ├── ObjectConflict (400, details[0].code ObjectConflict)
│   └── UnsupportedQuery (400 Request_UnsupportedQuery)
├── InvalidAuthenticationToken (401)
├── AuthorizationDenied (403 Authorization_RequestDenied)
├── NotFound (404 Request_ResourceNotFound)
├── MethodNotAllowed (405)
├── FailedDependency (424, a batch part whose dependency failed)
├── TooManyRequests (429, carries Retry-After)
└── ServiceError (5xx, injected faults and unexpected errors)

OAuthError                         Entra's token endpoint body: {error, error_description "AADSTS…",
                                   error_codes, timestamp, trace_id, correlation_id, error_uri}

Graph: https://learn.microsoft.com/en-us/graph/errors
Entra: https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


def utc_now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


class GraphError(Exception):
    status: int = 400
    code: str = "Request_BadRequest"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details or []
        self.headers = headers or {}

    def body(self, request_id: str, client_request_id: str | None) -> dict[str, Any]:
        inner: dict[str, str] = {"date": utc_now_iso(), "request-id": request_id}
        inner["client-request-id"] = client_request_id or request_id
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": inner,
                "details": self.details,
            }
        }


class BadRequest(GraphError):
    status = 400
    code = "Request_BadRequest"


class ObjectConflict(BadRequest):
    """Graph answers a uniqueness violation with 400, not 409, and names it in details."""

    def __init__(self, prop: str) -> None:
        super().__init__(
            f"Another object with the same value for property {prop} already exists.",
            details=[{"target": prop, "code": "ObjectConflict"}],
        )


class UnsupportedQuery(BadRequest):
    code = "Request_UnsupportedQuery"


class InvalidAuthenticationToken(GraphError):
    status = 401
    code = "InvalidAuthenticationToken"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm=""'})


class AuthorizationDenied(GraphError):
    status = 403
    code = "Authorization_RequestDenied"


class NotFound(GraphError):
    status = 404
    code = "Request_ResourceNotFound"


def resource_not_found(object_id: str) -> NotFound:
    return NotFound(
        f"Resource '{object_id}' does not exist or one of its queried reference-property "
        "objects are not present."
    )


class MethodNotAllowed(GraphError):
    status = 405
    code = "Request_BadRequest"


class FailedDependency(GraphError):
    status = 424
    code = "FailedDependency"


class TooManyRequests(GraphError):
    status = 429
    code = "TooManyRequests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "Too many requests. Please try again later.",
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


class ServiceError(GraphError):
    status = 500
    code = "generalException"


def unexpected_error() -> ServiceError:
    """What an unexpected exception becomes: 500 generalException (Graph's errors page)."""
    return ServiceError("An unspecified error has occurred.")


class OAuthError(Exception):
    """An Entra token-endpoint error: `error` is the OAuth 2.0 code, `aadsts` Entra's number."""

    def __init__(self, status: int, error: str, aadsts: int, description: str) -> None:
        super().__init__(f"AADSTS{aadsts}: {description}")
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.description = description

    def body(self) -> dict[str, Any]:
        trace_id = str(uuid.uuid4())
        correlation_id = str(uuid.uuid4())
        timestamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": (
                f"AADSTS{self.aadsts}: {self.description} Trace ID: {trace_id} "
                f"Correlation ID: {correlation_id} Timestamp: {timestamp}"
            ),
            "error_codes": [self.aadsts],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.aadsts}",
        }
