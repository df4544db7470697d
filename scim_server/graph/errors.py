"""Graph failures as types. The client never retries by itself: the sync engine decides.

GraphError                  status, code, message, request_id, details (Graph's error body)
├── Throttled               429; `retry_after` seconds from Retry-After, None when absent
├── Transient               5xx, timeouts, dropped connections, an unreadable answer
│   └── FailedDependency    424: a $batch part whose dependency failed; it never ran
├── NotFound                404 (Request_ResourceNotFound); right after a create, replication lag
├── Conflict                ObjectConflict (a duplicate userPrincipalName), or a member that is
│                           already there ("already exist", the one case where Graph says it only
│                           in the message)
├── Invalid                 400 validation: password complexity, a UPN domain that is not verified
├── AuthError               401/403, and token failures; names the missing permission where
│                           Graph says it
└── TlsError                the server's certificate is not trusted (GRAPH_CA_BUNDLE): fix the
                            configuration; retrying cannot help

Error body (https://learn.microsoft.com/graph/errors):
`{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"},
"details": [{"code", "message", "target"}]}}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests


@dataclass(frozen=True)
class Detail:
    code: str
    message: str = ""
    target: str = ""


class GraphError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        request_id: str | None = None,
        details: tuple[Detail, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.details = details

    def __str__(self) -> str:
        where = f" (request-id {self.request_id})" if self.request_id else ""
        head = f"{self.status} {self.code}".strip() if self.status else self.code
        return f"{head}: {self.message}{where}" if head else f"{self.message}{where}"

    def detail_codes(self) -> set[str]:
        return {d.code for d in self.details}


class Throttled(GraphError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class Transient(GraphError):
    pass


class FailedDependency(Transient):
    pass


class NotFound(GraphError):
    pass


class TlsError(GraphError):
    pass


class Conflict(GraphError):
    pass


class Invalid(GraphError):
    pass


class AuthError(GraphError):
    def __init__(self, message: str, *, permission: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.permission = permission


# Graph names the missing permission in its message, e.g. "... Missing scope permissions on the
# request. API requires one of 'User.ReadWrite.All, Directory.ReadWrite.All'."
_PERMISSION = re.compile(r"requires one of '([^']+)'|permissions? (?:is |are )?'?([\w.]+\.All)")


def retry_after(raw: str | None) -> float | None:
    """Retry-After in seconds (Graph sends seconds), or None when absent or unreadable."""
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return None


def error_body(payload: Any) -> tuple[str, str, str | None, tuple[Detail, ...]]:
    """(code, message, request id, details) from a Graph error body, tolerating anything."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return "", "", None, ()
    inner = error.get("innerError") or error.get("innererror") or {}
    request_id = inner.get("request-id") if isinstance(inner, dict) else None
    details = tuple(
        Detail(str(d.get("code", "")), str(d.get("message", "")), str(d.get("target", "")))
        for d in error.get("details") or ()
        if isinstance(d, dict)
    )
    return str(error.get("code", "")), str(error.get("message", "")), request_id, details


def from_response(response: requests.Response, *, member_add: bool = False) -> GraphError:
    """The typed error for a failed Graph response. `member_add`: the request added a group
    member, where an "already exist" 400 means the member is already there."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    return classify(
        response.status_code,
        payload,
        response.headers,
        reason=response.reason or "",
        member_add=member_add,
    )


def classify(
    status: int,
    payload: Any,
    headers: Mapping[str, str],
    *,
    reason: str = "",
    member_add: bool = False,
) -> GraphError:
    """The typed error for a status and an error body (a response, or one part of a $batch)."""
    code, message, request_id, details = error_body(payload)
    lowered = {k.lower(): v for k, v in headers.items()}
    request_id = request_id or lowered.get("request-id")
    message = message or reason or f"HTTP {status}"
    kw: dict[str, Any] = {
        "status": status,
        "code": code,
        "request_id": request_id,
        "details": details,
    }
    detail_codes = {d.code for d in details}
    if status == 429:
        return Throttled(message, retry_after=retry_after(lowered.get("retry-after")), **kw)
    if status >= 500:
        return Transient(message, **kw)
    if status == 424:
        return FailedDependency(message, **kw)
    if status in (401, 403):
        found = _PERMISSION.search(message)
        permission = (found.group(1) or found.group(2)) if found else None
        return AuthError(message, permission=permission, **kw)
    if status == 404:
        return NotFound(message, **kw)
    if "ObjectConflict" in detail_codes or status == 409:
        return Conflict(message, **kw)
    # Graph gives no code for a member that is already there: only this message
    # (https://learn.microsoft.com/graph/api/group-post-members).
    if member_add and status == 400 and "already exist" in message:
        return Conflict(message, **kw)
    return Invalid(message, **kw)
