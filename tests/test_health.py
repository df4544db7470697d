"""/healthz and /readyz in-process, and the sync workers' heartbeat rows they read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from models import OutboxEvent, SyncWorker, utcnow
from scim_server import create_app
from scim_server.db import begin, db
from scim_server.graph.client import GraphStats
from scim_server.graph.settings import GraphSettings
from scim_server.sync import heartbeat
from scim_server.sync.runtime import Engine, Target
from tests.conftest import ScimClient


def _beat(app: Flask, worker_id: str = "host-a:1", ago: float = 0.0, **counters: object) -> None:
    with app.app_context():
        heartbeat.beat(db.session.connection(), worker_id, "sandbox", utcnow(), dict(counters))
        if ago:
            db.session.execute(
                sa.update(SyncWorker)
                .where(SyncWorker.id == worker_id)
                .values(beat_at=utcnow() - timedelta(seconds=ago))
            )
        db.session.commit()
        db.session.remove()


def test_healthz_answers_without_a_token(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_without_any_sync_worker_is_not_ready(app: Flask, client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "not_ready"
    checks = body["checks"]
    assert checks["database"] == {"ok": True}
    assert checks["schema"]["ok"] is True and checks["schema"]["head"] == "0010"
    assert checks["sync_worker"]["ok"] is False
    assert checks["sync_worker"]["error"] == "no sync worker has ever written a heartbeat"
    assert checks["outbox"]["ok"] is True
    assert app.config["SQLALCHEMY_DATABASE_URI"] not in response.get_data(as_text=True)


def test_readyz_is_ready_while_a_worker_beats(app: Flask, client: FlaskClient) -> None:
    _beat(app)
    response = client.get("/readyz")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["sync_worker"]["fresh_workers"] == 1
    assert body["checks"]["sync_worker"]["targets"] == ["SANDBOX"]  # says what it serves


def test_readyz_is_not_ready_when_the_newest_beat_is_too_old(
    app: Flask, client: FlaskClient
) -> None:
    max_age = app.config["SYNC_HEARTBEAT_MAX_AGE_SECONDS"]
    _beat(app, "host-a:1", ago=max_age + 5)
    _beat(app, "host-b:2", ago=max_age + 1)
    response = client.get("/readyz")
    assert response.status_code == 503
    seen = response.get_json()["checks"]["sync_worker"]
    assert seen["ok"] is False and seen["fresh_workers"] == 0 and seen["targets"] == []
    assert max_age + 1 <= seen["last_beat_age_seconds"] < max_age + 5  # the newest counts


def test_readyz_is_not_ready_when_a_change_waits_too_long(
    app: Flask, client: FlaskClient, scim: ScimClient
) -> None:
    _beat(app)
    scim.user("waiting@example.com")
    assert client.get("/readyz").status_code == 200
    limit = app.config["READYZ_MAX_PENDING_AGE_SECONDS"]
    with app.app_context():
        db.session.execute(
            sa.update(OutboxEvent).values(created_at=utcnow() - timedelta(seconds=limit + 60))
        )
        db.session.commit()
        db.session.remove()
    response = client.get("/readyz")
    assert response.status_code == 503
    outbox = response.get_json()["checks"]["outbox"]
    assert outbox["ok"] is False and outbox["oldest_pending_age_seconds"] >= limit + 60


@pytest.fixture
def behind(app: Flask) -> Iterator[None]:
    """The database one migration behind the code, for the length of a test."""
    with app.app_context():
        head = db.session.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        db.session.execute(sa.text("UPDATE alembic_version SET version_num = '0005'"))
        db.session.commit()
    try:
        yield
    finally:
        with app.app_context():
            db.session.execute(
                sa.text("UPDATE alembic_version SET version_num = :head"), {"head": head}
            )
            db.session.commit()
            db.session.remove()


def test_readyz_is_not_ready_when_the_schema_is_behind(
    app: Flask, client: FlaskClient, behind: None
) -> None:
    _beat(app)
    response = client.get("/readyz")
    assert response.status_code == 503
    schema = response.get_json()["checks"]["schema"]
    assert schema == {"ok": False, "current": "0005", "head": "0010"}


def test_an_unreachable_database_is_named_only_by_the_error_type(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'scim.sqlite3'}"
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url})
    client = app.test_client()
    assert client.get("/healthz").status_code == 200  # liveness touches no database
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.get_json()["checks"]
    assert checks["database"] == {"ok": False, "error": "OperationalError"}
    assert all(not check["ok"] for check in checks.values())
    assert str(tmp_path) not in response.get_data(as_text=True)
    with app.app_context():
        db.engine.dispose()


# ---------------------------------------------------------------- heartbeat rows


def test_folding_keeps_the_sums_and_the_newest_beat(app: Flask) -> None:
    old = heartbeat.STALE_AFTER.total_seconds() + 60
    _beat(app, "gone:1", ago=old, delivered={"user": 3}, graph_requests={"200": 5})
    _beat(app, "gone:2", ago=old + 10, delivered={"user": 1, "group": 2}, graph_throttled=1)
    _beat(app, "live:3", delivered={"user": 7}, graph_requests={"200": 1, "429": 1})
    with app.app_context():
        with begin(write=True) as conn:
            before = heartbeat.summary(conn, timedelta(seconds=60))
            assert heartbeat.fold(conn) == 2
        with begin(write=False) as conn:
            after = heartbeat.summary(conn, timedelta(seconds=60))
        ids = sorted(db.session.scalars(sa.select(SyncWorker.id)))
        db.session.remove()
    assert ids == ["live:3", "retired"]
    assert (
        after.counters
        == before.counters
        == {
            "delivered": {"user": 11, "group": 2},
            "graph_requests": {"200": 6, "429": 1},
            "graph_throttled": 1,
        }
    )
    assert after.fresh == before.fresh == 1


def test_an_engine_beats_at_start_and_retires_its_row_as_it_stops(app: Flask) -> None:
    settings = GraphSettings(tenant_id="t", client_id="c", client_secret="s")
    stats = GraphStats()
    engine = Engine(Target(settings, sandbox=False), [], app=app, stats=stats)
    engine.start()
    with app.app_context():
        row = db.session.get(SyncWorker, engine.worker_id)
        assert row is not None and row.target == "t"
        db.session.remove()
    stats.count(200)
    stats.count(429)
    stats.count(None)
    engine.shutdown()
    with app.app_context():
        assert db.session.get(SyncWorker, engine.worker_id) is None
        retired = db.session.get(SyncWorker, heartbeat.RETIRED)
        assert retired is not None
        assert retired.counters == {
            "delivered": {},
            "graph_requests": {"200": 1, "429": 1, "error": 1},
            "graph_throttled": 1,
        }
        db.session.remove()
