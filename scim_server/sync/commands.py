"""`scim-server worker` and `scim-server sync status|retry`."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import timedelta

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import func, select, update

from models import M365Link, OutboxEvent, utcnow
from scim_server.db import db


@click.command("worker")
@click.option("--concurrency", default=4, show_default=True, type=int, help="worker threads")
@with_appcontext
def worker(concurrency: int) -> None:
    """Deliver directory changes to Microsoft 365 until stopped (SIGINT or SIGTERM).

    Several `worker` processes may run against PostgreSQL; on SQLite run one. Without
    GRAPH_TENANT_ID they deliver to the sandbox tenant (the built-in emulator)."""
    from scim_server import preflight
    from scim_server.cli import upgrade_schema
    from scim_server.config import ConfigError
    from scim_server.graph.errors import GraphError
    from scim_server.sync import runtime
    from scim_server.sync.worker import ScopeError

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        # Every setting and the database, before a change is claimed.
        preflight.check(app)
    except ConfigError as exc:
        click.echo(f"scim-server worker: {exc}", err=True)
        sys.exit(2)
    upgrade_schema()
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
@with_appcontext
def status() -> None:
    """Print the backlog, the delivery rate, the link states, dead letters and last errors."""
    from scim_server.cli import upgrade_schema
    from scim_server.graph.settings import from_env

    upgrade_schema()
    settings = from_env()
    if settings is None:
        click.echo("Target: SANDBOX tenant (the built-in Graph emulator; GRAPH_TENANT_ID is unset)")
    else:
        click.echo(f"Target: Microsoft 365 tenant {settings.tenant_id}")
    session = db.session
    by_status = dict(
        session.execute(select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)).all()
    )
    waiting = session.scalar(
        select(func.count()).where(
            OutboxEvent.status == "pending", OutboxEvent.locked_until > utcnow()
        )
    )
    click.echo(
        f"Backlog: {by_status.get('pending', 0)} pending ({waiting or 0} waiting to retry), "
        f"{by_status.get('done', 0)} delivered, {by_status.get('dead', 0)} dead"
    )
    for minutes in (1, 15):
        since = utcnow() - timedelta(minutes=minutes)
        done = session.scalar(
            select(func.count()).where(
                OutboxEvent.status == "done", OutboxEvent.completed_at >= since
            )
        )
        rate = (done or 0) / (60 * minutes)
        click.echo(f"Delivered in the last {minutes} min: {done or 0} ({rate:.2f}/s)")
    states = session.execute(
        select(M365Link.resource_type, M365Link.state, func.count())
        .group_by(M365Link.resource_type, M365Link.state)
        .order_by(M365Link.resource_type, M365Link.state)
    ).all()
    for rtype, state, count in states:
        click.echo(f"{rtype}s {state}: {count}")
    passwords = session.execute(
        select(M365Link.password_state, func.count())
        .where(M365Link.resource_type == "User", M365Link.password_state.is_not(None))
        .group_by(M365Link.password_state)
        .order_by(M365Link.password_state)
    ).all()
    if passwords:
        click.echo("Passwords: " + ", ".join(f"{n} {state}" for state, n in passwords))
    dead = session.execute(
        select(
            OutboxEvent.id,
            OutboxEvent.resource_type,
            OutboxEvent.resource_id,
            OutboxEvent.last_error,
        )
        .where(OutboxEvent.status == "dead")
        .order_by(OutboxEvent.id.desc())
        .limit(10)
    ).all()
    if dead:
        click.echo("Dead letters (newest first; `scim-server sync retry ID` or --all-dead):")
        for eid, rtype, rid, error in dead:
            click.echo(f"  {eid}  {rtype} {rid}: {error}")
    problems = session.execute(
        select(M365Link.resource_type, M365Link.resource_id, M365Link.state, M365Link.last_error)
        .where(M365Link.state.in_(("conflict", "error")))
        .order_by(M365Link.updated_at.desc())
        .limit(10)
    ).all()
    if problems:
        click.echo("Last errors:")
        for rtype, rid, state, error in problems:
            click.echo(f"  {rtype} {rid} [{state}]: {error}")


@sync.command("reseal")
@with_appcontext
def reseal() -> None:
    """Seal the passwords waiting for Microsoft 365 again under the first key of
    SCIM_ENCRYPTION_KEYS, so that the old keys can be dropped (see the README's rotation)."""
    from scim_server import outbox, sealing
    from scim_server.cli import upgrade_schema

    upgrade_schema()
    instance = current_app.instance_path

    def again(token: str) -> str | None:
        try:
            return sealing.reseal(instance, token)
        except sealing.SealBroken:
            return None

    done, broken = outbox.reseal_passwords(db.session, again)
    db.session.commit()
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
    from scim_server.cli import upgrade_schema

    if (event_id is None) == (not all_dead):
        raise click.UsageError("Give an event ID or --all-dead.")
    upgrade_schema()
    query = update(OutboxEvent).where(OutboxEvent.status == "dead")
    if event_id is not None:
        query = query.where(OutboxEvent.id == event_id)
    result = db.session.execute(
        query.values(
            status="pending", attempts=0, locked_by=None, locked_until=None, completed_at=None
        )
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    db.session.commit()
    if not count:
        click.echo("No such dead letter." if event_id is not None else "No dead letters.", err=True)
        sys.exit(1)
    click.echo(f"Queued {count} dead letter(s) again.")
