"""Start-up checks of `serve` and `worker`: every setting, then the database, before
anything listens or claims a change. Each failure is a ConfigError of one line that names
the variable to fix (`scim-server` prints it and exits with status 2)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask import Flask
from sqlalchemy import literal, make_url, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from scim_server import config, mail, sealing
from scim_server.config import ConfigError
from scim_server.drift import settings as drift_settings
from scim_server.graph import settings as graph_settings
from scim_server.sync import settings as sync_settings

F = TypeVar("F", bound=Callable[..., Any])


def start_options(command: F) -> F:
    """`--migrate` and `--sandbox`, the start-up options `serve` and `worker` share."""
    command = click.option(
        "--sandbox",
        is_flag=True,
        help="the sync delivers to the sandbox tenant, the built-in emulator (GRAPH_SANDBOX=1)",
    )(command)
    return click.option(
        "--migrate",
        is_flag=True,
        help="upgrade the database schema first (else a schema behind this release is refused)",
    )(command)


def start(app: Flask, *, migrate: bool, sandbox: bool, needs_target: bool = True) -> None:
    """What `serve` and `worker` do before anything else: the flags into the environment
    (they win over it; child processes inherit it), every check, then the schema, upgraded
    or required at head. ConfigError for the first thing to fix."""
    from scim_server import dbschema

    if sandbox:
        os.environ["GRAPH_SANDBOX"] = "1"
    check(app, needs_target=needs_target)
    if migrate:
        dbschema.upgrade()
    else:
        dbschema.require_head()


SMTP_VARIABLES = (
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_FROM",
    "SMTP_STARTTLS",
    "SMTP_SSL",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_CA_BUNDLE",
)


def check(app: Flask, *, needs_target: bool = True) -> None:
    """Raise ConfigError for the first setting, or the database, that is not right.
    `needs_target`: the process delivers to Microsoft 365, so a tenant or the sandbox must
    be chosen (`serve --no-sync` needs neither)."""
    config.load(app.instance_path)  # SCIM_*, PORTAL_*, ACTIVATION_*, DATABASE_URL's scheme
    sealing.check_key()  # SCIM_ENCRYPTION_KEY
    sync_settings.from_env()  # M365_*
    drift_settings.from_env()  # M365_DRIFT*
    check_graph()
    check_mail()
    check_database(app.config["SQLALCHEMY_DATABASE_URI"], app)
    graph_settings.sandbox_requested()  # GRAPH_SANDBOX's value, whatever the process
    if needs_target:
        graph_settings.choose_target()


GRAPH_VARIABLES = (
    "GRAPH_CLIENT_ID",
    "GRAPH_CLIENT_SECRET",
    "GRAPH_CLIENT_CERT_PATH",
    "GRAPH_CLIENT_CERT_PASSPHRASE",
    "GRAPH_AUTHORITY_HOST",
    "GRAPH_URL",
    "GRAPH_CA_BUNDLE",
    "GRAPH_TIMEOUT_SECONDS",
)


def check_graph() -> None:
    """GRAPH_*: a whole tenant configuration, or none at all (the sandbox tenant). A tenant's
    settings without GRAPH_TENANT_ID are a mistake (a typo in its name, say) that would
    otherwise deliver to the sandbox in silence."""
    if graph_settings.from_env() is not None:
        return
    stray = [name for name in GRAPH_VARIABLES if os.environ.get(name, "").strip()]
    if stray:
        raise ConfigError(
            f"{stray[0]} is set but GRAPH_TENANT_ID is not: set GRAPH_TENANT_ID for a tenant, "
            "or unset the GRAPH_* settings to deliver to the sandbox tenant"
        )


def check_mail() -> None:
    """MAIL_TRANSPORT and what it needs. SMTP_* are optional (only activation emails need a
    relay), but once any is set they must make a whole, valid relay configuration; graph
    needs MAIL_SENDER, an address, and a tenant's GRAPH_* settings."""
    mail.rate_per_minute()
    if mail.transport_name() == "graph" or os.environ.get("MAIL_SENDER", "").strip():
        mail.settings_from_env()
        return
    if any(os.environ.get(name) for name in SMTP_VARIABLES):
        mail.SmtpSettings.from_env()


def check_database(url: str, app: Flask) -> None:
    """The database answers. Its address is named without the password."""
    from scim_server.db import begin

    where = make_url(url).render_as_string(hide_password=True)
    try:
        with app.app_context(), begin(write=False) as conn:
            conn.execute(select(literal(1)))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise ConfigError(f"DATABASE_URL: cannot reach the database {where}: {reason}") from None
    except SQLAlchemyError as exc:
        raise ConfigError(f"DATABASE_URL: cannot use the database {where}: {exc}") from None
