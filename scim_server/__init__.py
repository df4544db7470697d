"""SCIM 2.0 provisioning server: the canonical directory, with Graph sync to Microsoft 365."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from scim_server import config, sealing


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    # The data folder (the default SQLite file, the sandbox tenant, the key file):
    # SCIM_INSTANCE_PATH, else Flask's instance folder (./instance in a checkout).
    app = Flask(__name__, instance_path=config.instance_path(), instance_relative_config=True)
    settings = config.load(app.instance_path)
    sealing.check_key()
    app.config.update(settings.to_flask())
    if test_config:
        app.config.update(test_config)
    # A server database can drop idle connections (a SQLite file cannot), and an address
    # that does not answer fails in seconds rather than hanging start-up.
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": 10},
        }
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    from flask_migrate import Migrate

    from scim_server import health, logs, metrics
    from scim_server.api import register
    from scim_server.cli import register_commands
    from scim_server.db import db

    db.init_app(app)
    Migrate(app, db, directory=str(Path(__file__).parent / "migrations"), render_as_batch=True)
    metrics.register(app)  # first: its hooks time every request, a refused one too
    register(app)
    app.register_blueprint(health.bp)
    from scim_server.portal import bp as portal

    app.register_blueprint(portal)
    from scim_server.request_body import guard_request_body

    # A garbled body (malformed chunks, cut short) is a 400, not the WSGI server's exception.
    app.wsgi_app = guard_request_body(app.wsgi_app)  # type: ignore[method-assign,assignment]
    proxies = app.config["SCIM_TRUSTED_PROXIES"]
    if proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client's address (the portal's rate limits) and the public scheme and host
        # (SCIM's meta.location) come from the X-Forwarded-* headers these proxies set.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies
        )
    from scim_server import accesslog
    from scim_server.httplimits import HttpLimits

    # Below Flask: over-long request lines, headers and bodies get SCIM errors too.
    app.wsgi_app = HttpLimits(  # type: ignore[method-assign]
        app.wsgi_app, app.config["MAX_CONTENT_LENGTH"]
    )
    if app.config.get("SCIM_ACCESS_LOG", True):
        accesslog.install(app)
    from scim_server import entra

    entra.install(app)  # Entra provisioning's JWTs, with SCIM_ENTRA_TENANT_ID
    register_commands(app)
    logs.configure(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    return app
