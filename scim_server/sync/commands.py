"""`scim-server worker` and `scim-server sync status|reseal|retry|discard|prune`."""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import timedelta

import click
from flask import current_app
from flask.cli import with_appcontext

from models import utcnow
from scim_server import preflight
from scim_server.db import begin, db
from scim_server.dbschema import require_head


@click.command("worker")
@click.option("--concurrency", default=4, show_default=True, type=int, help="worker threads")
@preflight.start_options
@with_appcontext
def worker(concurrency: int, migrate: bool, sandbox: bool) -> None:
    """Deliver directory changes to Microsoft 365 until stopped (SIGINT or SIGTERM).

    Several `worker` processes may run against PostgreSQL; on SQLite run one. The target is
    the tenant GRAPH_* name, or with --sandbox the built-in emulator; one of them must be
    chosen."""
    from scim_server.config import ConfigError
    from scim_server.graph.errors import GraphError
    from scim_server.sync import runtime
    from scim_server.sync.worker import ScopeError

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        # Every setting, the database and the schema, before a change is claimed.
        preflight.start(app, migrate=migrate, sandbox=sandbox)
    except ConfigError as exc:
        click.echo(f"scim-server worker: {exc}", err=True)
        sys.exit(2)
    try:
        running = runtime.engine(app, max(concurrency, 1))
    except (ConfigError, ScopeError, GraphError) as exc:
        # Said plainly, without a traceback: a setting or the tenant needs fixing.
        click.echo(f"scim-server worker: {exc}", err=True)
        sys.exit(2)
    click.echo(running.target.describe(), err=True)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    running.start()
    stopped.wait()
    running.shutdown()


@click.group("sync")
def sync() -> None:
    """The Microsoft 365 sync: backlog, dead letters, retries."""


@sync.command("status")
@click.option("--json", "as_json", is_flag=True, help="the same facts as one JSON object")
@with_appcontext
def status(as_json: bool) -> None:
    """Print the target, the backlog, the delivery rate, the link and password states, dead
    letters and the last errors."""
    from scim_server.sync.status import collect, render

    require_head()
    with begin(write=False) as conn:
        facts = collect(conn, retention_days=current_app.config["OUTBOX_RETENTION_DAYS"])
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    for line in render(facts):
        click.echo(line)


@sync.command("reseal")
@with_appcontext
def reseal() -> None:
    """Seal the passwords waiting for Microsoft 365 again under the first key of
    SCIM_ENCRYPTION_KEYS, so that the old keys can be dropped (see the README's rotation)."""
    from scim_server import outbox, sealing

    require_head()
    instance = current_app.instance_path

    def again(token: str) -> str | None:
        try:
            return sealing.reseal(instance, token)
        except sealing.SealBroken:
            return None

    with begin(write=True) as conn:
        done, broken = outbox.reseal_passwords(conn, again)
    click.echo(f"Re-sealed {done} waiting password(s) under the first key.")
    if broken:
        click.echo(
            f"{broken} waiting password(s) open with none of the keys: they will be dead "
            "letters; set them again (SCIM, the portal, or users set-temp-password).",
            err=True,
        )
        sys.exit(1)


@sync.command("retry")
@click.argument("event_id", required=False, type=int)
@click.option("--all-dead", is_flag=True, help="every dead letter")
@with_appcontext
def retry(event_id: int | None, all_dead: bool) -> None:
    """Put a dead letter (or all of them) back in the queue."""

    if (event_id is None) == (not all_dead):
        raise click.UsageError("Give an event ID or --all-dead.")
    from scim_server import outbox

    require_head()
    with begin(write=True) as conn:
        count = outbox.retry_dead(conn, [] if event_id is None else [event_id], all_dead=all_dead)
    if not count:
        click.echo("No such dead letter." if event_id is not None else "No dead letters.", err=True)
        sys.exit(1)
    click.echo(f"Queued {count} dead letter(s) again.")


@sync.command("discard")
@click.argument("event_id", required=False, type=int)
@click.option("--all-dead", is_flag=True, help="every dead letter")
@with_appcontext
def discard(event_id: int | None, all_dead: bool) -> None:
    """Give up on a dead letter (or all of them) for good: it is deleted, with any password
    it held, and no longer shows in `sync status` or /metrics."""
    from scim_server import outbox

    if (event_id is None) == (not all_dead):
        raise click.UsageError("Give an event ID or --all-dead.")
    require_head()
    with begin(write=True) as conn:
        count = outbox.discard(conn, [] if event_id is None else [event_id], all_dead=all_dead)
    if not count:
        click.echo("No such dead letter." if event_id is not None else "No dead letters.", err=True)
        sys.exit(1)
    click.echo(f"Discarded {count} dead letter(s).")


@sync.command("prune")
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=0),
    help="delete delivered events older than DAYS (default: OUTBOX_RETENTION_DAYS; 0: all)",
    metavar="DAYS",
)
@with_appcontext
def prune(days: int | None) -> None:
    """Delete delivered events older than OUTBOX_RETENTION_DAYS, in small batches, as the
    sync workers do on their own. Pending events and dead letters stay."""
    from scim_server import outbox

    require_head()
    if days is None:
        days = int(current_app.config["OUTBOX_RETENTION_DAYS"])
        if days == 0:
            click.echo("OUTBOX_RETENTION_DAYS is 0: delivered events are kept; pruned 0.")
            return
    with db.engine.connect() as conn:
        deleted = outbox.prune(conn, utcnow() - timedelta(days=days))
    click.echo(f"Pruned {deleted} delivered event(s) older than {days} day(s).")
