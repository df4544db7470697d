"""`/healthz` (liveness) and `/readyz` (readiness), outside /scim/v2 and without a token.

/healthz answers 200 while the process can answer at all: it touches nothing else.

/readyz answers 200 when every check passes, else 503, with each check's result:
- database: a `SELECT 1` answers;
- schema: the database is at the newest Alembic revision this code ships;
- sync_worker: some sync worker, in this process group or on any other machine, wrote its
  heartbeat within SYNC_HEARTBEAT_MAX_AGE_SECONDS (it is in the database). When no worker
  has ever written one, the check fails: changes would wait in the outbox with nobody to
  deliver them, and an operator should hear of it rather than find out from Microsoft 365;
- outbox: the oldest pending change is younger than READYZ_MAX_PENDING_AGE_SECONDS.

No answer names the database URL, a host, a user or an error's text: only the type of an
error. The log has the rest.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import Connection, literal, select

from models import utcnow
from scim_server import dbschema, outbox
from scim_server.db import begin, db
from scim_server.sync import heartbeat

log = logging.getLogger("scim_server.health")
bp = Blueprint("health", __name__)
_PING = select(literal(1))


@bp.get("/healthz")
def healthz() -> Response:
    return _no_store(jsonify(status="ok"), 200)


@bp.get("/readyz")
def readyz() -> Response:
    checks = readiness()
    ready = all(check["ok"] for check in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return _no_store(jsonify(body), 200 if ready else 503)


def readiness() -> dict[str, dict[str, Any]]:
    """Each check's result: `ok`, and what it saw. The checks that read the database each
    run in a reading transaction of their own, on one pooled connection."""
    config = current_app.config
    checks: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        try:
            conn = stack.enter_context(db.engine.connect())
            with begin(write=False, on=conn):
                conn.execute(_PING)
            checks["database"] = {"ok": True}
        except Exception as exc:
            log.warning("readyz: the database is unreachable", exc_info=True)
            failed = {"ok": False, "error": type(exc).__name__}
            skipped = {"ok": False, "error": "database unreachable"}
            return {
                "database": failed,
                "schema": skipped,
                "sync_worker": skipped,
                "outbox": skipped,
            }
        checks["schema"] = _guarded("schema", _schema)
        max_beat = config["SYNC_HEARTBEAT_MAX_AGE_SECONDS"]
        checks["sync_worker"] = _guarded("sync_worker", lambda: _sync_worker(conn, max_beat))
        max_pending = config["READYZ_MAX_PENDING_AGE_SECONDS"]
        checks["outbox"] = _guarded("outbox", lambda: _outbox(conn, max_pending))
    return checks


def _guarded(name: str, check: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = check()
        return result
    except Exception as exc:
        log.warning("readyz: the %s check failed", name, exc_info=True)
        return {"ok": False, "error": type(exc).__name__}


def _schema() -> dict[str, Any]:
    found = dbschema.revisions()
    return {"ok": found.at_head, "current": found.current, "head": found.head}


def _sync_worker(conn: Connection, max_age: int) -> dict[str, Any]:
    with begin(write=False, on=conn):
        seen = heartbeat.summary(conn, timedelta(seconds=max_age))
    age = seen.age_seconds(utcnow())
    if age is None:
        return {
            "ok": False,
            "error": "no sync worker has ever written a heartbeat",
            "max_age_seconds": max_age,
        }
    return {
        "ok": age <= max_age,
        "last_beat_age_seconds": round(age, 1),
        "max_age_seconds": max_age,
        "fresh_workers": seen.fresh,
        "targets": list(seen.targets),  # SANDBOX, or the tenant ids the fresh workers serve
    }


def _outbox(conn: Connection, max_age: int) -> dict[str, Any]:
    with begin(write=False, on=conn):
        age = outbox.oldest_pending_seconds(conn)
    return {
        "ok": age is None or age < max_age,
        "oldest_pending_age_seconds": None if age is None else round(age, 1),
        "max_age_seconds": max_age,
    }


def _no_store(response: Response, status: int) -> Response:
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response
