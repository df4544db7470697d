"""Outbox retention (issue 13): delivered events are pruned after OUTBOX_RETENTION_DAYS, by
the sync worker on its own and by `sync prune`; dead letters stay until retried or
discarded (`sync discard`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from models import OutboxEvent, utcnow
from scim_server import config, outbox
from scim_server.db import begin, db
from scim_server.graph.client import GraphStats
from scim_server.graph.settings import GraphSettings
from scim_server.sync.runtime import Engine, Target
from tests.helpers import sample, scrape


def _event(
    status: str,
    completed: datetime | None = None,
    *,
    resource_id: str = "u1",
    event: str = "patched",
    payload: dict[str, Any] | None = None,
) -> int:
    """One outbox row in `status` (inside an app context), completed at `completed`."""
    outbox.record(db.session.connection(), "User", resource_id, event, payload or {"version": 1})
    event_id = int(db.session.scalar(sa.select(sa.func.max(OutboxEvent.id))) or 0)
    db.session.execute(
        sa.update(OutboxEvent)
        .where(OutboxEvent.id == event_id)
        .values(
            status=status, completed_at=completed, last_error="nope" if status == "dead" else None
        )
    )
    db.session.commit()
    return event_id


def _states(app: Flask) -> dict[int, str]:
    with app.app_context():
        rows = db.session.execute(sa.select(OutboxEvent.id, OutboxEvent.status)).all()
        db.session.remove()
    return {i: s for i, s in rows}


def _states_by_resource(app: Flask) -> dict[str, str]:
    with app.app_context():
        rows = db.session.execute(sa.select(OutboxEvent.resource_id, OutboxEvent.status)).all()
        db.session.remove()
    return {r: s for r, s in rows}


@pytest.fixture
def deletes(app: Flask) -> Iterator[list[str]]:
    """The DELETE statements sent to the database while the test runs."""
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM OUTBOX"):
            seen.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", listen)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", listen)


def test_prune_deletes_only_old_delivered_events_in_batches(app: Flask, deletes: list[str]) -> None:
    now = utcnow()
    old = now - timedelta(days=8)
    with app.app_context():
        old_done = [_event("done", old, resource_id=f"u{i}") for i in range(5)]
        recent = _event("done", now - timedelta(days=6))
        pending = _event("pending")  # created long ago or not, a pending event stays
        db.session.execute(
            sa.update(OutboxEvent).where(OutboxEvent.id == pending).values(created_at=old)
        )
        dead = _event("dead", old)
        db.session.commit()
        with db.engine.connect() as conn:
            assert outbox.prune(conn, now - timedelta(days=7), batch=2) == 5
        db.session.remove()
    assert len(deletes) == 3  # 2 + 2 + 1 ids, each DELETE its own short transaction
    states = _states(app)
    assert states == {recent: "done", pending: "pending", dead: "dead"}
    assert not set(old_done) & set(states)
    with app.app_context(), db.engine.connect() as conn:
        assert outbox.prune(conn, now - timedelta(days=7)) == 0


def test_a_prune_batch_takes_the_oldest_delivered_events_along_their_index(app: Flask) -> None:
    """Oldest completion first, whatever the ids; on SQLite the batch is found through
    ix_outbox_status_completed, not by walking every delivered event still kept."""
    now = utcnow()
    selects: list[tuple[str, Any]] = []

    def listen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT OUTBOX.ID"):
            selects.append((statement, parameters))

    with app.app_context():
        # Ids in the opposite order of completion: the last recorded completed first.
        later = _event("done", now - timedelta(days=9), resource_id="later")
        oldest = _event("done", now - timedelta(days=10), resource_id="oldest")
        asked = iter([False, True])  # one batch, then stop
        with db.engine.connect() as conn:
            sa.event.listen(conn, "before_cursor_execute", listen)
            before = now - timedelta(days=7)
            assert outbox.prune(conn, before, batch=1, stop=lambda: next(asked)) == 1
            sa.event.remove(conn, "before_cursor_execute", listen)
            assert len(selects) == 1
            if conn.dialect.name == "sqlite":
                statement, parameters = selects[0]
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                plan = " ".join(str(row[-1]) for row in rows)
                assert "ix_outbox_status_completed" in plan, plan
                assert "TEMP B-TREE" not in plan, plan  # the index gives the order too
        db.session.remove()
    assert oldest > later  # so the id order would have taken `later`
    assert set(_states(app)) == {later}  # `oldest` went in the one batch


def test_prune_skips_rows_another_pruner_holds(app: Flask) -> None:
    """On PostgreSQL (SKIP LOCKED) a second pruner neither waits for the first nor deletes
    the rows it holds; SQLite has one writer at a time, so the case does not arise."""
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("row locks are PostgreSQL's; SQLite serialises writers")
        old = utcnow() - timedelta(days=30)
        held = [_event("done", old, resource_id=f"h{i}") for i in range(3)]
        free = [_event("done", old, resource_id=f"f{i}") for i in range(4)]
        found: list[int] = []
        with db.engine.connect() as other:
            other.execute(
                sa.select(OutboxEvent.id).where(OutboxEvent.id.in_(held)).with_for_update()
            )

            def prune() -> None:
                with app.app_context(), db.engine.connect() as conn:
                    found.append(outbox.prune(conn, utcnow(), batch=2))

            pruner = threading.Thread(target=prune)
            pruner.start()
            pruner.join(60)  # a guard against a hang, not a measure of speed
            waited = pruner.is_alive()
            other.rollback()
            pruner.join()
        db.session.remove()
    assert not waited and found == [len(free)]
    assert set(_states(app)) == set(held)


def _engine(app: Flask) -> Engine:
    # An engine without worker threads: its heartbeat and prune threads run as in a worker.
    settings = GraphSettings(tenant_id="t", client_id="c", client_secret="s")
    return Engine(Target(settings, sandbox=False), [], app=app, stats=GraphStats())


def test_the_sync_worker_prunes_on_its_own(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "OUTBOX_RETENTION_DAYS", 7)
    monkeypatch.setitem(app.config, "OUTBOX_PRUNE_SECONDS", 0.2)
    with app.app_context():
        _event("done", utcnow() - timedelta(days=9), resource_id="u1")
        db.session.remove()
    engine = _engine(app).start()
    try:
        with app.app_context():
            _event("done", utcnow() - timedelta(days=8), resource_id="u2")
            _event("done", utcnow() - timedelta(days=1), resource_id="u3")
            _event("dead", utcnow() - timedelta(days=30), resource_id="u4")
            db.session.remove()
        deadline = time.monotonic() + 30
        while "u2" in _states_by_resource(app) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        engine.shutdown()
    # By resource, not by id: SQLite gives a new row the id of a deleted last one, so an
    # event recorded after the prune may carry the id of one it deleted.
    assert _states_by_resource(app) == {"u3": "done", "u4": "dead"}


def test_a_retention_of_zero_keeps_delivered_events(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "OUTBOX_RETENTION_DAYS", 0)
    with app.app_context():
        old = _event("done", utcnow() - timedelta(days=400))
        db.session.remove()
    assert _engine(app).prune() == 0
    said = app.test_cli_runner().invoke(args=["sync", "prune"])
    assert said.exit_code == 0, said.output
    assert "OUTBOX_RETENTION_DAYS is 0" in said.output
    assert old in _states(app)


def test_sync_prune_says_how_many_it_deleted(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "OUTBOX_RETENTION_DAYS", 7)
    with app.app_context():
        for i in range(3):
            _event("done", utcnow() - timedelta(days=10), resource_id=f"u{i}")
        recent = _event("done", utcnow() - timedelta(days=2), resource_id="r")
        pending = _event("pending", resource_id="p")
        db.session.remove()
    runner = app.test_cli_runner()
    said = runner.invoke(args=["sync", "prune"])
    assert said.exit_code == 0, said.output
    assert said.output.strip() == "Pruned 3 delivered event(s) older than 7 day(s)."
    assert set(_states(app)) == {recent, pending}
    said = runner.invoke(args=["sync", "prune", "--older-than", "1"])
    assert said.exit_code == 0 and "Pruned 1 " in said.output
    assert _states(app) == {pending: "pending"}
    bad = runner.invoke(args=["sync", "prune", "--older-than", "-1"])
    assert bad.exit_code == 2 and "--older-than" in bad.output


def test_discard_then_status_and_metrics(app: Flask, client: FlaskClient) -> None:
    old = utcnow() - timedelta(days=1)
    with app.app_context():
        first = _event("dead", old, resource_id="u1")
        # A dead password event whose sealed payload was never scrubbed: discarding takes it.
        password = _event("dead", old, resource_id="u1", event="password", payload={"sealed": "x"})
        other = _event("dead", old, resource_id="u2")
        later = _event("pending", resource_id="u1")
        done = _event("done", utcnow(), resource_id="u3")
        db.session.remove()
    assert sample(scrape(client), "scim_dead_letters") == 3
    runner = app.test_cli_runner()

    assert runner.invoke(args=["sync", "discard"]).exit_code == 2  # an ID or --all-dead
    unknown = runner.invoke(args=["sync", "discard", "999999"])
    assert unknown.exit_code == 1 and unknown.output.strip() == "No such dead letter."
    not_dead = runner.invoke(args=["sync", "discard", str(later)])
    assert not_dead.exit_code == 1  # a pending event is never discarded

    said = runner.invoke(args=["sync", "discard", str(password)])
    assert said.exit_code == 0 and said.output.strip() == "Discarded 1 dead letter(s)."
    with app.app_context():
        assert db.session.get(OutboxEvent, password) is None  # the sealed password with it
        db.session.remove()
    facts = json.loads(runner.invoke(args=["sync", "status", "--json"]).output)
    assert [d["id"] for d in facts["dead_letters"]] == [other, first]
    assert facts["outbox"] == {
        "rows": 4,
        "by_state": {"pending": 1, "done": 1, "dead": 2},
        "retention_days": app.config["OUTBOX_RETENTION_DAYS"],
    }

    said = runner.invoke(args=["sync", "discard", "--all-dead"])
    assert said.exit_code == 0 and "Discarded 2 " in said.output
    again = runner.invoke(args=["sync", "discard", "--all-dead"])
    assert again.exit_code == 1 and again.output.strip() == "No dead letters."
    status = runner.invoke(args=["sync", "status"])
    assert status.exit_code == 0, status.output
    assert "Dead letters" not in status.output and "0 dead" in status.output
    kept = app.config["OUTBOX_RETENTION_DAYS"]
    assert (
        f"Outbox: 2 rows (1 pending, 1 done, 0 dead; delivered events deleted after {kept} days)"
        in status.output.splitlines()
    )
    facts = json.loads(runner.invoke(args=["sync", "status", "--json"]).output)
    assert facts["dead_letters"] == [] and facts["backlog"]["dead"] == 0
    assert sample(scrape(client), "scim_dead_letters") == 0
    assert _states(app) == {later: "pending", done: "done"}
    # Nothing of the resource waits on what was discarded: its later event is claimed.
    with app.app_context(), begin(write=True) as conn:
        claimed = outbox.claim(conn, "test-worker")
    assert [c.id for c in claimed] == [later]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("seven", "OUTBOX_RETENTION_DAYS must be an integer, got 'seven'"),
        ("-1", "OUTBOX_RETENTION_DAYS must be at least 0, got -1"),
        ("36501", "OUTBOX_RETENTION_DAYS must be at most 36500"),
    ],
)
def test_a_bad_retention_is_a_config_error_naming_it(
    raw: str, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("OUTBOX_RETENTION_DAYS", raw)
    with pytest.raises(config.ConfigError, match=message):
        config.load(str(tmp_path))


def test_the_retention_settings_default_and_zero(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("OUTBOX_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("OUTBOX_PRUNE_SECONDS", raising=False)
    settings = config.load(str(tmp_path))
    assert (settings.outbox_retention_days, settings.outbox_prune_seconds) == (7, 300)
    monkeypatch.setenv("OUTBOX_RETENTION_DAYS", "0")
    monkeypatch.setenv("OUTBOX_PRUNE_SECONDS", "0")
    with pytest.raises(config.ConfigError, match="OUTBOX_PRUNE_SECONDS must be at least 1"):
        config.load(str(tmp_path))
    monkeypatch.setenv("OUTBOX_PRUNE_SECONDS", "60")
    assert config.load(str(tmp_path)).to_flask()["OUTBOX_RETENTION_DAYS"] == 0
