"""On SQLite the WAL is copied back into the database file by a thread of each process, so
the request whose write made it due does not wait for the checkpoint's writes and fsyncs."""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask

from scim_server import db as dbmodule
from tests.conftest import ScimClient

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
def sqlite_path(app: Flask) -> str:
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if not url.startswith("sqlite:///"):
        pytest.skip("SQLite's WAL checkpoints: the suite runs on PostgreSQL")
    return str(url.removeprefix("sqlite:///"))


def test_every_so_many_writes_the_checkpointer_thread_runs_a_checkpoint(
    scim: ScimClient, sqlite_path: str
) -> None:
    before = dbmodule.checkpointer.done
    for i in range(dbmodule.CHECKPOINT_EVERY + 1):
        response = scim.post("/scim/v2/Users", {"schemas": [USER], "userName": f"ckpt{i}"})
        assert response.status_code == 201
    deadline = time.monotonic() + 10
    while dbmodule.checkpointer.done == before:
        assert time.monotonic() < deadline, "no checkpoint ran"
        time.sleep(0.01)
    assert "sqlite-checkpoint" in {thread.name for thread in threading.enumerate()}
