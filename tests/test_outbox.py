"""Every write records an outbox event in the same transaction; workers claim in order."""

from __future__ import annotations

import os
import threading

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from models import OutboxEvent
from scim_server import outbox
from scim_server.db import begin
from tests.conftest import ScimClient


def _events(app: Flask) -> list[tuple[str, str, str]]:
    from scim_server.db import db

    with app.app_context():
        rows = db.session.scalars(sa.select(OutboxEvent).order_by(OutboxEvent.id))
        return [(r.resource_type, r.resource_id, r.event) for r in rows]


def test_each_write_records_one_event(scim: ScimClient, app: Flask) -> None:
    user = scim.user("a")
    scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": "x"}],
        },
    )
    group = scim.group("G", members=[user["id"]])
    scim.delete(f"/Users/{user['id']}")
    assert _events(app) == [
        ("User", user["id"], "created"),
        ("User", user["id"], "patched"),
        ("Group", group["id"], "created"),
        ("User", user["id"], "deleted"),
    ]


def test_failed_write_records_nothing(scim: ScimClient, app: Flask) -> None:
    scim.user("a")
    assert scim.post("/Users", {"userName": "A"}).status_code == 409
    assert len(_events(app)) == 1


def test_password_never_in_outbox(scim: ScimClient, app: Flask) -> None:
    scim.user("a", password="Very-secret-1")
    from scim_server.db import db

    with app.app_context():
        payloads = [str(p) for p in db.session.scalars(sa.select(OutboxEvent.payload))]
    assert all("Very-secret-1" not in p for p in payloads)


def test_claim_takes_only_the_head_of_each_resource(scim: ScimClient, app: Flask) -> None:
    a = scim.user("a")
    scim.put(f"/Users/{a['id']}", {"userName": "a", "title": "t"})
    b = scim.user("b")

    with app.app_context():
        with begin(write=True) as conn:
            first = outbox.claim(conn, "w1")
        assert [(e.resource_id, e.event) for e in first] == [
            (a["id"], "created"),
            (b["id"], "created"),
        ]
        # a's second event waits until its first is done.
        with begin(write=True) as conn:
            assert outbox.claim(conn, "w2") == []
        with begin(write=True) as conn:
            outbox.complete(conn, first[0].id)
        with begin(write=True) as conn:
            second = outbox.claim(conn, "w2")
        assert [(e.resource_id, e.event) for e in second] == [(a["id"], "replaced")]


@pytest.mark.skipif(
    not os.environ.get("SCIM_TEST_DATABASE_URL"),
    reason="SKIP LOCKED needs PostgreSQL; this run is on SQLite",
)
def test_concurrent_workers_skip_locked_rows(scim: ScimClient, app: Flask) -> None:
    for i in range(6):
        scim.user(f"u{i}")
    from scim_server.db import db

    with app.app_context():
        engine = db.engine

    def claim() -> None:
        with begin(write=True, engine=engine) as conn:
            result.append([e.id for e in outbox.claim(conn, "w2")])

    # Worker 1 holds its claim open (no commit) while worker 2 claims: SKIP LOCKED means
    # worker 2 neither blocks nor takes worker 1's rows.
    with Session(engine) as s1:
        locked = s1.scalars(
            sa.select(OutboxEvent)
            .order_by(OutboxEvent.id)
            .limit(3)
            .with_for_update(skip_locked=True)
        ).all()
        result: list[list[int]] = []
        t = threading.Thread(target=claim)
        t.start()
        t.join(timeout=10)
        assert not t.is_alive(), "the second worker blocked on locked rows"
        assert set(result[0]).isdisjoint({e.id for e in locked})
        assert len(result[0]) == 3
        s1.rollback()


@pytest.mark.parametrize(
    ("resource_type", "kind", "payload"),
    [
        ("User", "patched", {"version": "2"}),  # mistyped
        ("User", "patched", {"password_changed": True}),  # missing version
        ("User", "bound", {"objectId": "x", "extra": 1}),  # unknown key
        ("User", "password", {"check": True}),  # no sealed password
        ("Group", "patched", {"version": 2, "added": ["a", 3]}),
        ("Group", "unbind", {"suspend": True}),  # not a group's kind
        ("User", "members_added", {"version": 1}),  # never a kind
    ],
)
def test_a_payload_that_is_not_its_kinds_is_refused_and_nothing_is_written(
    app: Flask, resource_type: str, kind: str, payload: dict[str, object]
) -> None:
    from scim_server.db import db

    with app.app_context():
        with pytest.raises(outbox.PayloadError), begin(write=True) as conn:
            outbox.record(conn, resource_type, "r1", kind, payload)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxEvent)) == 0


def test_a_malformed_row_written_by_hand_is_a_dead_letter_not_a_delivery(app: Flask) -> None:
    """Payloads are checked when loaded too: the head of a queue whose payload is not its
    kind's becomes a dead letter (keeping why), and the resource's next event is claimed."""
    from scim_server.db import db

    with app.app_context():
        with begin(write=True) as conn:
            outbox.record(conn, "User", "u1", "patched", {"version": 2})
            outbox.record(conn, "User", "u1", "patched", {"version": 3})
        first, second = db.session.scalars(sa.select(OutboxEvent.id).order_by(OutboxEvent.id))
        db.session.execute(
            sa.update(OutboxEvent).where(OutboxEvent.id == first).values(payload={"v": "x"})
        )
        db.session.commit()
        with begin(write=True) as conn:
            claimed = outbox.claim(conn, "w1")
        assert [e.id for e in claimed] == []  # the head is dead; its follower waited behind it
        dead = db.session.get(OutboxEvent, first)
        assert dead is not None and dead.status == "dead"
        assert "unknown v" in (dead.last_error or "") and "missing version" in dead.last_error
        db.session.commit()
        with begin(write=True) as conn:
            assert [e.id for e in outbox.claim(conn, "w1")] == [second]


def test_a_scrubbed_password_queued_again_loads(app: Flask) -> None:
    """`sync retry` of a dead password event: its payload was scrubbed, and it still loads
    (its delivery sends the user's state, with no password)."""
    from scim_server.db import db

    with app.app_context():
        with begin(write=True) as conn:
            outbox.record(conn, "User", "u1", "password", {"sealed": "token"})
            (event_id,) = conn.scalars(sa.select(OutboxEvent.id))
            outbox.dead(conn, event_id, "gone")
        assert db.session.get(OutboxEvent, event_id).payload == {}  # type: ignore[union-attr]
        db.session.commit()
        with begin(write=True) as conn:
            assert outbox.retry_dead(conn, [event_id]) == 1
        with begin(write=True) as conn:
            (claimed,) = outbox.claim(conn, "w1")
        assert (claimed.id, claimed.payload) == (event_id, {})


def test_only_the_outbox_module_moves_events_and_links() -> None:
    """Issue 13: one module owns every transition of outbox events and M365 links; every
    other module reads them, or calls it."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "scim_server"
    writes = re.compile(
        r"(insert|update|delete)\(\s*(OutboxEvent|M365Link)\b"
        r"|(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(outbox|m365_links)\b",
        re.IGNORECASE,
    )
    found = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "migrations" not in path.parts and writes.search(path.read_text())
    }
    assert found == {"outbox.py"}
