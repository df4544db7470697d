#!/usr/bin/env python3
"""Drift detection and repair against a tenant of --users users in the Graph emulator.

Printed, each with the Graph requests it made and its time:
1. the first round: a full read of users and groups (delta queries, no link yet);
2. a round with no changes: only the delta links' pages;
3. a round after an M365 admin changed 100 users (jobTitle) and 10 memberships (5 strangers
   added to managed groups, 5 members removed), then the sync worker delivering the repairs:
   every change found and repaired, with no more writes than changes plus a small constant;
4. a round after the repairs: nothing found (the sync's own writes are not drift).

    python benchmarks/drift.py [--users 10000] [--groups 50] [--read-rate 5]
        [--database URL]

The directory and the tenant are seeded in bulk, already in sync (directory rows and links
in the database; objects straight into the emulator's tenant), so the set-up costs seconds,
not the hours the write budget would take to create them through Graph. What is measured
goes through Graph as in production: the production Graph client over HTTPS (msal and
requests) to the emulator, which runs in a process of its own, as Graph is a server of its
own. Reads are paced at --read-rate requests per second (M365_DRIFT_READ_RATE's default: 5).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import insert

from models import Group, GroupMember, M365Link, User, utcnow
from scim_server import create_app
from scim_server import mapping as scim_mapping
from scim_server.db import begin, db
from scim_server.dbschema import upgrade
from scim_server.drift import state
from scim_server.drift.rounds import Drift
from scim_server.drift.settings import DriftSettings, Mode
from scim_server.graph.client import GraphClient, GraphSession, TokenProvider
from scim_server.graph.emulator.control import RequestLog
from scim_server.graph.emulator.server import EmulatorServer
from scim_server.graph.emulator.state import EmulatorOptions
from scim_server.graph.emulator.tenant import USER_DEFAULT, Obj
from scim_server.graph.settings import from_startup_line
from scim_server.sync import mapping
from scim_server.sync.pacer import Pacer
from scim_server.sync.settings import SyncSettings
from scim_server.sync.worker import Worker

WRITES = {"POST", "PATCH", "PUT", "DELETE"}
CHUNK = 2000
USER_CHANGES, MEMBER_CHANGES = 100, 10


def _iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _serve(options: EmulatorOptions, pipe: Any) -> None:
    """The emulator's process: seed the tenant as told, then serve until told to stop."""
    server = EmulatorServer(options, port=0, use_tls=True)
    server.emulator.log = RequestLog(limit=200_000)
    server.start()
    pipe.send(server.info)
    tenant = server.emulator.tenant
    with contextlib.suppress(EOFError):
        while True:
            message = pipe.recv()
            if message[0] == "users":
                with server.emulator.lock:
                    for object_id, props in message[1]:
                        full = {k: None for k in USER_DEFAULT}
                        full.update(businessPhones=[], userType="Member", **props)
                        full.update(
                            id=object_id,
                            createdDateTime=_iso(),
                            onPremisesSyncEnabled=None,
                            proxyAddresses=[],
                            signInSessionsValidFromDateTime=_iso(),
                            lastPasswordChangeDateTime=_iso(),
                        )
                        tenant.objects[object_id] = Obj(object_id, "user", full, time.time() - 3600)
                pipe.send(len(message[1]))
            elif message[0] == "groups":
                with server.emulator.lock:
                    for object_id, props, members in message[1]:
                        full = {
                            "description": None,
                            "groupTypes": [],
                            "visibility": None,
                            "mailEnabled": False,
                            "securityEnabled": True,
                            "mail": None,
                            "createdDateTime": _iso(),
                            "id": object_id,
                            **props,
                        }
                        group = Obj(object_id, "group", full, time.time() - 3600)
                        group.members = list(members)
                        tenant.objects[object_id] = group
                pipe.send(len(message[1]))
            else:
                break
    server.stop()


def _control(info: dict[str, Any], path: str) -> Any:
    url = f"{info['authority_host']}/_emulator/{path}"
    response = requests.get(url, verify=info.get("ca_bundle") or True, timeout=300)
    response.raise_for_status()
    return response.json()


def _seed(app: Any, pipe: Any, users: int, groups: int) -> dict[str, Any]:
    """A directory of `users` users in `groups` groups (each user in one), bound to their
    M365 objects and in sync with them. Returns the ids the changes need."""
    now = utcnow()
    user_ids = [str(uuid.uuid4()) for _ in range(users)]
    objects = {uid: str(uuid.uuid4()) for uid in user_ids}
    group_ids = [str(uuid.uuid4()) for _ in range(groups)]
    group_objects = {gid: str(uuid.uuid4()) for gid in group_ids}
    membership = {gid: user_ids[i::groups] for i, gid in enumerate(group_ids)}
    with app.app_context():
        for start in range(0, users, CHUNK):
            rows, links, m365 = [], [], []
            for i, uid in enumerate(user_ids[start : start + CHUNK], start):
                name = f"user{i:06}@example.com"
                row = {
                    "id": uid,
                    "user_name": name,
                    "user_name_ci": name,
                    "display_name": f"User {i}",
                    "name_given": "User",
                    "name_family": f"N{i}",
                    "title": "Engineer",
                    "department": f"D{i % 20}",
                    "active": True,
                    "created": now,
                    "last_modified": now,
                    "version": 1,
                }
                rows.append(row)
                doc = scim_mapping.user_to_doc(
                    User(**row), scim_mapping.UserExtras([], [], None), ""
                )
                props = mapping.user_properties(doc, None)
                links.append(
                    {
                        "resource_type": "User",
                        "resource_id": uid,
                        "object_id": objects[uid],
                        "state": "synced",
                        "synced": props,
                        "last_synced_at": now,
                        "password_state": "none",
                        "updated_at": now,
                    }
                )
                m365.append((objects[uid], {k: v for k, v in props.items() if v not in (None, [])}))
            db.session.execute(insert(User), rows)
            db.session.execute(insert(M365Link), links)
            db.session.commit()
            pipe.send(("users", m365))
            pipe.recv()
        group_rows, group_links, members, m365_groups = [], [], [], []
        for i, gid in enumerate(group_ids):
            name = f"Group {i:04}"
            wanted = {"displayName": name, "mailNickname": mapping.group_mail_nickname(name, gid)}
            group_rows.append(
                {
                    "id": gid,
                    "display_name": name,
                    "display_name_ci": name.lower(),
                    "created": now,
                    "last_modified": now,
                    "version": 1,
                }
            )
            group_links.append(
                {
                    "resource_type": "Group",
                    "resource_id": gid,
                    "object_id": group_objects[gid],
                    "state": "synced",
                    "synced": wanted,
                    "last_synced_at": now,
                    "updated_at": now,
                }
            )
            members += [
                {"group_id": gid, "member_id": uid, "member_type": "User"}
                for uid in membership[gid]
            ]
            m365_groups.append((group_objects[gid], wanted, [objects[u] for u in membership[gid]]))
        db.session.execute(insert(Group), group_rows)
        db.session.execute(insert(M365Link), group_links)
        for start in range(0, len(members), CHUNK):
            db.session.execute(insert(GroupMember), members[start : start + CHUNK])
        db.session.commit()
        pipe.send(("groups", m365_groups))
        pipe.recv()
    return {
        "users": [objects[u] for u in user_ids],
        "groups": [group_objects[g] for g in group_ids],
        "membership": {group_objects[g]: [objects[u] for u in membership[g]] for g in group_ids},
    }


def _writes(info: dict[str, Any], since: int) -> tuple[int, int, list[dict[str, Any]]]:
    entries = _control(info, "requests")["value"]
    log = [r for r in entries[since:] if r["path"].startswith("/v1.0")]
    # Operations: a $batch's parts are logged one by one, beside the $batch itself.
    writes = [
        r
        for r in log
        if r["method"] in WRITES and r["status"] < 400 and r["path"] != "/v1.0/$batch"
    ]
    return len(entries), len(writes), log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000, help="tenant size (default 10000)")
    parser.add_argument("--groups", type=int, default=50, help="managed groups (default 50)")
    parser.add_argument(
        "--read-rate", type=float, default=5.0, help="delta requests per second (default 5)"
    )
    parser.add_argument("--database", help="a throwaway database URL (default: temporary SQLite)")
    args = parser.parse_args()

    options = EmulatorOptions(domains=["example.com"], control=True)
    parent, child = multiprocessing.get_context("spawn").Pipe()
    emulator = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(options, child), daemon=True
    )
    emulator.start()
    info = parent.recv()
    settings = from_startup_line(info)
    work = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    database = args.database or f"sqlite:///{work / 'directory.sqlite3'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": database})
    with app.app_context():
        upgrade()
        engine = db.engine
    started = time.monotonic()
    seeded = _seed(app, parent, args.users, args.groups)
    print(
        f"seeded           {args.users} users in {args.groups} groups, in sync, "
        f"in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    tokens = TokenProvider(settings, GraphSession(settings.verify, settings.timeout))
    drift = Drift(
        engine,
        GraphClient(settings, tokens=tokens),
        "bench",
        DriftSettings(mode=Mode.REPAIR, read_rate=args.read_rate),
        domains=("example.com",),
    )

    def measured(label: str) -> Any:
        result = drift.run_if_due(force=True)
        assert result is not None
        found = result.found()
        print(
            f"{label:<16} {result.graph_requests} Graph requests, {result.seconds:.1f} s "
            f"({result.users_read} users, {result.groups_read} groups read; found "
            f"{sum(found.values())}: {found or 'nothing'})",
            flush=True,
        )
        return result

    first = measured("first round")
    assert not first.findings, first.findings[:5]
    measured("no changes")

    # An M365 admin at work, through Graph.
    admin = GraphClient(settings, tokens=tokens)
    rng = random.Random(15)
    for object_id in rng.sample(seeded["users"], USER_CHANGES):
        admin.update_user(object_id, {"jobTitle": "Changed in M365"})
    strangers = [
        admin.create_user(
            {
                "accountEnabled": True,
                "displayName": f"Stranger {i}",
                "mailNickname": f"stranger{i}",
                "userPrincipalName": f"stranger{i}@example.com",
                "passwordProfile": {
                    "password": "Str4nger-Pass!",
                    "forceChangePasswordNextSignIn": True,
                },
            }
        )["id"]
        for i in range(MEMBER_CHANGES // 2)
    ]
    groups = rng.sample(seeded["groups"], MEMBER_CHANGES)
    for group, stranger in zip(groups[: MEMBER_CHANGES // 2], strangers, strict=True):
        admin.add_member(group, stranger)
    for group in groups[MEMBER_CHANGES // 2 :]:
        admin.remove_member(group, seeded["membership"][group][0])
    log_start, _, _ = _writes(info, 0)

    changed = measured("after changes")
    sync = SyncSettings(sync_domains=("example.com",))
    worker = Worker(
        app, GraphClient(settings, tokens=tokens), sync, sync.sync_domains, pacer=Pacer(1000)
    )
    began = time.monotonic()
    assert worker.drain(timeout=600)
    _, writes, log = _writes(info, log_start)
    reads = sum(1 for r in log if r["method"] == "GET")
    http = sum(1 for r in log if not r.get("batch_request_id"))
    with begin(write=False, engine=engine) as conn:
        counts = state.counts(conn)
    repaired = sum(counts["repaired"].values())
    changes = USER_CHANGES + MEMBER_CHANGES
    print(
        f"repairs          {repaired} of {len(changed.findings)} found delivered in "
        f"{time.monotonic() - began:.1f} s: {writes} Graph writes for {changes} changes "
        f"(+{writes - changes}), {reads} reads, in {http} HTTP requests ($batch)",
        flush=True,
    )
    after = measured("after repairs")
    tenant = _control(info, "state")
    titles = {o["id"]: o["props"].get("jobTitle") for o in tenant["objects"] if o["kind"] == "user"}
    members = {o["id"]: set(o["members"]) for o in tenant["objects"] if o["kind"] == "group"}
    wrong_titles = sum(1 for oid in seeded["users"] if titles.get(oid) != "Engineer")
    wrong_groups = sum(1 for g in seeded["groups"] if members[g] != set(seeded["membership"][g]))
    print(f"tenant           {wrong_titles} users and {wrong_groups} groups still differ")
    parent.send(("stop",))
    emulator.join(30)
    ok = (
        len(changed.findings) == changes
        and repaired == changes
        and writes <= changes + 10
        and not after.findings
        and not wrong_titles
        and not wrong_groups
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
