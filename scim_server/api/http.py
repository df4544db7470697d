"""Small HTTP helpers shared by the views: SCIM JSON responses, query parameters."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app, request

from scim_server.errors import InvalidSyntax, InvalidValue

SCIM_CONTENT_TYPE = "application/scim+json"


def scim_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        content_type=_content_type(),
    )
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


_CONTENT_TYPES: dict[str, str] = {}


def _content_type() -> str:
    """application/scim+json (RFC 7644 §3.1), unless the client asks for application/json
    only: OneLogin's SCIM connector documents that it wants application/json answers."""
    # A client sends the same Accept header every time: parse each one once.
    accept = request.environ.get("HTTP_ACCEPT", "")
    found = _CONTENT_TYPES.get(accept)
    if found is None:
        offered = (SCIM_CONTENT_TYPE, "application/json")
        best = request.accept_mimetypes.best_match(offered, default=SCIM_CONTENT_TYPE)
        found = "application/json" if best == "application/json" else SCIM_CONTENT_TYPE
        if len(_CONTENT_TYPES) >= 256:  # client input: keep the map small
            _CONTENT_TYPES.clear()
        _CONTENT_TYPES[accept] = found
    return found


_BASE_URLS: dict[tuple[str, str], str] = {}


def base_url() -> str:
    # A pure function of scheme and host; werkzeug's host_url costs ~10 µs a request.
    key = (request.scheme, request.host)
    url = _BASE_URLS.get(key)
    if url is None:
        if len(_BASE_URLS) >= 256:  # Host headers are client input: keep the map small
            _BASE_URLS.clear()
        url = _BASE_URLS[key] = request.host_url.rstrip("/") + "/scim/v2"
    return url


def json_body() -> Any:
    raw = request.get_data(cache=True)
    if not raw:
        raise InvalidSyntax("The request body is empty.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidSyntax("The request body is not valid JSON.") from None


def int_param(raw: Any, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise InvalidValue(f"{name} must be an integer, got {raw!r}.") from None


def paging(start_raw: Any, count_raw: Any) -> tuple[int, int]:
    """RFC 7644 §3.4.2.4: startIndex < 1 means 1; count < 0 means 0; count is capped at the
    advertised maximum page size."""
    start = int_param(start_raw, "startIndex") or 1
    count = int_param(count_raw, "count")
    maximum = int(current_app.config["SCIM_MAX_PAGE_SIZE"])
    if count is None:
        count = int(current_app.config["SCIM_DEFAULT_PAGE_SIZE"])
    return max(start, 1), min(max(count, 0), maximum)
