"""Issue 13: every change that records an outbox event commits the event in the change's own
transaction, so a crash can lose neither one without the other.

The import is killed (SIGKILL) at random points while it binds, and the database checked:
every link whose directory user exists has its event, and a rerun completes the rest without
duplicates. The portal check and activation are shown to decide and record in one
transaction: a change made by someone else between their read and their write, or a failure
after the write began, leaves no event behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select, update

from models import ActivationToken, M365Link, OutboxEvent, User, utcnow
from scim_server import activation, directory, sealing
from scim_server.auth import hash_token
from scim_server.db import begin, db
from scim_server.portal import accounts
from tests.conftest import ScimClient
from tests.graph_emulator import RunningEmulator, graph_env

CLI = str(Path(sys.executable).parent / "scim-server")
ACCOUNTS = 400  # half of them match directory users, half are created


def _seed(emulator: RunningEmulator, app: Flask) -> set[str]:
    """The tenant's accounts, and the directory users half of them match: their ids."""

    def account(i: int) -> None:
        emulator.create_user(
            userPrincipalName=f"kill{i:04d}@example.com",
            mailNickname=f"kill{i:04d}",
            givenName=f"Given{i}",
            surname=f"Sur{i}",
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(account, range(ACCOUNTS)))
    with app.app_context():
        matched = {
            directory.create_user({"userName": f"kill{i:04d}@example.com"}, "")[0]["id"]
            for i in range(0, ACCOUNTS, 2)
        }
        db.session.remove()
    return matched


def _bound_count() -> int:
    # A reading transaction: on SQLite it waits for no write lock.
    with begin(write=False) as conn:
        return len(
            conn.execute(select(M365Link.resource_id).where(M365Link.object_id.is_not(None))).all()
        )


def _state(app: Flask) -> tuple[dict[str, str], set[str], dict[str, list[str]]]:
    """(user id -> object id of its link, the users, user id -> its bound/created events)."""
    with app.app_context(), begin(write=False) as conn:
        links = dict(
            conn.execute(
                select(M365Link.resource_id, M365Link.object_id).where(
                    M365Link.resource_type == "User", M365Link.object_id.is_not(None)
                )
            ).all()
        )
        users = set(conn.execute(select(User.id)).scalars())
        events: dict[str, list[str]] = {}
        for rid, event in conn.execute(
            select(OutboxEvent.resource_id, OutboxEvent.event)
            .where(OutboxEvent.resource_type == "User", OutboxEvent.event.in_(("bound", "created")))
            .order_by(OutboxEvent.id)
        ):
            events.setdefault(rid, []).append(event)
    return links, users, events


def _check_nothing_lost(app: Flask, matched: set[str]) -> int:
    """Every link whose user exists has its one event: the takeover's `bound` for a user
    that was there, the `created` of a user made for the account; no user has an event twice.
    Returns the links without a user: creates interrupted between the link and the user,
    which the next import resumes."""
    links, users, events = _state(app)
    for user_id in links:
        if user_id in matched:
            assert events[user_id] == ["created", "bound"], (user_id, events.get(user_id))
        elif user_id in users:
            assert events.get(user_id) == ["created"], (user_id, events.get(user_id))
    for user_id in users - set(links):  # not bound (yet): no takeover queued either
        assert events.get(user_id) == ["created"], (user_id, events.get(user_id))
    return sum(1 for user_id in links if user_id not in users)


def test_an_import_killed_at_random_points_loses_no_event_and_finishes_on_rerun(
    app: Flask, graph_emulator: RunningEmulator, database_url: str
) -> None:
    matched = _seed(graph_emulator, app)
    env = {
        **os.environ,
        **graph_env(graph_emulator),
        "DATABASE_URL": database_url,
        "M365_SYNC_DOMAINS": "example.com",
    }
    args = [CLI, "m365", "import", "--bind", "--yes"]
    rng = random.Random()
    kills = 0
    for _round in range(3):
        with app.app_context():
            before = _bound_count()
        target = before + rng.randint(1, 60)
        child = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        killed = False
        deadline = time.monotonic() + 120
        try:
            with app.app_context():
                while child.poll() is None and time.monotonic() < deadline:
                    if _bound_count() >= target:
                        child.send_signal(signal.SIGKILL)  # at a random point of an apply
                        killed = True
                        break
                    time.sleep(0.005)
        finally:
            if child.poll() is None and not killed:
                child.kill()  # a hung import: the assertion below fails
            code = child.wait(timeout=60)
        assert code == (-signal.SIGKILL if killed else 0), code
        kills += killed
        assert _check_nothing_lost(app, matched) <= 1  # one process, one apply at a time

    assert kills >= 1  # else the rounds above tested nothing
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _check_nothing_lost(app, matched) == 0
    links, users, events = _state(app)
    assert len(links) == ACCOUNTS and len(users) == ACCOUNTS
    assert len(set(links.values())) == ACCOUNTS  # each account bound once, to one user
    assert sum(e.count("bound") for e in events.values()) == len(matched) == ACCOUNTS // 2
    again = subprocess.run(
        [*args[:-1], "--dry-run"], env=env, capture_output=True, text=True, timeout=300
    )
    assert f"0 to bind, 0 to create and bind, {ACCOUNTS} skipped." in again.stdout


def _events(app: Flask, user_id: str) -> list[tuple[str, dict[str, object]]]:
    with app.app_context(), begin(write=False) as conn:
        return [
            (e, p if isinstance(p, dict) else json.loads(p))
            for e, p in conn.execute(
                select(OutboxEvent.event, OutboxEvent.payload)
                .where(OutboxEvent.resource_id == user_id)
                .order_by(OutboxEvent.id)
            )
        ]


def _bind(
    app: Flask,
    user_id: str,
    object_id: str = "obj-1",
    state: str = "synced",
    password_state: str = "synced",
) -> None:
    with app.app_context(), begin(write=True) as conn:
        conn.execute(
            insert(M365Link).values(
                resource_type="User",
                resource_id=user_id,
                object_id=object_id,
                state=state,
                password_state=password_state,
                updated_at=utcnow(),
            )
        )


def test_a_sign_in_queues_no_check_for_an_account_unbound_meanwhile(
    app: Flask, scim: ScimClient, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = scim.user("signer@example.com", password="Portal-Pass-42!")
    _bind(app, user["id"])
    before = len(_events(app, user["id"]))
    seal = sealing.seal

    def unbind_meanwhile(instance_path: str, secret: str) -> str:
        # Between the sign-in's read of the link and its write: the worker releases it.
        with begin(write=True) as conn:
            conn.execute(
                update(M365Link).where(M365Link.resource_id == user["id"]).values(state="unbound")
            )
        return seal(instance_path, secret)

    monkeypatch.setattr(sealing, "seal", unbind_meanwhile)
    with app.test_request_context():
        outcome = accounts.sign_in("signer@example.com", "Portal-Pass-42!", "10.0.0.9")
    assert isinstance(outcome, accounts.SignedIn)
    assert not outcome.status.check_queued
    assert len(_events(app, user["id"])) == before  # no check for an account gone

    monkeypatch.setattr(sealing, "seal", seal)
    with app.app_context(), begin(write=True) as conn:
        conn.execute(
            update(M365Link).where(M365Link.resource_id == user["id"]).values(state="synced")
        )
    with app.test_request_context():
        outcome = accounts.sign_in("signer@example.com", "Portal-Pass-42!", "10.0.0.9")
    assert isinstance(outcome, accounts.SignedIn) and outcome.status.check_queued
    assert [e for e, p in _events(app, user["id"])[before:]] == ["password"]


def test_an_activation_spent_meanwhile_rolls_the_password_back_with_its_events(
    app: Flask, scim: ScimClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = scim.user("hire@example.com")
    token = "a-test-activation-token"
    with app.app_context(), begin(write=True) as conn:
        conn.execute(
            insert(ActivationToken).values(
                token_hash=hash_token(token),
                user_id=user["id"],
                created_at=utcnow(),
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
    before = _events(app, user["id"])
    seal = sealing.seal

    def spent_meanwhile(instance_path: str, secret: str) -> str:
        # After the link was checked, before the password is written: another tab used it.
        with begin(write=True) as conn:
            conn.execute(
                update(ActivationToken)
                .where(ActivationToken.user_id == user["id"])
                .values(spent_at=ActivationToken.expires_at)
            )
        return seal(instance_path, secret)

    monkeypatch.setattr(sealing, "seal", spent_meanwhile)
    with app.test_request_context(), pytest.raises(activation.LinkInvalid):
        activation.redeem(token, "Chosen-Pass-42!", "Chosen-Pass-42!")
    assert _events(app, user["id"]) == before  # neither password_set nor password queued
    with app.app_context(), begin(write=False) as conn:
        found = conn.execute(select(User.password_hash).where(User.id == user["id"])).scalar()
        assert found is None


def _orphan_link(app: Flask, user_id: str, object_id: str) -> None:
    """What a create killed between its link and its user leaves behind."""
    _bind(app, user_id, object_id, state="pending", password_state="none")


def test_an_import_resumes_a_create_interrupted_after_its_link(
    app: Flask, scim: ScimClient, tenant_env: RunningEmulator
) -> None:
    account = tenant_env.create_user(userPrincipalName="half@example.com", mailNickname="half")
    gone = tenant_env.create_user(userPrincipalName="gone@example.com", mailNickname="gone")
    _orphan_link(app, "00000000-0000-4000-8000-000000000001", account["id"])
    # A user deleted in the directory keeps its link until the worker takes the delete: that
    # one is not an interrupted create, and must not come back.
    deleted = scim.user("gone@example.com")
    _bind(app, deleted["id"], gone["id"])
    assert scim.delete(f"/Users/{deleted['id']}").status_code == 204

    done = app.test_cli_runner().invoke(args=["m365", "import", "--bind", "--yes"])
    assert done.exit_code == 0, done.output
    assert "create  half@example.com" in done.output
    assert f"skip    gone@example.com: already bound to directory user {deleted['id']}" in (
        done.output
    )
    resumed = scim.get("/Users/00000000-0000-4000-8000-000000000001").get_json()
    assert resumed["userName"] == "half@example.com"
    assert [e for e, _ in _events(app, resumed["id"])] == ["created"]
    assert scim.get(f"/Users/{deleted['id']}").status_code == 404


def test_a_bind_whose_event_fails_leaves_no_link(
    app: Flask, scim: ScimClient, tenant_env: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scim_server import outbox
    from scim_server.sync import takeover

    user = scim.user("adele@example.com")
    tenant_env.create_user(userPrincipalName="adele@example.com", mailNickname="adele")
    record = outbox.record

    def fails_after_the_link(*args: object, **kw: object) -> None:
        raise RuntimeError("the process dies here")

    monkeypatch.setattr(takeover.outbox, "record", fails_after_the_link)
    failed = app.test_cli_runner().invoke(args=["m365", "import", "--bind", "--yes"])
    assert isinstance(failed.exception, RuntimeError)
    with app.app_context(), begin(write=False) as conn:
        # Rolled back with it.
        assert conn.execute(select(M365Link.resource_id)).all() == []
    monkeypatch.setattr(takeover.outbox, "record", record)
    done = app.test_cli_runner().invoke(args=["m365", "import", "--bind", "--yes"])
    assert done.exit_code == 0, done.output
    assert [e for e, _ in _events(app, user["id"])] == ["created", "bound"]
