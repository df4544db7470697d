"""The OAuth token endpoint, Basic credentials and the brake over a real `scim-server serve`
with two HTTP worker processes (the count of failures is in the database, shared by both)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tests.serving import CLI, serve


def _cli(env: dict[str, str], *args: str) -> list[str]:
    done = subprocess.run([CLI, *args], env=env, check=True, capture_output=True, text=True)
    return done.stdout.splitlines()


def test_schemes_and_the_brake_over_a_served_process(tmp_path: Path) -> None:
    env = {
        "SCIM_AUTH_ADDRESS_FAILURES": "4",
        "SCIM_OAUTH_TOKEN_LIFETIME_SECONDS": "600",
        # A process that did not see the lock would trust its cached token for these seconds.
        "SCIM_TOKEN_CACHE_SECONDS": "0",
    }
    with serve(tmp_path, "--no-sync", "--workers", "2", env=env) as running:
        base = f"http://127.0.0.1:{running.port}"
        id_line, client_secret = _cli(running.env, "client", "create", "gallery")[-2:]
        client_id = id_line.removeprefix("client id: ")
        user_line, password = _cli(running.env, "token", "create", "okta", "--basic")[-2:]
        assert user_line == "user name: okta"

        issued = requests.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, client_secret),
            timeout=10,
        )
        assert issued.status_code == 200, issued.text
        assert issued.headers["Cache-Control"] == "no-store"
        assert issued.json()["expires_in"] == 600
        access = issued.json()["access_token"]
        bearer = {"Authorization": f"Bearer {access}"}
        assert requests.get(f"{base}/scim/v2/Users", headers=bearer, timeout=10).status_code == 200
        basic = requests.get(f"{base}/scim/v2/Users", auth=("okta", password), timeout=10)
        assert basic.status_code == 200

        # Each request on a new connection, so both worker processes take some.
        statuses = [
            requests.get(
                f"{base}/scim/v2/Users", headers={"Authorization": "Bearer scim_guess"}, timeout=10
            ).status_code
            for _ in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        for _ in range(4):  # in every process now, even with a right token
            locked = requests.get(f"{base}/scim/v2/Users", headers=bearer, timeout=10)
            assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
        wrong_client = requests.post(
            f"{base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, client_secret),
            timeout=10,
        )
        assert wrong_client.status_code == 429

        output = running.output()
        for secret in (client_secret, password, access):
            assert secret not in output
        assert " - okta " in output and " - gallery " in output
