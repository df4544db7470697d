"""What `scim-server sync status` reports, as facts (a JSON-ready dict) and as text: one
reading of the database serves both, so `--json` says exactly what the text says."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from models import EventStatus, LinkState, M365Link, OutboxEvent, utcnow
from scim_server.graph.settings import from_env as graph_from_env
from scim_server.graph.settings import sandbox_requested
from scim_server.outbox import oldest_pending_seconds
from scim_server.sync import heartbeat

RATE_WINDOWS_MINUTES = (1, 15)
WORKERS_FRESH = timedelta(minutes=2)  # the workers `sync status` names: those beating lately
LISTED = 10  # dead letters and errors listed, newest first


OUTBOX_STATES = tuple(EventStatus)


def collect(conn: Connection, retention_days: int | None = None) -> dict[str, Any]:
    """The facts, read in one transaction (`conn`). `retention_days`:
    OUTBOX_RETENTION_DAYS, reported beside the outbox's size."""
    settings = graph_from_env()
    if settings is not None:
        target: dict[str, Any] = {"kind": "tenant", "tenant_id": settings.tenant_id}
    elif sandbox_requested():
        target = {"kind": "sandbox", "tenant_id": None}
    else:
        target = {"kind": "none", "tenant_id": None}
    # What the workers that beat lately deliver to, whatever this process's environment says.
    target["workers"] = list(heartbeat.summary(conn, WORKERS_FRESH).targets)
    now = utcnow()
    by_status = dict(
        conn.execute(select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)).all()
    )
    waiting = conn.scalar(
        select(func.count()).where(
            OutboxEvent.status == EventStatus.PENDING, OutboxEvent.locked_until > now
        )
    )
    oldest = oldest_pending_seconds(conn)
    delivered = {}
    for minutes in RATE_WINDOWS_MINUTES:
        since = now - timedelta(minutes=minutes)
        count = conn.scalar(
            select(func.count()).where(
                OutboxEvent.status == EventStatus.DONE, OutboxEvent.completed_at >= since
            )
        )
        delivered[str(minutes)] = {
            "events": count or 0,
            "per_second": (count or 0) / (60 * minutes),
        }
    links: dict[str, dict[str, int]] = {}
    for rtype, state, count in conn.execute(
        select(M365Link.resource_type, M365Link.state, func.count())
        .group_by(M365Link.resource_type, M365Link.state)
        .order_by(M365Link.resource_type, M365Link.state)
    ):
        links.setdefault(rtype, {})[state] = count
    passwords = dict(
        conn.execute(
            select(M365Link.password_state, func.count())
            .where(M365Link.resource_type == "User", M365Link.password_state.is_not(None))
            .group_by(M365Link.password_state)
            .order_by(M365Link.password_state)
        ).all()
    )
    dead = [
        {"id": eid, "resource_type": rtype, "resource_id": rid, "error": error}
        for eid, rtype, rid, error in conn.execute(
            select(
                OutboxEvent.id,
                OutboxEvent.resource_type,
                OutboxEvent.resource_id,
                OutboxEvent.last_error,
            )
            .where(OutboxEvent.status == EventStatus.DEAD)
            .order_by(OutboxEvent.id.desc())
            .limit(LISTED)
        )
    ]
    errors = [
        {"resource_type": rtype, "resource_id": rid, "state": state, "error": error}
        for rtype, rid, state, error in conn.execute(
            select(
                M365Link.resource_type, M365Link.resource_id, M365Link.state, M365Link.last_error
            )
            .where(M365Link.state.in_((LinkState.CONFLICT, LinkState.ERROR)))
            .order_by(M365Link.updated_at.desc())
            .limit(LISTED)
        )
    ]
    from scim_server.drift import settings as drift_settings
    from scim_server.drift import state as drift_state

    try:
        drift_mode: str | None = drift_settings.from_env().mode.value
    except Exception:  # a bad M365_DRIFT: preflight names it; status still reports
        drift_mode = None
    drift = {
        "mode": drift_mode,
        **drift_state.counts(conn),
        "rounds": drift_state.rounds(conn),
    }
    return {
        "target": target,
        "drift": drift,
        "backlog": {
            "pending": by_status.get(EventStatus.PENDING, 0),
            "waiting_to_retry": waiting or 0,
            "delivered": by_status.get(EventStatus.DONE, 0),
            "dead": by_status.get(EventStatus.DEAD, 0),
            "oldest_pending_seconds": oldest,
        },
        "outbox": {
            "rows": sum(by_status.values()),
            "by_state": {state: by_status.get(state, 0) for state in OUTBOX_STATES},
            "retention_days": retention_days,
        },
        "delivered_in_last_minutes": delivered,
        "links": links,
        "passwords": passwords,
        "dead_letters": dead,
        "last_errors": errors,
    }


def render(facts: dict[str, Any]) -> list[str]:
    """The facts as the lines `sync status` prints."""
    target = facts["target"]
    lines = [
        {
            "sandbox": "Target: SANDBOX tenant (the built-in Graph emulator)",
            "tenant": f"Target: Microsoft 365 tenant {target['tenant_id']}",
            "none": "Target: none in this environment (GRAPH_TENANT_ID and GRAPH_SANDBOX unset)",
        }[target["kind"]]
    ]
    if target["workers"]:
        shown = [t if t == "SANDBOX" else f"tenant {t}" for t in target["workers"]]
        lines.append(f"Workers beating in the last 2 min deliver to: {', '.join(shown)}")
    backlog = facts["backlog"]
    lines.append(
        f"Backlog: {backlog['pending']} pending ({backlog['waiting_to_retry']} waiting to retry), "
        f"{backlog['delivered']} delivered, {backlog['dead']} dead"
    )
    if backlog["oldest_pending_seconds"] is not None:
        lines.append(f"Oldest pending change: {backlog['oldest_pending_seconds']:.0f} s old")
    table = facts["outbox"]
    size = f"Outbox: {table['rows']} rows (" + ", ".join(
        f"{n} {state}" for state, n in table["by_state"].items()
    )
    kept = table["retention_days"]
    if kept == 0:
        size += "; delivered events kept for ever, OUTBOX_RETENTION_DAYS=0"
    elif kept is not None:
        size += f"; delivered events deleted after {kept} days"
    lines.append(size + ")")
    for minutes, done in facts["delivered_in_last_minutes"].items():
        lines.append(
            f"Delivered in the last {minutes} min: {done['events']} ({done['per_second']:.2f}/s)"
        )
    for rtype, states in facts["links"].items():
        lines.extend(f"{rtype}s {state}: {count}" for state, count in states.items())
    if facts["passwords"]:
        lines.append(
            "Passwords: " + ", ".join(f"{n} {state}" for state, n in facts["passwords"].items())
        )
    lines.extend(_drift_lines(facts["drift"]))
    if facts["dead_letters"]:
        lines.append(
            "Dead letters (newest first; `sync retry ID` or `sync discard ID`, or --all-dead):"
        )
        lines.extend(
            f"  {d['id']}  {d['resource_type']} {d['resource_id']}: {d['error']}"
            for d in facts["dead_letters"]
        )
    if facts["last_errors"]:
        lines.append("Last errors:")
        lines.extend(
            f"  {e['resource_type']} {e['resource_id']} [{e['state']}]: {e['error']}"
            for e in facts["last_errors"]
        )
    return lines


def _drift_lines(drift: dict[str, Any]) -> list[str]:
    def kinds(counts: dict[str, int]) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "none"

    lines = [f"Drift (M365_DRIFT={drift['mode'] or 'invalid'}): found {kinds(drift['detected'])}"]
    lines.append(f"Drift repaired: {kinds(drift['repaired'])}")
    for one in drift["rounds"]:
        last = one["last_round"] or {}
        when = one["last_finished_at"] or "never"
        found = kinds(last.get("found") or {})
        running = " (a round is running)" if one["running"] else ""
        lines.append(
            f"Last drift round ({one['target']}): {when}, {last.get('graph_requests', 0)} Graph "
            f"requests, found {found}{running}"
        )
    return lines
