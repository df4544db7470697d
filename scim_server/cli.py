"""The `scim-server` command: serve, tokens and OAuth clients, the database (`db upgrade`)."""

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
    show_default="1",
    help="requests each worker runs at once, each once its body is in (with PostgreSQL "
    "far away, more may help)",
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
    from scim_server.serving import ACCESS_LOG_ENV, THREADS_ENV, http_server_command
    from scim_server.supervisor import Child, Supervisor

    # Every setting, the database and the schema, before anything starts (ConfigError: one
    # line, exit 2). --no-sync needs no target.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    preflight.start(app, migrate=migrate, sandbox=sandbox, needs_target=sync)
    # prometheus-client's multiprocess mode: a directory the HTTP workers share, made before
    # they start (and removed when serve exits). The sync worker counts in the database.
    prepare_multiprocess_dir()
    http_env = {**os.environ, ACCESS_LOG_ENV: "1" if access_log else "0"}
    if threads is not None:
        http_env[THREADS_ENV] = str(max(threads, 1))
    worker_env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    http = Child("HTTP server", http_server_command(host, port, workers), http_env)
    worker = Child("sync worker", _sync_worker_command(), worker_env) if sync else None
    click.echo(f"SCIM base URL: http://{host}:{port}/scim/v2", err=True)
    sys.exit(Supervisor(http, worker).run())


def _sync_worker_command() -> list[str]:
    """`scim-server worker` with its own default concurrency, in a process of its own, so
    the HTTP workers stay free of its threads (and of the sandbox emulator's)."""
    return [sys.executable, "-c", "from scim_server.cli import main; main()", "worker"]


def _duration(_ctx: Any, _param: Any, value: str | None) -> Any:
    from datetime import timedelta

    from scim_server.auth import parse_duration

    if value is None:
        return None
    try:
        duration: timedelta = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return duration


def _when(moment: Any) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment else None


@click.group("token")
def token() -> None:
    """Manage the SCIM API's static credentials (stored hashed; shown once at creation)."""


@token.command("create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="GET and search only; writes get 403.")
@click.option(
    "--expires", callback=_duration, metavar="DURATION", help="stops working after it: 90d, 12h"
)
@click.option(
    "--header-auth",
    is_flag=True,
    help="also accept it alone in Authorization, without Bearer (Okta's header auth)",
)
@click.option(
    "--basic", is_flag=True, help="an HTTP Basic user name (NAME) and password (Okta's basic auth)"
)
@with_appcontext
def token_create(name: str, read_only: bool, expires: Any, header_auth: bool, basic: bool) -> None:
    """Create a credential and print its secret alone on the last line (with --basic, the
    user name on the line before)."""
    from scim_server import auth

    require_head()
    try:
        row, secret = auth.create_token(
            name, read_only=read_only, expires_in=expires, header_auth=header_auth, basic=basic
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    traits = [t for t, on in (("read-only", read_only), ("header auth", header_auth)) if on]
    if row.expires_at:
        traits.append(f"expires {_when(row.expires_at)}")
    shown = f" ({', '.join(traits)})" if traits else ""
    if basic:
        click.echo(
            f"Created Basic credential {row.id} {name!r}{shown}. The password is shown once:",
            err=True,
        )
        click.echo(f"user name: {row.basic_user}")
    else:
        click.echo(f"Created token {row.id} {name!r}{shown}. It is shown once:", err=True)
    click.echo(secret)


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def token_list(as_json: bool) -> None:
    """List the credentials (id, name, scheme, state, expiry, last use); never a secret."""
    from scim_server import auth

    require_head()
    rows: list[dict[str, Any]] = [
        {
            "id": t.id,
            "name": t.name,
            "prefix": t.prefix,
            "scheme": t.scheme,
            "header_auth": t.header_auth,
            "basic_user": t.basic_user,
            "read_only": t.read_only,
            "state": auth.token_state(t),
            "created_at": _when(t.created_at),
            "expires_at": _when(t.expires_at),
            "last_used_at": _when(t.last_used_at),
            "revoked_at": _when(t.revoked_at),
        }
        for t in auth.list_tokens()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(
        f"{'id':>4}  {'name':<24} {'prefix':<14} {'scheme':<7} {'access':<10} "
        f"{'state':<8} {'expires':<21} last used"
    )
    for r in rows:
        scheme = "header" if r["header_auth"] else r["scheme"]
        access = "read-only" if r["read_only"] else "read-write"
        click.echo(
            f"{r['id']:>4}  {r['name']:<24} {r['prefix'] + '…':<14} {scheme:<7} {access:<10} "
            f"{r['state']:<8} {r['expires_at'] or 'never':<21} {r['last_used_at'] or 'never'}"
        )


@token.command("rotate")
@click.argument("ident")
@click.option(
    "--grace",
    callback=_duration,
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="how long the old secret keeps working (0s: not at all)",
)
@click.option(
    "--expires",
    callback=_duration,
    metavar="DURATION",
    help="the new secret's lifetime (default: the old one's)",
)
@with_appcontext
def token_rotate(ident: str, grace: Any, expires: Any) -> None:
    """Issue a new secret for a credential (by id or name), with its scheme and flags, and
    print it alone on the last line; the old secret works until the grace period ends."""
    from scim_server import auth

    require_head()
    rotated = auth.rotate_token(ident, grace, expires)
    if rotated is None:
        click.echo(f"No active token {ident!r}.", err=True)
        sys.exit(1)
    row, secret = rotated
    click.echo(
        f"Rotated {row.name!r}: the old secret works for {grace}; the new one ({row.id}) is "
        "shown once:",
        err=True,
    )
    if row.basic_user:
        click.echo(f"user name: {row.basic_user}")
    click.echo(secret)


@token.command("revoke")
@click.argument("ident")
@with_appcontext
def token_revoke(ident: str) -> None:
    """Revoke a credential by id or by name (by name: every secret of that name)."""
    from scim_server import auth

    require_head()
    row = auth.revoke_token(ident)
    if row is None:
        click.echo(f"No active token {ident!r}.", err=True)
        sys.exit(1)
    click.echo(f"Revoked token {row.id} {row.name!r}.")


@click.group("client")
def client() -> None:
    """Manage OAuth 2.0 clients of POST /oauth/token (client-credentials grant)."""


@client.command("create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="its access tokens GET and search only")
@with_appcontext
def client_create(name: str, read_only: bool) -> None:
    """Create a client; print its client id, then its secret alone on the last line."""
    from scim_server import oauth

    require_head()
    row, secret = oauth.create_client(name, read_only=read_only)
    click.echo(
        f"Created OAuth client {name!r}{' (read-only)' if read_only else ''}. The secret is "
        "shown once:",
        err=True,
    )
    click.echo(f"client id: {row.client_id}")
    click.echo(secret)


@client.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def client_list(as_json: bool) -> None:
    """List the clients (client id, name, access, state, last token issued); no secret."""
    from scim_server import oauth

    require_head()
    rows = [
        {
            "client_id": c.client_id,
            "name": c.name,
            "read_only": c.read_only,
            "state": "revoked" if c.revoked_at else "active",
            "created_at": _when(c.created_at),
            "last_used_at": _when(c.last_used_at),
            "revoked_at": _when(c.revoked_at),
        }
        for c in oauth.list_clients()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        access = "read-only" if r["read_only"] else "read-write"
        click.echo(
            f"{r['client_id']}  {r['name']:<24} {access:<10} {r['state']:<8} "
            f"last token {r['last_used_at'] or 'never'}"
        )


@client.command("revoke")
@click.argument("ident")
@with_appcontext
def client_revoke(ident: str) -> None:
    """Revoke a client by client id or name; its access tokens stop working with it."""
    from scim_server import oauth

    require_head()
    row = oauth.revoke_client(ident)
    if row is None:
        click.echo(f"No active client {ident!r}.", err=True)
        sys.exit(1)
    click.echo(f"Revoked client {row.client_id} {row.name!r}.")


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

    require_head()
    user_id = directory.find_user_id(user)
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
@click.argument("user", required=False)
@click.option("--to", "to", help="send here instead of the user's alternateEmail")
@click.option(
    "--all-without-password",
    "all_without_password",
    is_flag=True,
    help="every managed user who has no password yet, at their alternateEmail",
)
@click.option("--resend", is_flag=True, help="with --all-without-password: also those sent one")
@click.option("--dry-run", is_flag=True, help="with --all-without-password: say who, send nothing")
@with_appcontext
def send_activation(
    user: str | None, to: str | None, all_without_password: bool, resend: bool, dry_run: bool
) -> None:
    """Email USER (id or userName), who has no password yet, a link to choose one; or, with
    --all-without-password, every managed user who has none.

    The link works once and expires after ACTIVATION_TTL_HOURS; sending again spends the
    links sent before. The mail goes through MAIL_TRANSPORT: the SMTP relay of SMTP_*, or
    Microsoft Graph as MAIL_SENDER. In bulk, users whose link still works are skipped unless
    --resend, so a run that stopped can be run again."""
    from scim_server import activation, mail

    prog = "scim-server users send-activation"
    if all_without_password == (user is not None):
        raise click.UsageError("give USER or --all-without-password (one of them)")
    if all_without_password and to:
        raise click.UsageError("--to goes with USER, not with --all-without-password")
    if user is not None and (resend or dry_run):
        raise click.UsageError("--resend and --dry-run go with --all-without-password")
    transport = None if dry_run else mail.transport_from_env()
    per_minute = mail.rate_per_minute()
    require_head()
    if user is not None:
        assert transport is not None
        try:
            sent = activation.send(user, to, transport)
        except (activation.ActivationError, mail.MailError) as exc:
            click.echo(f"{prog}: {exc}", err=True)
            sys.exit(1)
        click.echo(
            f"Sent {user} an activation link at {sent.to}; it works once, until "
            f"{sent.expires_at:%Y-%m-%d %H:%M} UTC."
        )
        return
    if dry_run:
        found = activation.candidates(resend=resend)
        for c in found:
            if c.skip is None:
                click.echo(f"would send  {c.user_name} at {c.to}")
            else:
                click.echo(f"skip        {c.user_name}: {_skip_text(c)}")
        would = sum(1 for c in found if c.skip is None)
        skipped = [c for c in found if c.skip is not None]
        click.echo(f"Dry run: would send {would}; {_skips_summary(skipped)}. Nothing was sent.")
        return
    assert transport is not None

    def told(kind: str, c: activation.Candidate, detail: str) -> None:
        if kind == "sent":
            click.echo(f"sent        {c.user_name} at {detail}")
        elif kind == "skip":
            click.echo(f"skip        {c.user_name}: {_skip_text(c)}")
        else:
            click.echo(f"failed      {c.user_name}: {detail}", err=True)

    report = activation.send_all(transport, resend=resend, per_minute=per_minute, on_result=told)
    failed = f"; failed {len(report.failed)}" if report.failed else ""
    click.echo(f"Sent {len(report.sent)}; {_skips_summary(report.skipped)}{failed}.")
    if report.aborted is not None:
        click.echo(
            f"{prog}: stopped: {report.aborted}; {report.not_attempted} not attempted "
            "(run the command again once fixed: it carries on where it stopped)",
            err=True,
        )
    if report.failed:
        sys.exit(1)


def _skip_text(candidate: Any) -> str:
    from scim_server.activation import SKIP_HELP

    text = SKIP_HELP[candidate.skip]
    return f"{text}: {candidate.detail}" if candidate.detail else text


def _skips_summary(skipped: list[Any]) -> str:
    from scim_server.activation import SKIP_HELP, Skip

    counts: dict[Skip, int] = {}
    for c in skipped:
        counts[c.skip] = counts.get(c.skip, 0) + 1
    if not counts:
        return "skipped 0"
    parts = [f"{n} {SKIP_HELP[reason]}" for reason, n in sorted(counts.items(), key=_order)]
    return f"skipped {len(skipped)} ({', '.join(parts)})"


def _order(item: tuple[Any, int]) -> int:
    from scim_server.activation import Skip

    return list(Skip).index(item[0])


@click.group("m365")
def m365() -> None:
    """Bind and release Microsoft 365 accounts; plan and reconcile drift."""


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


class _Pages:
    """A line on stderr that counts the Graph pages read, when stderr is a terminal."""

    def __init__(self) -> None:
        self.shown = sys.stderr.isatty()
        self.dirty = False

    def __call__(self, label: str, pages: int) -> None:
        if self.shown:
            click.echo(f"\rReading {label} from Microsoft 365: {pages} pages", nl=False, err=True)
            self.dirty = True

    def done(self) -> None:
        if self.dirty:
            click.echo("", err=True)
            self.dirty = False


def _drift_target() -> tuple[Any, Any, Any]:
    """(the target, a Graph client on it, its checked scope): the tenant of GRAPH_*, or the
    sandbox tenant (GRAPH_SANDBOX); stop the target's emulator when done."""
    from scim_server.graph.client import GraphClient
    from scim_server.sync import runtime
    from scim_server.sync.settings import from_env as sync_from_env
    from scim_server.sync.worker import scope

    sync = sync_from_env()
    where = runtime.target(current_app, sync)
    client = GraphClient(where.settings)
    try:
        found = scope(client, sync.sync_domains)
    except BaseException:
        if where.emulator is not None:
            where.emulator.stop()
        raise
    return where, client, found


@m365.command("plan")
@click.option("--json", "as_json", is_flag=True, help="the plan as JSON")
@with_appcontext
def m365_plan(as_json: bool) -> None:
    """Everything the directory would change in Microsoft 365 now (a dry run: creates,
    updates with M365's value and the directory's, disables, restores, member changes,
    totals). Reads the tenant and the directory; writes nothing."""
    from scim_server.db import db
    from scim_server.drift import plan
    from scim_server.drift.settings import from_env as drift_from_env
    from scim_server.graph.errors import GraphError
    from scim_server.sync.pacer import Pacer
    from scim_server.sync.settings import from_env as sync_from_env
    from scim_server.sync.worker import ScopeError

    require_head()
    drift = drift_from_env()
    pages = _Pages()
    try:
        where, client, found = _drift_target()
    except (GraphError, ScopeError) as exc:
        click.echo(f"scim-server m365 plan: {exc}", err=True)
        sys.exit(2)
    pacer = Pacer(drift.read_rate)
    read = [0]

    def pace() -> None:
        pacer.acquire(1.0)
        read[0] += 1
        pages("the tenant", read[0])

    try:
        made = plan.make(
            db.engine, client, found.domains, sync_from_env().usage_location, pace=pace
        )
    except GraphError as exc:
        pages.done()
        click.echo(f"scim-server m365 plan: {exc}", err=True)
        sys.exit(2)
    finally:
        if where.emulator is not None:
            where.emulator.stop()
    pages.done()
    if as_json:
        click.echo(json.dumps(made.to_json(), indent=2, default=str))
        return
    for line in made.lines():
        click.echo(line)


@m365.command("reconcile")
@with_appcontext
def m365_reconcile() -> None:
    """Run one drift round now (M365_DRIFT decides: repair or report): what changed in
    Microsoft 365 since the last round, compared with what the directory sent; repairs go
    to the outbox, for the sync workers to deliver."""
    from scim_server.db import db
    from scim_server.drift.rounds import Drift
    from scim_server.drift.settings import Mode
    from scim_server.drift.settings import from_env as drift_from_env
    from scim_server.graph.errors import GraphError
    from scim_server.sync.settings import from_env as sync_from_env
    from scim_server.sync.worker import ScopeError

    require_head()
    settings = drift_from_env()
    if settings.mode is Mode.OFF:
        click.echo(
            "scim-server m365 reconcile: M365_DRIFT=off: drift rounds are disabled", err=True
        )
        sys.exit(2)
    try:
        where, client, found = _drift_target()
    except (GraphError, ScopeError) as exc:
        click.echo(f"scim-server m365 reconcile: {exc}", err=True)
        sys.exit(2)
    pages = _Pages()
    drift = Drift(
        db.engine,
        client,
        "sandbox" if where.sandbox else where.settings.tenant_id,
        settings,
        domains=found.domains,
        usage_location=sync_from_env().usage_location,
        progress=pages,
    )
    try:
        result = drift.run_if_due(force=True)
    except GraphError as exc:
        pages.done()
        click.echo(f"scim-server m365 reconcile: {exc}", err=True)
        sys.exit(2)
    finally:
        if where.emulator is not None:
            where.emulator.stop()
    pages.done()
    if result is None:
        click.echo("scim-server m365 reconcile: a sync worker is running a round now", err=True)
        sys.exit(1)
    found_kinds = ", ".join(f"{n} {k}" for k, n in result.found().items()) or "no drift"
    click.echo(
        f"Read {result.users_read} users and {result.groups_read} groups in "
        f"{result.graph_requests} Graph requests ({result.seconds:.1f} s): {found_kinds}."
    )
    if result.findings and settings.mode is Mode.REPAIR:
        click.echo("The repairs are in the outbox; the sync workers deliver them.")
    elif result.findings:
        click.echo("M365_DRIFT=report: recorded, nothing repaired.")


@m365.command("unbind")
@click.argument("user")
@click.option("--suspend", is_flag=True, help="disable the M365 account before releasing it")
@with_appcontext
def m365_unbind(user: str, suspend: bool) -> None:
    """Release USER's M365 account (id or userName): the directory stops managing it."""
    from models import EventKind
    from scim_server import directory, outbox
    from scim_server.db import begin

    require_head()
    user_id = directory.find_user_id(user)
    if user_id is None:
        click.echo(f"No user {user!r}.", err=True)
        sys.exit(1)
    # Through the outbox, in order with the user's other changes; the worker carries it out.
    with begin(write=True) as conn:
        outbox.record(conn, "User", user_id, EventKind.UNBIND, {"suspend": suspend})
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
    client,
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
