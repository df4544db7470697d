"""The `scim-server` command: serve, tokens, and the database (`scim-server db upgrade`)."""

from __future__ import annotations

import atexit
import itertools
import json
import os
import subprocess
import sys
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from scim_server.dbschema import require_head
from scim_server.graph.emulator.command import graph_emulator
from scim_server.metrics import prepare_multiprocess_dir
from scim_server.sync import commands as sync_commands


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
# Processes rather than threads: a thread that holds SQLite's write lock and waits for the
# GIL behind a sibling thread holds up every writer. One single-threaded process per core: on
# 2 cores, 2 x 1 (with http_worker's InlineWorker) served creates and PATCHes at about 1.0 ms
# of CPU each, against 1.4-1.9 ms for gthread's 4 x 1, the former default, which spent the
# difference switching between processes and threads.
@click.option(
    "--workers",
    default=lambda: max(os.cpu_count() or 1, 2),
    show_default="one per core, at least 2",
    type=int,
    help="gunicorn processes (with PostgreSQL, requests also wait on the network: more may help)",
)
@click.option("--threads", default=1, show_default=True, type=int, help="threads per process")
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    help="one line per request on stdout",
)
@click.option(
    "--sync/--no-sync",
    default=True,
    show_default=True,
    help="run a sync worker beside the server (turn off when `scim-server worker` runs apart)",
)
@click.option(
    "--migrate",
    is_flag=True,
    help="upgrade the database schema first (else a schema behind this release is refused)",
)
@click.option(
    "--sandbox",
    is_flag=True,
    help="the sync delivers to the sandbox tenant, the built-in emulator (GRAPH_SANDBOX=1)",
)
@with_appcontext
def serve(
    host: str,
    port: int,
    workers: int,
    threads: int,
    access_log: bool,
    sync: bool,
    migrate: bool,
    sandbox: bool,
) -> None:
    """Run the SCIM server with gunicorn. The SCIM base URL is http://HOST:PORT/scim/v2."""
    from gunicorn.app.base import BaseApplication

    from scim_server import create_app, dbschema, preflight

    # Every setting and the database, before anything listens (ConfigError: one line, exit 2).
    if sandbox:
        os.environ["GRAPH_SANDBOX"] = "1"  # the flag wins; the sync worker inherits it
    preflight.check(current_app._get_current_object(), needs_target=sync)  # type: ignore[attr-defined]
    if migrate:
        dbschema.upgrade()
    else:
        dbschema.require_head()
    prepare_multiprocess_dir()  # /metrics sums the HTTP workers' counts kept there
    worker = _start_sync_worker() if sync else None

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            # One thread: serve each request on the thread that reads it (see http_worker).
            worker_class = "scim_server.http_worker.InlineWorker" if threads == 1 else "gthread"
            self.cfg.set("worker_class", worker_class)
            self.cfg.set("accesslog", "-" if access_log else None)
            # Activation links are credentials: the access log shows them redacted.
            self.cfg.set("logger_class", "scim_server.accesslog.RedactingLogger")
            self.cfg.set("timeout", 120)

        def load(self) -> Flask:
            return create_app()

    click.echo(f"SCIM base URL: http://{host}:{port}/scim/v2", err=True)
    try:
        Server().run()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(15)


def _start_sync_worker() -> subprocess.Popen[bytes]:
    """The embedded sync worker: `scim-server worker` as a child process, so gunicorn's
    processes stay free of its threads (and of the sandbox emulator's)."""
    command = [sys.executable, "-c", "from scim_server.cli import main; main()", "worker"]
    child = subprocess.Popen(command)  # `scim-server worker`'s own default concurrency

    def stop() -> None:
        if child.poll() is None:
            child.terminate()

    atexit.register(stop)
    return child


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
    from scim_server import directory, outbox
    from scim_server.db import db

    require_head()
    user_id = directory.find_user_id(user)
    if user_id is None:
        click.echo(f"No user {user!r}.", err=True)
        sys.exit(1)
    # Through the outbox, in order with the user's other changes; the worker carries it out.
    outbox.record(db.session, "User", user_id, "unbind", {"suspend": suspend})
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
