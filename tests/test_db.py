"""db.begin, the one way the server opens a transaction: it commits a block that ends, rolls
back one that raises, and on SQLite lets a reader run beside a writer while writers queue."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine, delete, insert, select

from models import LoginThrottle, utcnow
from scim_server.db import begin, db


@pytest.fixture
def engine(app: Flask) -> Iterator[Engine]:
    with app.app_context():
        engine = db.engine
    yield engine
    with begin(write=True, engine=engine) as conn:
        conn.execute(delete(LoginThrottle).where(LoginThrottle.key.like("test-db:%")))


def _row(key: str) -> dict[str, object]:
    return {"key": key, "failures": 1, "window_started_at": utcnow()}


def _keys(engine: Engine) -> set[str]:
    with begin(write=False, engine=engine) as conn:
        found = conn.execute(select(LoginThrottle.key).where(LoginThrottle.key.like("test-db:%")))
        return set(found.scalars())


def test_a_block_that_ends_commits_and_one_that_raises_rolls_back(engine: Engine) -> None:
    with begin(write=True, engine=engine) as conn:
        conn.execute(insert(LoginThrottle), [_row("test-db:kept")])
    with pytest.raises(RuntimeError), begin(write=True, engine=engine) as conn:
        conn.execute(insert(LoginThrottle), [_row("test-db:undone")])
        raise RuntimeError("the change fails after its first statement")
    assert _keys(engine) == {"test-db:kept"}


def test_one_connection_serves_a_read_then_a_write(engine: Engine) -> None:
    with engine.connect() as conn:
        with begin(write=False, on=conn):
            found = conn.execute(
                select(LoginThrottle.key).where(LoginThrottle.key.like("test-db:%"))
            )
            assert found.all() == []
        with begin(write=True, on=conn):
            conn.execute(insert(LoginThrottle), [_row("test-db:second")])
        # The write lock went with the write's transaction: another writer gets in now.
        done = threading.Event()

        def other_writer() -> None:
            with begin(write=True, engine=engine) as other:
                other.execute(insert(LoginThrottle), [_row("test-db:other")])
            done.set()

        thread = threading.Thread(target=other_writer)
        thread.start()
        assert done.wait(10)
        thread.join()
    assert _keys(engine) == {"test-db:second", "test-db:other"}


def test_on_sqlite_a_reader_runs_while_a_writer_holds_the_lock(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("the write lock (flock and BEGIN IMMEDIATE) is SQLite's")
    read: list[set[str]] = []
    queued = threading.Event()
    wrote = threading.Event()
    with begin(write=True, engine=engine) as conn:
        conn.execute(insert(LoginThrottle), [_row("test-db:uncommitted")])

        def reader() -> None:
            read.append(_keys(engine))

        def writer() -> None:
            queued.set()
            with begin(write=True, engine=engine) as other:
                other.execute(insert(LoginThrottle), [_row("test-db:queued")])
            wrote.set()

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(10)
        # The reader did not wait for the writer, and saw only what was committed.
        assert read == [set()]
        second = threading.Thread(target=writer)
        second.start()
        assert queued.wait(10)
        # The second writer queues for the lock until the first commits.
        assert not wrote.wait(0.5)
    assert wrote.wait(10)
    second.join()
    assert _keys(engine) == {"test-db:uncommitted", "test-db:queued"}


def test_a_read_sees_one_snapshot_for_all_its_statements(engine: Engine) -> None:
    """On SQLite a reading transaction begins at once (BEGIN, said by `begin` itself), so a
    commit made between two of its statements is not seen by the second."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL runs READ COMMITTED: each statement sees what was committed")
    with begin(write=False, engine=engine) as conn:
        assert _keys(engine) == set()  # another transaction, before the commit below
        first = set(
            conn.execute(
                select(LoginThrottle.key).where(LoginThrottle.key.like("test-db:%"))
            ).scalars()
        )
        with begin(write=True, engine=engine) as other:
            other.execute(insert(LoginThrottle), [_row("test-db:meanwhile")])
        second = set(
            conn.execute(
                select(LoginThrottle.key).where(LoginThrottle.key.like("test-db:%"))
            ).scalars()
        )
    assert first == second == set()
    assert _keys(engine) == {"test-db:meanwhile"}


def test_a_transaction_outside_begin_still_commits_its_writes_together(engine: Engine) -> None:
    """A tool's engine.begin() (no `begin`): its writes commit together or not at all."""
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(insert(LoginThrottle), [_row("test-db:one")])
        conn.execute(insert(LoginThrottle), [_row("test-db:two")])
        raise RuntimeError("fails after two writes")
    assert _keys(engine) == set()
