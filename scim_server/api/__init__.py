"""HTTP layer: blueprints under /scim/v2 and the cross-cutting concerns (auth, content type,
errors) in one place."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, g, request
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from scim_server import auth, entra, throttle
from scim_server.api.http import is_write_request, scim_json
from scim_server.errors import (
    Forbidden,
    InternalError,
    InvalidValue,
    PayloadTooLarge,
    ScimError,
    TooManyRequests,
    Unauthorized,
)
from scim_server.logs import request_id

log = logging.getLogger("scim_server.api")
PREFIX = "/scim/v2"


def register(app: Flask) -> None:
    from scim_server.api import bulk, discovery, resources, token_endpoint

    app.register_blueprint(resources.bp, url_prefix=PREFIX)
    app.register_blueprint(discovery.bp, url_prefix=PREFIX)
    app.register_blueprint(bulk.bp, url_prefix=PREFIX)
    app.register_blueprint(token_endpoint.bp)

    @app.before_request
    def _authenticate() -> Response | None:
        # The client's id when it is safe to log and to store, else a new one (logs.request_id).
        g.request_id = request_id(request.headers.get("X-Request-Id"))
        if not request.path.startswith(PREFIX):
            return None
        config = current_app.config
        try:
            principal = auth.authenticate(
                request.headers.get("Authorization"),
                config["SCIM_TOKEN_CACHE_SECONDS"],
                address=throttle.client_address(),
                brake=auth.Brake.of(config),
                jwt_verifier=current_app.extensions.get(entra.EXTENSION),
            )
        except auth.AuthError as exc:
            # RFC 7235 §3.1 / RFC 6750 §3: 401 with a challenge; SCIM's error body.
            response = scim_json(Unauthorized(exc.description).to_scim(), 401)
            response.headers["WWW-Authenticate"] = exc.challenge()
            return response
        except auth.Locked as exc:
            # RFC 6585 §4: 429 with Retry-After.
            detail = "Too many failed authentications from this address; try again later."
            response = scim_json(TooManyRequests(detail).to_scim(), 429)
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if principal.read_only and is_write_request():
            return scim_json(Forbidden("This token is read-only.").to_scim(), 403)
        g.principal = principal
        return None

    @app.after_request
    def _request_id(response: Response) -> Response:
        response.headers.setdefault("X-Request-Id", g.get("request_id", ""))
        return response

    @app.errorhandler(ScimError)
    def _scim_error(exc: ScimError) -> Response:
        return scim_json(exc.to_scim(), exc.status)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            body = PayloadTooLarge("The request body is too large.").to_scim()
        else:
            body = ScimError(exc.description or exc.name).to_scim()
            body["status"] = str(status)
            body.pop("scimType", None)
            if status == 400:
                body["scimType"] = "invalidSyntax"
        response = scim_json(body, status)
        allow = exc.get_response().headers.get("Allow") if status == 405 else None
        if allow:
            response.headers["Allow"] = allow
        return response

    @app.errorhandler(DataError)
    def _data_error(exc: DataError) -> Response:
        # A value the database refuses (a last line of defence: validation should catch it).
        # Its transaction (db.begin) rolled back as the error left it.
        log.warning("database refused a value, request_id=%s: %s", g.get("request_id"), exc.orig)
        return scim_json(InvalidValue("A value is not acceptable to the directory.").to_scim(), 400)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Never a traceback to the client: log it under the request id and answer plainly.
        rid = g.get("request_id", "-")
        log.exception("unhandled error, request_id=%s", rid)
        err = InternalError(f"Internal server error. Request id: {rid}.")
        body: dict[str, Any] = err.to_scim()
        return scim_json(body, 500)
