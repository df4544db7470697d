"""The `scim-server` command: serve, tokens, and the database (`scim-server db upgrade`)."""

from __future__ import annotations

import itertools
import json
import os
import sys
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from scim_server import preflight
from scim_server.dbschema import require_head
from scim_server.graph.emulator.command import graph_emulator
from scim_server.metrics import ENV as MULTIPROC_ENV
from scim_server.metrics import prepare_multiprocess_dir
from scim_server.sync import commands as sync_commands


@click.command("serve")
@click.option("--host", envvar="HOST", default="127.0.0.1", show_default=True, help="or HOST")
@click.option("--port", envvar="PORT", default=8080, show_default=True, type=int, help="or PORT")
@click.option(
    "--workers",
    default=lambda: max(os.cpu_count() or 1, 2),
    show_default="one per core, at least 2",
    type=int,
    help="HTTP worker processes (with PostgreSQL, requests wait on the network: more may help)",
)
@click.option(
    "--threads",
    default=None,
    type=int,
    show_default="granian's default, started on demand",
    help="at most this many requests in Python at once per worker",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="one line per request (logger scim_server.access)",
)
@click.option(
    "--sync/--no-sync",
    default=True,
    show_default=True,
    help="run a sync worker beside the server (turn off when `scim-server worker` runs apart)",
)
@preflight.start_options
@with_appcontext
def serve(
    host: str,
    port: int,
    workers: int,
    threads: int | None,
    access_log: bool,
    sync: bool,
    migrate: bool,
    sandbox: bool,
) -> None:
    """Serve SCIM over HTTP (granian) and run a sync worker, both supervised.

    The SCIM base URL is http://HOST:PORT/scim/v2. A sync worker that exits is started
    again (1 s, doubling to 30 s); after 5 exits within a minute, or when the HTTP server
    exits, serve stops and exits non-zero. SIGTERM and SIGINT stop both, gracefully."""
    from scim_server.serving import ACCESS_LOG_ENV, http_server_command
    from scim_server.supervisor import Child, Supervisor

    # Every setting, the database and the schema, before anything starts (ConfigError: one
    # line, exit 2). --no-sync needs no target.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    preflight.start(app, migrate=migrate, sandbox=sandbox, needs_target=sync)
    # prometheus-client's multiprocess mode: a directory the HTTP workers share, made before
    # they start (and removed when serve exits). The sync worker counts in the database.
    prepare_multiprocess_dir()
    http_env = {**os.environ, ACCESS_LOG_ENV: "1" if access_log else "0"}
    worker_env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    http = Child("HTTP server", http_server_command(host, port, workers, threads), http_env)
    worker = Child("sync worker", _sync_worker_command(), worker_env) if sync else None
    click.echo(f"SCIM base URL: http://{host}:{port}/scim/v2", err=True)
    sys.exit(Supervisor(http, worker).run())


def _sync_worker_command() -> list[str]:
    """`scim-server worker` with its own default concurrency, in a process of its own, so
    the HTTP workers stay free of its threads (and of the sandbox emulator's)."""
    return [sys.executable, "-c", "from scim_server.cli import main; main()", "worker"]


@click.group("token")
def token() -> None:
    """Manage bearer tokens (stored hashed; shown once at creation)."""


@token.command("create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="GET and search only; writes get 403.")
@with_appcontext
def token_create(name: str, read_only: bool) -> None:
    """Create a token and print it alone on the last line."""
    from scim_server import auth

    require_head()
    row, secret = auth.create_token(name, read_only=read_only)
    click.echo(
        f"Created token {row.id} {name!r}{' (read-only)' if read_only else ''}. It is shown once:",
        err=True,
    )
    click.echo(secret)


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def token_list(as_json: bool) -> None:
    """List the tokens (id, name, prefix, state); never a secret."""
    from scim_server import auth

    require_head()
    rows: list[dict[str, Any]] = [
        {
            "id": t.id,
            "name": t.name,
            "prefix": t.prefix,
            "read_only": t.read_only,
            "created_at": t.created_at.isoformat() + "Z",
            "revoked_at": t.revoked_at.isoformat() + "Z" if t.revoked_at else None,
        }
        for t in auth.list_tokens()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        state = "revoked" if r["revoked_at"] else ("read-only" if r["read_only"] else "read-write")
        click.echo(f"{r['id']:>4}  {r['name']:<24} {r['prefix']}…  {state:<10} {r['created_at']}")


@token.command("revoke")
@click.argument("ident")
@with_appcontext
def token_revoke(ident: str) -> None:
    """Revoke a token by id or by name."""
    from scim_server import auth

    require_head()
    row = auth.revoke_token(ident)
    if row is None:
        click.echo(f"No active token {ident!r}.", err=True)
        sys.exit(1)
    click.echo(f"Revoked token {row.id} {row.name!r}.")


@click.group("users")
def users() -> None:
    """Directory users' passwords."""


@users.command("set-temp-password")
@click.argument("user")
@with_appcontext
def set_temp_password(user: str) -> None:
    """Give USER (id or userName) a strong temporary password, printed once on the last line.

    The directory keeps its hash; the sync worker pushes it to the bound M365 account, which
    must change it at its next sign-in."""
    from scim_server import directory, passwords
    from scim_server.db import db

    require_head()
    user_id = directory.find_user_id(user)
    db.session.remove()
    if user_id is None:
        click.echo(f"No user {user!r}.", err=True)
        sys.exit(1)
    password = passwords.generate()
    directory.set_password(user_id, password, force_change=True)
    click.echo(
        f"Temporary password of {user} (shown once; it must be changed at the next "
        "Microsoft 365 sign-in):",
        err=True,
    )
    click.echo(password)


@users.command("send-activation")
@click.argument("user")
@click.option("--to", "to", help="send here instead of the user's alternateEmail")
@with_appcontext
def send_activation(user: str, to: str | None) -> None:
    """Email USER (id or userName), who has no password yet, a link to choose one.

    The link works once and expires after ACTIVATION_TTL_HOURS; sending again spends the
    links sent before. The mail goes through the SMTP relay that SMTP_* configure."""
    from scim_server import activation, mail

    settings = mail.SmtpSettings.from_env()
    require_head()
    try:
        sent = activation.send(user, to, settings)
    except (activation.ActivationError, mail.MailError) as exc:
        click.echo(f"scim-server users send-activation: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"Sent {user} an activation link at {sent.to}; it works once, until "
        f"{sent.expires_at:%Y-%m-%d %H:%M} UTC."
    )


@click.group("m365")
def m365() -> None:
    """Bind and release Microsoft 365 accounts."""


@m365.command("import")
@click.option("--domain", "domains", multiple=True, help="only this domain (repeatable)")
@click.option("--bind", is_flag=True, help="bind the accounts: the directory takes them over")
@click.option("--dry-run", is_flag=True, help="print the plan, change nothing")
@click.option("--yes", is_flag=True, help="do not ask before carrying the plan out")
@with_appcontext
def m365_import(domains: tuple[str, ...], bind: bool, dry_run: bool, yes: bool) -> None:
    """Import the tenant's existing accounts: match them to directory users or create those,
    and with --bind take them over; or skip them, with a reason."""
    from scim_server.config import ConfigError
    from scim_server.graph.client import GraphClient
    from scim_server.graph.errors import GraphError
    from scim_server.graph.settings import from_env
    from scim_server.sync import takeover
    from scim_server.sync.settings import from_env as sync_from_env
    from scim_server.sync.worker import ScopeError, sync_domains

    require_head()
    settings = from_env()
    if settings is None:
        raise ConfigError(
            "m365 import reads a tenant: set GRAPH_TENANT_ID and the other GRAPH_* settings "
            "(a real tenant, or a running `scim-server graph-emulator`)"
        )
    client = GraphClient(settings)
    try:
        scope = domains or sync_domains(client, sync_from_env().sync_domains)
        scope = tuple(d.lower() for d in scope)
        counted: list[int] = []
        listing = client.list_users(select=takeover.SELECT, top=999, on_count=counted.append)
        first = next(listing, None)  # the first page, which says how many there are
        with click.progressbar(
            itertools.chain([first] if first is not None else [], listing),
            length=counted[0] if counted and counted[0] else None,
            label="Reading the tenant's accounts",
            file=sys.stderr,
        ) as reading:
            accounts = list(reading)
    except (GraphError, ScopeError) as exc:
        click.echo(f"scim-server m365 import: {exc}", err=True)
        sys.exit(2)
    decisions = takeover.plan(accounts, scope)
    for decision in decisions:
        click.echo(decision.describe(bind))
    counts = {a: sum(1 for d in decisions if d.action == a) for a in ("bind", "create", "skip")}
    if bind:
        click.echo(
            f"{counts['bind']} to bind, {counts['create']} to create and bind, "
            f"{counts['skip']} skipped."
        )
    else:
        click.echo(
            f"{counts['bind']} matched (not bound without --bind), {counts['create']} to create, "
            f"{counts['skip']} skipped."
        )
    if dry_run or not (counts["create"] or (bind and counts["bind"])):
        return
    if not yes and not click.confirm("Carry this out?", err=True):
        sys.exit(1)
    with click.progressbar(decisions, label="Importing", file=sys.stderr) as doing:
        for decision in doing:
            takeover.apply(decision, bind)
    if bind:
        click.echo("Done: the sync worker now sends the directory's values to each bound account.")
    else:
        click.echo("Done. Run again with --bind to take the accounts over.")


@m365.command("unbind")
@click.argument("user")
@click.option("--suspend", is_flag=True, help="disable the M365 account before releasing it")
@with_appcontext
def m365_unbind(user: str, suspend: bool) -> None:
    """Release USER's M365 account (id or userName): the directory stops managing it."""
    from models import EventKind
    from scim_server import directory, outbox
    from scim_server.db import db

    require_head()
    user_id = directory.find_user_id(user)
    if user_id is None:
        click.echo(f"No user {user!r}.", err=True)
        sys.exit(1)
    # Through the outbox, in order with the user's other changes; the worker carries it out.
    outbox.record(db.session, "User", user_id, EventKind.UNBIND, {"suspend": suspend})
    db.session.commit()
    what = "disables and releases" if suspend else "releases"
    click.echo(f"Queued: the sync worker {what} the M365 account of {user}.")


@click.command("keygen")
def keygen() -> None:
    """Print a new key for SCIM_ENCRYPTION_KEYS (a Fernet key), which seals passwords while
    they wait in the outbox."""
    from scim_server import sealing

    click.echo(sealing.new_key())


@click.group("db")
def db_commands() -> None:
    """The database schema: upgrade it to this release's, and see where it stands."""


@db_commands.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Upgrade the schema to this release's newest revision. Nodes that start together
    take turns (a PostgreSQL advisory lock, a file lock on SQLite)."""
    from scim_server import dbschema

    found = dbschema.upgrade()
    click.echo(f"Database schema at revision {found.current} (this release's newest).")


@db_commands.command("current")
@with_appcontext
def db_current() -> None:
    """Print the schema's revision, and this release's newest. Changes nothing."""
    from scim_server import dbschema

    found = dbschema.revisions()
    click.echo(f"current: {found.current or '(empty database)'}")
    click.echo(
        f"head:    {found.head}{'' if found.at_head else '  (run `scim-server db upgrade`)'}"
    )


@db_commands.command("history")
def db_history() -> None:
    """List this release's schema revisions, newest first. Reads no database."""
    from alembic.script import ScriptDirectory

    from scim_server.dbschema import MIGRATIONS

    for rev in ScriptDirectory(str(MIGRATIONS)).walk_revisions():
        click.echo(f"{rev.revision}  {(rev.doc or '').strip().splitlines()[0]}")


COMMANDS = (
    serve,
    db_commands,
    token,
    graph_emulator,
    keygen,
    users,
    m365,
    sync_commands.worker,
    sync_commands.sync,
)


def register_commands(app: Flask) -> None:
    """The commands on the app's own CLI too (`flask --app wsgi …`, the tests' runner)."""
    for command in COMMANDS:
        if command.name != "db":  # Flask-Migrate's own `db` group, for developers, stays there
            app.cli.add_command(command)


def main() -> None:
    from importlib.metadata import version

    from flask.cli import ScriptInfo

    from scim_server import create_app
    from scim_server.config import ConfigError

    @click.group(
        context_settings={"obj": ScriptInfo(create_app=create_app, set_debug_flag=False)},
        help="SCIM 2.0 server and canonical directory for Microsoft 365.",
    )
    @click.version_option(version("scim-server"), prog_name="scim-server")
    def cli() -> None:
        pass

    for command in COMMANDS:
        cli.add_command(command)
    try:
        cli.main(prog_name="scim-server")
    except ConfigError as exc:  # a setting to fix: said plainly, without a traceback
        click.echo(f"scim-server: {exc}", err=True)
        sys.exit(2)
