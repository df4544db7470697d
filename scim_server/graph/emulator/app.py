"""The emulator's WSGI app: identity endpoints, Graph under /v1.0, and (with --control) the
test-only endpoints under /_emulator/ (state, faults, the request log, configuration, and
Entra provisioning tokens signed with the published keys). A middleware in front takes
injected faults and writes the request log."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_plus

from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import HTTPException

from scim_server.graph.emulator.control import Fault, checked_number
from scim_server.graph.emulator.errors import (
    AuthorizationDenied,
    GraphError,
    InvalidAuthenticationToken,
    MethodNotAllowed,
    NotFound,
    OAuthError,
    ServiceError,
    unexpected_error,
)
from scim_server.graph.emulator.graph_api import (
    GraphRequest,
    GraphResponse,
    dispatch,
    fault_error,
    parse_json,
    run_batch,
)
from scim_server.graph.emulator.identity import create_identity_blueprint
from scim_server.graph.emulator.state import MAX_CLOCK_ADVANCE, Emulator
from scim_server.graph.emulator.tokens import TokenError

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _graph_response(response: GraphResponse) -> Response:
    body = "" if response.body is None else json.dumps(response.body)
    out = Response(body, status=response.status, headers=response.headers)
    if response.body is not None:
        out.mimetype = "application/json"
        out.headers["Content-Type"] = "application/json;odata.metadata=minimal;charset=utf-8"
    return out


def _graph_blueprint(em: Emulator) -> Blueprint:
    bp = Blueprint("graph", __name__, url_prefix="/v1.0")

    def authenticate(request_id: str) -> str:
        """The app id of a valid bearer token issued by this emulator, or 401/403."""
        header = request.headers.get("Authorization", "")
        if not header:
            raise InvalidAuthenticationToken("Access token is empty.")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise InvalidAuthenticationToken("Access token validation failure.")
        try:
            claims = em.issuer.verify(token.strip())
        except TokenError as error:
            raise InvalidAuthenticationToken(str(error)) from None
        if claims.get("tid") != em.tenant.tenant_id:
            raise InvalidAuthenticationToken("Access token validation failure. Invalid tenant.")
        if claims.get("idtyp") != "app":
            # The project's client acts as an application; delegated calls are not emulated.
            raise AuthorizationDenied("Insufficient privileges to complete the operation.")
        return str(claims["appid"])

    def error_response(error: GraphError, request_id: str) -> Response:
        client_request_id = request.headers.get("client-request-id")
        response = GraphResponse(
            error.status, error.body(request_id, client_request_id), dict(error.headers)
        )
        response.headers["request-id"] = request_id
        return _graph_response(response)

    def graph_request(path: str, app_id: str, request_id: str) -> GraphRequest:
        body = (
            parse_json(request.get_data()) if request.method in ("POST", "PATCH", "PUT") else None
        )
        return GraphRequest(
            method=request.method,
            path=path,
            args=request.args.to_dict(),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            app_id=app_id,
            request_id=request_id,
        )

    @bp.route("/$batch", methods=["POST"], provide_automatic_options=False)
    def batch() -> Response:
        request_id = str(uuid.uuid4())
        try:
            app_id = authenticate(request_id)
            body = parse_json(request.get_data())

            def log_part(part: GraphRequest, status: int) -> None:
                em.log.add(
                    method=part.method,
                    path=f"/v1.0{part.path}",
                    status=status,
                    request_id=part.request_id,
                    batch_request_id=request_id,
                    part_id=part.part_id,
                    depends_on=part.depends_on,
                )

            response = run_batch(em, body, app_id, log_part)
        except GraphError as error:
            return error_response(error, request_id)
        response.headers["request-id"] = request_id
        return _graph_response(response)

    @bp.route(
        "/<path:path>",
        methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
        provide_automatic_options=False,
    )
    def graph(path: str) -> Response:
        request_id = str(uuid.uuid4())
        try:
            app_id = authenticate(request_id)
            graph_req = graph_request(f"/{path}", app_id, request_id)
        except GraphError as error:
            return error_response(error, request_id)
        return _graph_response(dispatch(em, graph_req))

    return bp


def _control_blueprint(em: Emulator) -> Blueprint:
    bp = Blueprint("control", __name__, url_prefix="/_emulator")

    def bad(message: str) -> Response:
        return Response(json.dumps({"error": message}), 400, mimetype="application/json")

    @bp.get("/state")
    def state() -> Any:
        return em.snapshot()

    @bp.get("/requests")
    def requests_log() -> Any:
        return {"value": em.log.entries()}

    @bp.get("/faults")
    def faults() -> Any:
        return {"value": em.faults.pending()}

    @bp.post("/faults")
    def add_fault() -> Any:
        try:
            fault = Fault.from_json(request.get_json(silent=True))
        except (TypeError, ValueError) as error:
            return bad(str(error))
        em.faults.add(fault)
        return {"value": em.faults.pending()}, 201

    @bp.delete("/faults")
    def clear_faults() -> Any:
        em.faults.clear()
        return Response(status=204)

    @bp.get("/mail")
    def sent_mail() -> Any:
        """What sendMail accepted, oldest first: each with its mailbox, recipients and the
        message as sent (`message.body.content` holds the text)."""
        return {"value": em.outbox.messages()}

    @bp.delete("/mail")
    def clear_mail() -> Any:
        em.outbox.clear()
        return Response(status=204)

    @bp.post("/reset")
    def reset() -> Any:
        em.reset()
        return Response(status=204)

    @bp.post("/provisioning-token")
    def provisioning_token() -> Any:
        """A JWT as Entra's provisioning service sends it (RS256, the tenant's published key),
        with optional flaws: `expires_in` and `not_before_in` (seconds from now, may be
        negative), `audience`, `issuer`, `unpublished_key`, `algorithm` ("HS256")."""
        data = request.get_json(silent=True)
        data = {} if data is None else data
        if not isinstance(data, dict):
            return bad("a JSON object is needed")
        options: dict[str, Any] = {}
        for name in ("expires_in", "not_before_in"):
            if name in data:
                if type(data[name]) is not int or abs(data[name]) > 10**8:
                    return bad(f"{name} must be an integer")
                options[name] = data[name]
        for name in ("audience", "issuer"):
            if name in data:
                if not isinstance(data[name], str):
                    return bad(f"{name} must be a string")
                options[name] = data[name]
        if "unpublished_key" in data:
            options["unpublished_key"] = data["unpublished_key"] is True
        if "algorithm" in data:
            if data["algorithm"] not in ("RS256", "HS256"):
                return bad("algorithm must be RS256 or HS256")
            options["algorithm"] = data["algorithm"]
        unknown = sorted(set(data) - {*options, "unpublished_key"})
        if unknown:
            return bad(f"unknown fields: {', '.join(unknown)}")
        token = em.signing_keys.provisioning_token(em.tenant.tenant_id, **options)
        return {"token": token}

    @bp.post("/signing-keys/rotate")
    def rotate_signing_keys() -> Any:
        """A new signing key, published beside the older ones, signs from now on."""
        return {"kid": em.signing_keys.rotate()}

    @bp.post("/clock")
    def advance_clock() -> Any:
        """{"advance": seconds}: the tenant's clock moves on at once (tests wait on nothing)."""
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or set(data) != {"advance"}:
            return bad('{"advance": seconds} is needed')
        try:
            seconds = checked_number(data, "advance", 0.0, MAX_CLOCK_ADVANCE)
        except (TypeError, ValueError) as error:
            return bad(str(error))
        return {"offset": em.advance(seconds)}

    @bp.get("/config")
    def config() -> Any:
        return em.settings()

    @bp.post("/config")
    def set_config() -> Any:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return bad("a JSON object is needed")
        try:
            return em.configure(data)
        except (TypeError, ValueError) as error:
            return bad(str(error))

    return bp


SECRET_PARAMETERS = {
    "password",
    "client_secret",
    "client_assertion",
    "code",
    "refresh_token",
    "access_token",
    "id_token",
    "assertion",
}


def _is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_PARAMETERS or any(
        word in lowered for word in ("password", "secret", "assertion")
    )


def loggable_query(path: str, query: str) -> str:
    """The query string as the request log keeps it: none at all on the identity endpoints
    (a token request may carry credentials there), elsewhere each parameter named like a
    secret with its value replaced by REDACTED; the rest is kept as sent."""
    if not query or not (path.startswith("/v1.0") or path.startswith("/_emulator/")):
        return ""
    pieces = []
    for piece in query.split("&"):
        name = piece.partition("=")[0]
        pieces.append(f"{name}=REDACTED" if _is_secret(unquote_plus(name)) else piece)
    return "&".join(pieces)


class FaultsAndLog:
    """WSGI middleware: takes queued faults for each request (but /_emulator/) and logs it."""

    def __init__(self, app: WSGIApp, em: Emulator) -> None:
        self.app = app
        self.em = em

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        query = loggable_query(path, environ.get("QUERY_STRING", ""))
        entry: dict[str, Any] = {"method": method, "path": path, "query": query}
        if path.startswith("/_emulator/"):
            return self.app(environ, start_response)
        fault = self.em.faults.take(method, path)
        if fault is not None and fault.kind != "status":
            return self._fault(fault, environ, start_response, entry)
        if fault is not None:
            return self._status_fault(fault, path, start_response, entry)

        def logging_start_response(status: str, headers: list[tuple[str, str]], *a: Any) -> Any:
            entry["status"] = int(status.split()[0])
            entry["request_id"] = dict(headers).get("request-id")
            self.em.log.add(**entry)
            return start_response(status, headers, *a)

        return self.app(environ, logging_start_response)

    def _fault(
        self, fault: Fault, environ: dict[str, Any], start_response: StartResponse, entry: Any
    ) -> Iterable[bytes]:
        if fault.kind == "drop":
            self.em.log.add(**entry, status=None, fault="drop")
            sock = environ.get("werkzeug.socket")
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            # werkzeug's server treats a ConnectionError as a client that went away.
            raise ConnectionResetError("connection dropped by an injected fault")
        started = time.monotonic()
        self.em.stopping.wait(fault.seconds)
        entry.update(status=504, fault="timeout", held=round(time.monotonic() - started, 3))
        self.em.log.add(**entry)
        error = ServiceError("Injected timeout.", code="gatewayTimeout", status=504)
        return self._send(error, start_response)

    def _status_fault(
        self, fault: Fault, path: str, start_response: StartResponse, entry: Any
    ) -> Iterable[bytes]:
        headers: dict[str, str] = {}
        if fault.status in (429, 503) or fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after or 1)
        self.em.log.add(**entry, status=fault.status, fault="status")
        if not path.startswith("/v1.0"):
            oauth = OAuthError(fault.status, "temporarily_unavailable", 90033, "Injected fault.")
            body = json.dumps(oauth.body()).encode()
            start_response(
                f"{fault.status} FAULT",
                [("Content-Type", "application/json"), *headers.items()],
            )
            return [body]
        return self._send(fault_error(fault, headers), start_response)

    @staticmethod
    def _send(error: GraphError, start_response: StartResponse) -> Iterable[bytes]:
        request_id = str(uuid.uuid4())
        body = json.dumps(error.body(request_id, None)).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("request-id", request_id),
            *error.headers.items(),
        ]
        start_response(f"{error.status} ERROR", headers)
        return [body]


def _error_response(error: GraphError) -> Response:
    request_id = str(uuid.uuid4())
    body = error.body(request_id, request.headers.get("client-request-id"))
    response = GraphResponse(error.status, body, {**error.headers, "request-id": request_id})
    return _graph_response(response)


def _register_error_handlers(app: Flask) -> None:
    """Graph's error body, never Flask's HTML page: for unknown paths, other methods, and any
    exception nothing else caught (500, with the traceback in the log)."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 404:
            error: GraphError = NotFound(f"Resource not found for the segment '{request.path}'.")
        elif status == 405:
            error = MethodNotAllowed("Specified HTTP method is not allowed for the request target.")
        elif status >= 500:
            error = unexpected_error()
        else:
            error = GraphError(exc.description or "Bad request.", code="BadRequest", status=status)
        return _error_response(error)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _error_response(unexpected_error())


def create_emulator_app(em: Emulator) -> Flask:
    app = Flask("scim_server.graph.emulator")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    _register_error_handlers(app)
    app.register_blueprint(create_identity_blueprint(em))
    app.register_blueprint(_graph_blueprint(em))
    if em.options.control:
        app.register_blueprint(_control_blueprint(em))
    app.wsgi_app = FaultsAndLog(app.wsgi_app, em)  # type: ignore[method-assign]
    return app
