"""`scim-server m365 import` at scale (issue 6): 2,000 accounts in mixed case, matched,
created or skipped correctly, with a progress bar when stderr is a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flask import Flask
from sqlalchemy import func
from sqlalchemy import select as sql_select

from models import M365Link, User
from scim_server import directory
from scim_server.db import db
from tests.graph_emulator import RunningEmulator, graph_env

CLI = str(Path(sys.executable).parent / "scim-server")
ACCOUNTS = 2000


def _kind(i: int) -> str:
    """What account i is, and so what the import must do with it."""
    return {
        0: "disabled",
        1: "guest",
        2: "elsewhere",  # contoso.com: out of scope
        3: "match-upn",
        4: "match-upn",
        5: "match-email",
    }.get(i % 10, "new")


def _account(i: int) -> dict[str, object]:
    kind = _kind(i)
    nickname = f"user{i:04d}"
    domain = "contoso.com" if kind == "elsewhere" else "example.com"
    # Mixed case in M365, other cases in the directory: matching ignores case.
    upn = f"User{i:04d}@Example.com" if i % 2 else f"user{i:04d}@EXAMPLE.COM"
    upn = upn if domain == "example.com" else f"user{i:04d}@contoso.com"
    props: dict[str, object] = {
        "userPrincipalName": upn,
        "mailNickname": nickname,
        "givenName": f"Given{i}",
        "surname": f"Sur{i}",
        "mail": f"{nickname}.mail@example.com",
    }
    if kind == "disabled":
        props["accountEnabled"] = False
    if kind == "guest":
        props["userType"] = "Guest"
    return props


def _seed(emulator: RunningEmulator, app: Flask) -> dict[int, str]:
    """The tenant's accounts, and the directory users some of them match: id by index."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: emulator.create_user(**_account(i)), range(ACCOUNTS)))
    matched: dict[int, str] = {}
    with app.app_context():
        for i in range(ACCOUNTS):
            if _kind(i) == "match-upn":
                body = {"userName": f"USER{i:04d}@example.COM"}
            elif _kind(i) == "match-email":
                body = {
                    "userName": f"someone{i}",
                    "emails": [{"value": f"User{i:04d}.MAIL@example.com", "primary": True}],
                }
            else:
                continue
            matched[i] = directory.create_user(body, "")[0]["id"]
        db.session.remove()
    return matched


def _run_on_a_tty(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; returns (code, output)."""
    leader, follower = pty.openpty()
    child = subprocess.Popen(
        args, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif child.poll() is not None:
            break
    os.close(leader)
    return child.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_importing_2000_accounts_matches_creates_and_skips_with_a_progress_bar(
    app: Flask, graph_emulator: RunningEmulator, database_url: str
) -> None:
    matched = _seed(graph_emulator, app)
    env = {
        **os.environ,
        **graph_env(graph_emulator),
        "DATABASE_URL": database_url,
        "M365_SYNC_DOMAINS": "example.com",
        "COLUMNS": "100",
    }
    expected = {
        "bind": sum(1 for i in range(ACCOUNTS) if _kind(i).startswith("match")),
        "create": sum(1 for i in range(ACCOUNTS) if _kind(i) == "new"),
        "skip": sum(1 for i in range(ACCOUNTS) if _kind(i) in ("disabled", "guest", "elsewhere")),
    }
    assert expected == {"bind": 600, "create": 800, "skip": 600}

    # Not a terminal (a pipe): the plan, without a progress bar.
    dry = subprocess.run(
        [CLI, "m365", "import", "--bind", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr
    assert "600 to bind, 800 to create and bind, 600 skipped." in dry.stdout
    assert "%" not in dry.stderr
    lines = dry.stdout.splitlines()
    assert sum(1 for line in lines if "disabled in Microsoft 365" in line) == 200
    assert sum(1 for line in lines if "a guest account" in line) == 200
    assert sum(1 for line in lines if "out of scope" in line) == 200

    code, output = _run_on_a_tty([CLI, "m365", "import", "--bind", "--yes"], env)
    assert code == 0, output[-2000:]
    # click's bar: the label, a run of '#' and the percentage, redrawn as it goes.
    assert re.search(r"Reading the tenant's accounts\s+\[#+-*\]\s+\d+%", output), output[:2000]
    assert re.search(r"Importing\s+\[#{10,}\]\s+100%", output), output[-3000:]
    assert "600 to bind, 800 to create and bind, 600 skipped." in output

    with app.app_context():
        links = dict(
            db.session.execute(
                sql_select(M365Link.resource_id, M365Link.object_id).where(
                    M365Link.object_id.is_not(None)
                )
            ).all()
        )
        users = db.session.scalar(sql_select(func.count()).select_from(User))
        db.session.remove()
    assert len(links) == 1400 and users == 1400
    accounts = {
        o["id"]: o["props"]["userPrincipalName"].lower()
        for o in graph_emulator.state()["objects"]
        if o["kind"] == "user"
    }
    for i, user_id in matched.items():  # each directory user bound to its own account
        assert accounts[links[user_id]] == f"user{i:04d}@example.com"
    assert len(set(links.values())) == 1400  # one account per user, none twice
