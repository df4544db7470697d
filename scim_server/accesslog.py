"""The access log, written by the application (not the HTTP server): one line per request on
the `scim_server.access` logger at INFO, in the same way under `serve` and under any WSGI
server that runs `wsgi:app`.

The message is a combined-log line without its timestamp (the log record has one)::

    127.0.0.1 - entra "GET /scim/v2/Users?count=1 HTTP/1.1" 200 412 "-" "Okta/1.0" 1.84 ms 5f0c…

(the user field is the name of the bearer token that authenticated; the last, the request
id, as in the X-Request-Id header). The same facts travel as
fields of the record (`extra=`), for a structured formatter: `request_id`, `method`, `path`,
`route`, `status`, `duration_ms`, `token_name`, `remote_addr`, `user_agent`.

Credentials never reach it: an activation link's token (`/portal/activate/<token>`) is
replaced by `[redacted]` in the path and the referer, and no header but the user agent and
the referer is read (never Authorization).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, g, request

from scim_server.httplimits import REQUEST_ID_KEY, request_target
from scim_server.logs import redact  # activation links and bearer tokens, as every log line

log = logging.getLogger("scim_server.access")

# What the Flask side of a request leaves for the log line, in the WSGI environ (the
# request's context is gone by the time the server has sent the body).
ENVIRON_KEY = "scim_server.access"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


_UNPRINTABLE = re.compile(r'[\x00-\x1f\x7f"\\]')


def _clean(text: str) -> str:
    """One line, its quotes escaped: a client cannot forge a log line."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def install(app: Flask) -> None:
    """Wrap `app`'s WSGI callable in the access log, and record at the end of each request
    what only Flask knows: the request id, the route and the token's name."""

    @app.teardown_request
    def _remember(_exc: BaseException | None) -> None:
        principal = g.get("principal")
        request.environ[ENVIRON_KEY] = {
            "request_id": g.get("request_id"),
            "route": request.url_rule.rule if request.url_rule is not None else None,
            "token_name": getattr(principal, "name", None),
        }

    app.wsgi_app = AccessLog(app.wsgi_app)  # type: ignore[method-assign]


class AccessLog:
    """WSGI middleware: logs each request once its response has been sent (or abandoned)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        seen: dict[str, Any] = {}

        def recording_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            seen["status"] = status
            seen["headers"] = headers
            return start_response(status, headers, *exc)

        try:
            body = self.app(environ, recording_start_response)
        except BaseException:
            seen.setdefault("status", "500 Internal Server Error")
            _write(environ, seen, started)
            raise
        if isinstance(body, list):  # built whole (scim_server.httplimits): done now
            _write(environ, seen, started)
            return body
        return _LoggedBody(body, lambda: _write(environ, seen, started))


class _LoggedBody:
    """The response body, passed through; the line is written when the server closes it
    (PEP 3333: the server calls close() once the body is sent, or the client went away)."""

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]) -> None:
        self._body = body
        self._on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


def _write(environ: dict[str, Any], seen: dict[str, Any], started: float) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    duration_ms = (time.perf_counter() - started) * 1000
    facts = environ.get(ENVIRON_KEY) or {}
    status_text = str(seen.get("status", "500"))
    status = int(status_text.split(" ", 1)[0]) if status_text[:3].isdigit() else 500
    method = environ.get("REQUEST_METHOD", "-")
    path = _target(environ)
    remote = environ.get("REMOTE_ADDR") or "-"
    user_agent = environ.get("HTTP_USER_AGENT")
    referer = _clean(redact(environ.get("HTTP_REFERER") or "-"))
    token_name = facts.get("token_name")
    length = next(
        (v for k, v in seen.get("headers", ()) if k.lower() == "content-length"),
        "-",
    )
    protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
    request_id = facts.get("request_id") or environ.get(REQUEST_ID_KEY)
    log.info(
        '%s - %s "%s %s %s" %d %s "%s" "%s" %.2f ms %s',
        remote,
        token_name or "-",
        method,
        path,
        protocol,
        status,
        length,
        referer,
        _clean(user_agent or "-"),
        duration_ms,
        request_id or "-",
        extra={
            "request_id": request_id,
            "method": method,
            "path": path,
            "route": facts.get("route"),
            "status": status,
            "duration_ms": round(duration_ms, 3),
            "token_name": token_name,
            "remote_addr": environ.get("REMOTE_ADDR"),
            "user_agent": user_agent,
        },
    )


def _target(environ: dict[str, Any]) -> str:
    """The request target as the client sent it (path and query), redacted."""
    return _clean(redact(request_target(environ)))
