"""One database per test session (SQLite by default, PostgreSQL when SCIM_TEST_DATABASE_URL
is set), built with the real Alembic migrations; every test starts from empty tables."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from models import Base
from scim_server import create_app
from scim_server.config import normalise_database_url
from scim_server.graph.client import GraphClient
from scim_server.sync.pacer import Pacer
from scim_server.sync.policy import Policy
from scim_server.sync.settings import SyncSettings
from scim_server.sync.worker import Worker

# The Graph emulator's fixtures, for every test module.
from tests.graph_emulator import (  # noqa: F401
    RunningEmulator,
    graph_emulator,
    graph_emulator_server,
    settings_for,
    tenant_env,
)
from tests.smtp_server import Inbox, smtp_server

MakeWorker = Callable[..., Worker]

SCIM = "application/scim+json"

# The suite's sync delivers to the sandbox tenant (the built-in emulator), as `make run` does
# with --sandbox; a test of the choice of target removes it from the processes it starts.
os.environ.setdefault("GRAPH_SANDBOX", "1")


def _postgres_database(url: str) -> str:
    """A fresh database beside the one named in the URL, so a run never touches real data."""
    base = sa.make_url(normalise_database_url(url))
    name = f"scim_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


def _drop_postgres_database(url: str) -> None:
    target = sa.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("SCIM_TEST_DATABASE_URL")
    if external:
        url = _postgres_database(external)
        yield url
        _drop_postgres_database(url)
    else:
        path: Path = tmp_path_factory.mktemp("db") / "scim.sqlite3"
        yield f"sqlite:///{path}"


@pytest.fixture(scope="session")
def app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "SCIM_BULK_MAX_OPERATIONS": 50,
            "SCIM_BULK_MAX_PAYLOAD_SIZE": 200_000,
            "SCIM_MAX_PAGE_SIZE": 200,
            "MAX_CONTENT_LENGTH": 1_000_000,
        }
    )
    from scim_server.db import db
    from scim_server.dbschema import upgrade

    with app.app_context():
        upgrade()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(autouse=True)
def _empty_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    if "app" not in request.fixturenames:
        yield
        return
    app: Flask = request.getfixturevalue("app")
    from scim_server.db import db

    with app.app_context():
        tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
        if db.engine.dialect.name == "postgresql":
            db.session.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                db.session.execute(sa.text(f"DELETE FROM {table}"))
        db.session.commit()
    from scim_server import auth

    # What the process remembers of credentials (cache, last-use memo, locked addresses)
    # must not outlive the rows it speaks of.
    auth.reset_memory()
    yield


def _token(app: Flask, name: str, read_only: bool = False) -> str:
    from scim_server import auth

    with app.app_context():
        _, secret = auth.create_token(name, read_only=read_only)
    return secret


class ScimClient:
    """A test client that speaks SCIM JSON with a bearer token."""

    def __init__(self, client: FlaskClient, token: str | None) -> None:
        self.client = client
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> Any:
        h = {"Content-Type": SCIM}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(headers or {})
        url = path if path.startswith("/scim") else "/scim/v2" + path
        return self.client.open(url, method=method, json=body, headers=h, **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    # factories
    def user(self, user_name: str = "bjensen", **attrs: Any) -> dict[str, Any]:
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
            **attrs,
        }
        response = self.post("/Users", body)
        assert response.status_code == 201, response.get_json()
        return dict(response.get_json())

    def group(
        self, name: str = "Admins", members: list[str] | None = None, **attrs: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
            **attrs,
        }
        if members is not None:
            body["members"] = [{"value": m} for m in members]
        response = self.post("/Groups", body)
        assert response.status_code == 201, response.get_json()
        return dict(response.get_json())


@pytest.fixture
def scim(app: Flask) -> ScimClient:
    return ScimClient(app.test_client(), _token(app, "test"))


@pytest.fixture
def scim_read_only(app: Flask) -> ScimClient:
    return ScimClient(app.test_client(), _token(app, "reader", read_only=True))


@pytest.fixture
def anonymous(app: Flask) -> ScimClient:
    return ScimClient(app.test_client(), None)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A plain browser-like client (the user portal's HTML forms)."""
    return app.test_client()


@pytest.fixture()
def fresh_database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of its own: a SQLite file, or a new PostgreSQL database in a
    PostgreSQL run (dropped afterwards)."""
    external = os.environ.get("SCIM_TEST_DATABASE_URL")
    if not external:
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    url = _postgres_database(external)
    try:
        yield url
    finally:
        _drop_postgres_database(url)


@pytest.fixture
def make_worker(app: Flask, graph_emulator: RunningEmulator) -> MakeWorker:  # noqa: F811
    """Sync workers delivering to the emulator, fast to retry; `settings`: SyncSettings."""

    def make(**settings: Any) -> Worker:
        sync = SyncSettings(**{"sync_domains": ("example.com",), **settings})
        return Worker(
            app,
            GraphClient(settings_for(graph_emulator)),
            sync,
            sync.sync_domains,
            name="test-worker",
            pacer=Pacer(1000),
            policy=Policy(max_attempts=5, base_seconds=0.02, cap_seconds=0.2),
            rng=random.Random(7),
        )

    return make


@pytest.fixture
def worker(app: Flask, graph_emulator: RunningEmulator) -> Worker:  # noqa: F811
    """A sync worker that gives up after three tries (test_sync_worker has its own)."""
    sync = SyncSettings(sync_domains=("example.com",))
    return Worker(
        app,
        GraphClient(settings_for(graph_emulator)),
        sync,
        sync.sync_domains,
        pacer=Pacer(1000),
        policy=Policy(max_attempts=3, base_seconds=0.02, cap_seconds=0.1),
        rng=random.Random(3),
    )


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """A real SMTP server (aiosmtpd) on loopback, named by the SMTP_* settings."""
    with smtp_server() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server
