"""/metrics in-process: the HTTP series' labels, the series read from the database, the
optional token, the multiprocess directory, and the cost of the scrape's queries."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, insert, select

from models import OutboxEvent, utcnow
from scim_server import metrics
from scim_server.db import db
from scim_server.sync import heartbeat
from tests.conftest import ScimClient
from tests.helpers import sample, scrape


def test_requests_are_counted_by_route_never_by_raw_path(
    client: FlaskClient, scim: ScimClient
) -> None:
    before = scrape(client)
    user = scim.user("bjensen@example.com")
    for _ in range(3):
        assert scim.get(f"/Users/{user['id']}").status_code == 200
    assert scim.get("/Users/no-such-id").status_code == 404
    assert client.get("/no/such/route").status_code == 404
    assert client.open("/healthz", method="BREW").status_code == 405
    after = scrape(client)

    def rose(name: str, **labels: str) -> float:
        return (sample(after, name, **labels) or 0) - (sample(before, name, **labels) or 0)

    by_id = "/scim/v2/Users/<ident>"
    assert rose("scim_http_requests_total", method="GET", route=by_id, status="200") == 3
    assert rose("scim_http_requests_total", method="GET", route=by_id, status="404") == 1
    assert rose("scim_http_requests_total", method="POST", route="/scim/v2/Users", status="201")
    assert rose("scim_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert rose("scim_http_requests_total", method="other", route="unmatched", status="405") == 1
    assert rose("scim_http_request_duration_seconds_count", method="GET", route=by_id) == 4
    assert user["id"] not in after and "no-such-id" not in after  # ids are never labels


def test_a_refused_request_is_counted_too(client: FlaskClient, anonymous: ScimClient) -> None:
    """The token check answers 401 before the view runs; the rule had matched already."""
    labels = {"method": "GET", "route": "/scim/v2/Users", "status": "401"}
    before = sample(scrape(client), "scim_http_requests_total", **labels) or 0
    assert anonymous.get("/Users").status_code == 401
    after = sample(scrape(client), "scim_http_requests_total", **labels)
    assert after == before + 1


def test_database_series(app: Flask, client: FlaskClient, scim: ScimClient) -> None:
    text = scrape(client)
    assert sample(text, "scim_outbox_events", state="pending") == 0
    assert sample(text, "scim_dead_letters") == 0
    assert sample(text, "scim_sync_worker_heartbeat_age_seconds") == float("inf")
    assert sample(text, "scim_graph_throttled_total") == 0

    scim.user("a@example.com")
    scim.user("b@example.com")
    with app.app_context():
        first = db.session.scalar(select(func.min(OutboxEvent.id)))
        db.session.execute(
            sa.update(OutboxEvent)
            .where(OutboxEvent.id == first)
            .values(status="dead", created_at=utcnow() - timedelta(hours=1))
        )
        db.session.execute(
            sa.update(OutboxEvent)
            .where(OutboxEvent.id != first)
            .values(created_at=utcnow() - timedelta(seconds=120))
        )
        for n, row in enumerate(("x:1", "y:2")):
            heartbeat.beat(
                db.session.connection(),
                row,
                "sandbox",
                utcnow(),
                {
                    "delivered": {"user": 2 + n, "group": 1},
                    "graph_requests": {"200": 10, "429": n},
                    "graph_throttled": n,
                },
            )
        db.session.commit()
        db.session.remove()
    text = scrape(client)
    assert sample(text, "scim_outbox_events", state="pending") == 1
    assert sample(text, "scim_outbox_events", state="dead") == 1
    assert sample(text, "scim_dead_letters") == 1
    oldest = sample(text, "scim_outbox_oldest_pending_seconds")
    assert oldest is not None and 120 <= oldest < 3600  # the dead one is not pending
    age = sample(text, "scim_sync_worker_heartbeat_age_seconds")
    assert age is not None and 0 <= age < 60
    assert sample(text, "scim_sync_delivered_total", kind="user") == 5
    assert sample(text, "scim_sync_delivered_total", kind="group") == 2
    assert sample(text, "scim_graph_requests_total", status="200") == 20
    assert sample(text, "scim_graph_requests_total", status="429") == 1
    assert sample(text, "scim_graph_throttled_total") == 1


def test_metrics_token(app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "metrics-scraper-token-0123456789"
    monkeypatch.setitem(
        app.config, "METRICS_TOKEN_SHA256", hashlib.sha256(token.encode()).hexdigest()
    )
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": token}).status_code == 401
    good = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert good.status_code == 200 and b"scim_dead_letters" in good.data


def test_the_metrics_token_is_kept_only_as_its_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    from scim_server import config

    monkeypatch.setenv("METRICS_TOKEN", "metrics-scraper-token-0123456789")
    settings = config.load("/tmp/instance")
    assert "metrics-scraper-token-0123456789" not in repr(settings)
    monkeypatch.setenv("METRICS_TOKEN", "short")
    with pytest.raises(config.ConfigError, match="METRICS_TOKEN"):
        config.load("/tmp/instance")


def test_prepare_multiprocess_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.ENV, raising=False)
    made = metrics.prepare_multiprocess_dir()
    assert os.environ[metrics.ENV] == made and Path(made).is_dir()
    assert list(Path(made).iterdir()) == []
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    monkeypatch.setenv(metrics.ENV, str(given))
    assert metrics.prepare_multiprocess_dir() == str(given)
    assert sorted(p.name for p in given.iterdir()) == ["keep.txt"]
    os.rmdir(made)


def _plan(app: Flask, statement: sa.Select[tuple[object, ...]]) -> str:
    with app.app_context():
        dialect = db.engine.dialect
        sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        if dialect.name == "sqlite":
            rows = db.session.execute(sa.text("EXPLAIN QUERY PLAN " + sql)).all()
            plan = "\n".join(str(r[-1]) for r in rows)
        else:
            rows = db.session.execute(sa.text("EXPLAIN " + sql)).all()
            plan = "\n".join(str(r[0]) for r in rows)
        db.session.remove()
    return plan


def test_the_scrape_reads_index_ranges_not_the_whole_outbox(app: Flask) -> None:
    """The counts and the oldest pending event read an index on status ((status, id), or
    (status, completed_at) for the counts) for the pending and dead events only: their cost
    follows those, not the delivered history."""
    now = utcnow()
    with app.app_context():
        row = {"resource_type": "User", "event": "patched", "payload": {}, "attempts": 0}
        db.session.execute(
            insert(OutboxEvent),
            [
                {**row, "resource_id": f"u{n}", "status": "done", "created_at": now}
                for n in range(20_000)
            ]
            + [
                {**row, "resource_id": f"p{n}", "status": "pending", "created_at": now}
                for n in range(5)
            ],
        )
        db.session.commit()
        db.session.execute(sa.text("ANALYZE"))
        db.session.commit()
        db.session.remove()
    counts = (
        select(OutboxEvent.status, func.count())
        .where(OutboxEvent.status.in_(metrics.OUTBOX_STATES))
        .group_by(OutboxEvent.status)
    )
    oldest = (
        select(OutboxEvent.created_at)
        .where(OutboxEvent.status == "pending")
        .order_by(OutboxEvent.id)
        .limit(1)
    )
    for statement in (counts, oldest):
        plan = _plan(app, statement)
        assert "ix_outbox_status_id" in plan or "ix_outbox_status_completed" in plan, plan
        assert "SCAN outbox" not in plan and "Seq Scan" not in plan, plan
