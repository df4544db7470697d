"""The WSGI layer below Flask. Limits on a request's size, checked before Flask sees it,
each refused in the SCIM error format (RFC 7644 §3.12) instead of an HTTP server's bare
status:

- the request target (path and query) over `MAX_TARGET_BYTES`: 414;
- the header fields over `MAX_HEADER_BYTES` in all: 431 (RFC 6585 §5);
- a Content-Length over the largest body allowed (`SCIM_MAX_REQUEST_SIZE`): 413, before a
  byte of the body is read. A body without a Content-Length (chunked) is cut off at the same
  size by werkzeug, and Flask's handler answers the same 413.

These are below what the HTTP server itself accepts (`serve` gives granian a read buffer of
`SERVER_BUFFER_BYTES`), so every over-limit request that a client can really send gets
SCIM JSON; beyond the server's buffer, or for bytes that are not HTTP, the server answers
with a bare status or closes the connection.

It also hands the server each response body in one piece (`buffered`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from scim_server.errors import HeadersTooLarge, PayloadTooLarge, ScimError, UriTooLong

MAX_TARGET_BYTES = 8 * 1024  # as nginx's default large_client_header_buffers
MAX_HEADER_BYTES = 64 * 1024
SERVER_BUFFER_BYTES = 1024 * 1024

# Set on a refused request: the access log reads it (Flask never ran to set g.request_id).
REQUEST_ID_KEY = "scim_server.request_id"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_REASONS = {413: "Content Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large"}
# What a path may hold unescaped (RFC 3986 pchar and "/"): the rest is counted as %XX.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def request_target(environ: dict[str, Any]) -> str:
    """The request target (path and query) as sent, or as near as PEP 3333 allows: servers
    that do not pass it raw (granian) give PATH_INFO decoded, which is escaped again here."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = quote(path or "/", safe=_PATH_SAFE, encoding="latin-1", errors="replace")
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


def header_bytes(environ: dict[str, Any]) -> int:
    """The size of the header fields ("Name: value" and CRLF each), from the environ."""
    size = 0
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            size += len(key) - 5 + len(value) + 4
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            size += len(key) + len(value) + 4
    return size


def refusal(environ: dict[str, Any], max_body: int | None) -> ScimError | None:
    if len(request_target(environ)) > MAX_TARGET_BYTES:
        return UriTooLong(f"The request target is longer than {MAX_TARGET_BYTES} bytes.")
    if header_bytes(environ) > MAX_HEADER_BYTES:
        return HeadersTooLarge(f"The header fields are larger than {MAX_HEADER_BYTES} bytes.")
    length = environ.get("CONTENT_LENGTH") or ""
    if max_body is not None and length.isdigit() and int(length) > max_body:
        return PayloadTooLarge("The request body is too large.")
    return None


def buffered(body: Iterable[bytes]) -> list[bytes]:
    """The response body in one piece. No view streams its answer (each is built whole in
    memory), and a list lets the server write it at once: granian iterates any other body
    chunk by chunk, back and forth between Rust and Python."""
    if isinstance(body, list):
        return body
    try:
        return [b"".join(body)]
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


class HttpLimits:
    """WSGI middleware: refuses an over-limit request before the application runs."""

    def __init__(self, app: WsgiApp, max_body: int | None) -> None:
        self.app = app
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        error = refusal(environ, self.max_body)
        if error is None:
            return buffered(self.app(environ, start_response))
        request_id = f"{random.getrandbits(128):032x}"
        environ[REQUEST_ID_KEY] = request_id
        body = json.dumps(error.to_scim(), separators=(",", ":")).encode()
        start_response(
            f"{error.status} {_REASONS[error.status]}",
            [
                ("Content-Type", "application/scim+json"),
                ("Content-Length", str(len(body))),
                ("X-Request-Id", request_id),
                # The body (if any) is left unread: the connection cannot carry another request.
                ("Connection", "close"),
            ],
        )
        return [body]
